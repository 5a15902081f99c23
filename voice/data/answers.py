"""Answer checking and text normalisation: numbers, times and letters compared as spoken words."""

from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SYMBOLS = {"+": " plus ", "×": " times ", "*": " times ", "=": " equals ", "%": " percent ", "&": " and "}
_POLITE_UNKNOWN = ("don't know", "do not know", "not sure", "no idea", "can't answer", "cannot answer",
                   "can't help", "cannot help", "don't have", "outside", "not able")
_SMALLTALK_WORDS = {
    "greeting": ("hello", "hi", "hey", "help", "morning", "welcome"),
    "how_are_you": ("well", "good", "great", "fine", "thank", "thanks"),
    "thanks": ("welcome", "pleasure", "happy", "glad", "problem"),
    "name": ("assistant", "voice", "name", "i'm", "i am"),
    "goodbye": ("bye", "goodbye", "see you", "soon", "care", "nice day"),
    "abilities": ("can", "help", "math", "time", "spell"),
}


def number_to_words(n: int) -> str:
    """Spoken English for 0 <= n < 1,000,000 ("twenty one"); other integers fall back to their digits."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_to_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_to_words(rest))
    return str(n)


def _year_words(n: int) -> str:
    if 2000 <= n <= 2009:
        return number_to_words(n)
    return number_to_words(n // 100) + " " + ("hundred" if n % 100 == 0 else
                                              ("oh " if n % 100 < 10 else "") + number_to_words(n % 100))


def _time_words(match: re.Match) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    tail = "" if minute == 0 else (" oh " + _ONES[minute] if minute < 10 else " " + number_to_words(minute))
    return f" {number_to_words(hour)}{tail} "


def normalize_text(text: str) -> str:
    """Lower-case words with digits, times and symbols spelled out, punctuation removed (for WER and answers)."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", _time_words, text)
    text = re.sub(r"\b([ap])\.?\s?m\b\.?", r"\1m", text)
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text)
    text = re.sub(r"(\d)\s*-\s*(\d)", r"\1 minus \2", text)  # a hyphen elsewhere joins words: a space
    text = re.sub(r"\b(1[89]\d\d|20\d\d)\b", lambda m: " " + _year_words(int(m.group(1))) + " ", text)
    text = re.sub(r"\d+", lambda m: " " + number_to_words(int(m.group(0))) + " ", text)
    text = text.replace("o'clock", " ")
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = text.replace("'", "")
    return " ".join(text.split())


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def _letters(text: str) -> str:
    """Letters spoken one at a time ("c, a, t" or "C-A-T") joined into a word; longest such run."""
    runs = re.findall(r"(?:\b[a-z]\b[\s,.\-]*){2,}", text.lower())
    return max(("".join(re.findall(r"[a-z]", run)) for run in runs), key=len, default="")


def _time_matches(expected: list[str], words: list[str]) -> bool:
    """Hour and minutes must be said; am/pm may be left out but must not be wrong."""
    clock = [w for w in expected if w not in ("am", "pm")]
    if not _contains(words, clock):
        return False
    meridiem = [w for w in expected if w in ("am", "pm")]
    said = [w for w in words if w in ("am", "pm")]
    return not said or said == meridiem


def check_answer(intent: str, expected: str, answer_text: str) -> bool:
    """Whether `answer_text` (an assistant answer, text or ASR transcript) gives the `expected` answer."""
    answer = normalize_text(answer_text)
    words = answer.split()
    if intent in ("spell", "followup_spell"):
        return _letters(answer_text) == re.sub(r"[^a-z]", "", expected.lower())
    if intent == "unknown":
        return any(p.replace("'", "") in answer for p in _POLITE_UNKNOWN)
    if intent == "smalltalk":
        cues = _SMALLTALK_WORDS.get(expected, ())
        return any(_contains(words, normalize_text(c).split()) for c in cues)
    if intent == "followup_repeat" and _letters(answer_text) == re.sub(r"[^a-z]", "", expected.lower()):
        return True  # repeating a spelled word
    if intent == "time":
        return _time_matches(normalize_text(expected).split(), words)
    if intent == "calendar" and expected in ("yes", "no"):
        negative = any(w in words for w in ("no", "not", "weekday", "isnt"))
        return negative == (expected == "no")
    return _contains(words, normalize_text(expected).split())
