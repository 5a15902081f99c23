"""Where a speaker pauses inside a turn: split a question's text into what comes before a pause and after it.

People stop mid-turn: after a function word ("set a timer for ..."), at a colon ("repeat after me:
..."), on a filler ("um", "uh", "let me see"), between the parts of a number ("twenty ... three"),
between the items of a list or a count. An end-of-turn model has to hear that such a stop is not the
end. `pause_points` gives every such place in a sentence as `PausedText(prefix, rest, kind)`;
`choose_pause` picks one, seeded, and says how the prefix is written for the synthesizer (a
trailing comma asks it for the rising "more is coming" tune).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# A sentence is rarely over after one of these.
FUNCTION_WORDS = frozenset("""
a an the of to for from by with in on at into about than and or but if plus minus times is are was
what what's which how how's who where when why can could would will do does did me my your please
tell give say spell count repeat multiplied divided subtract add sum up many much there this that
""".split())
FILLERS = ("um", "uh", "erm", "hmm", "let me see", "let me think", "you know", "like")
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


@dataclass(frozen=True)
class PausedText:
    prefix: str       # said before the pause
    rest: str         # said after it (the turn is complete only with it)
    kind: str         # function | colon | filler | number | list | word


def number_words(n: int) -> list[str]:
    """0..999 spelled as words, e.g. 123 -> ['one', 'hundred', 'twenty', 'three']."""
    if not 0 <= n <= 999:
        raise ValueError(f"{n} is outside 0..999")
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return words
        words.append("and")
    if n < 20:
        return words + [_ONES[n]] if (n or not words) else words
    words.append(_TENS[n // 10])
    if n % 10:
        words.append(_ONES[n % 10])
    return words


def _bare(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def pause_points(text: str) -> list[PausedText]:
    """Every place in `text` where a speaker might pause although the turn goes on."""
    words = text.split()
    points: list[PausedText] = []
    for i in range(1, len(words)):
        prefix, rest = " ".join(words[:i]), " ".join(words[i:])
        last = words[i - 1]
        if last.endswith(":"):
            points.append(PausedText(prefix.rstrip(":"), rest, "colon"))
        elif last.endswith(","):
            points.append(PausedText(prefix.rstrip(","), rest, "list"))
        elif _bare(last) in FUNCTION_WORDS:
            points.append(PausedText(prefix, rest, "function"))
        else:
            points.append(PausedText(prefix, rest, "word"))
    for i, word in enumerate(words):
        bare = _bare(word)
        if bare.isdigit() and 20 < int(bare) <= 999:
            spoken = number_words(int(bare))
            if len(spoken) < 2:
                continue
            tail = word[len(word.rstrip(".,?!:;")):]   # keep the sentence's punctuation on the rest
            prefix = " ".join(words[:i] + spoken[:1 if len(spoken) == 2 else 2])
            rest_words = spoken[1 if len(spoken) == 2 else 2:]
            rest = " ".join(rest_words) + tail
            rest = " ".join([rest] + words[i + 1:])
            points.append(PausedText(prefix, rest, "number"))
    return points


def choose_pause(text: str, rng: random.Random) -> tuple[PausedText, str] | None:
    """One pause for `text` and the prefix as written for the synthesizer; None for one-word turns.

    Kinds are drawn evenly among those the sentence offers, so that the rare ones (colon, number,
    list) are not drowned; a filler is added to a fifth of the cuts and is then the kind.
    """
    points = pause_points(text)
    if not points:
        return None
    # People hesitate after a function word, at a colon, between list items or the parts of a
    # number; a cut after any other word often leaves a sentence that is complete ("Please count
    # from 10 | up to 13"), so such a cut is only used with a filler, which says "not done yet".
    kinds = sorted({p.kind for p in points} - {"word"})
    has_word = any(p.kind == "word" for p in points)
    filler = not kinds or rng.random() < 0.2
    kind = "word" if has_word and (not kinds or (filler and rng.random() < 0.5)) else rng.choice(kinds)
    point = rng.choice([p for p in points if p.kind == kind])
    written = point.prefix.rstrip(".,?!;:")
    if filler or kind == "word":
        point = PausedText(point.prefix, point.rest, "filler")
        written = f"{written}, {rng.choice(FILLERS)}"
    # A trailing comma gives the rising tune of an unfinished phrase; without it the synthesizer
    # says the prefix like a whole sentence, which people do too.
    if rng.random() < 0.6:
        written += ","
    return point, written


def opening_filler(rng: random.Random) -> str:
    """A turn that starts with a hesitation ("Um," "So, uh,") before any words."""
    return rng.choice(["Um,", "Uh,", "So,", "So, um,", "Well,", "Okay, so,", "Hmm,", "Let me see,"])
