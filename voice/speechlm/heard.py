"""Heard text: the hearing encoder's own spelling of the user's words, written into the text stream as it hears them.

A speech LM that reads the user's audio (codes, ear rows, encoder features) learns its training
sentences and answers the nearest one, whatever it hears (docs/speechlm.md, "The ear encoder"). With
`SpeechLMConfig.heard_text` the LM also *reads* what its frozen hearing encoder spells (greedy CTC),
word by word, in the text stream of the user's block: the same text embeddings its typed questions
use, so what the brain learns from text reaches the spoken questions (a chain of modalities, as
SpeechGPT writes the transcript before it answers; here it costs no step after the turn but the last
word's). The spelling is a function of the audio alone, computed causally as frames arrive:

- `Speller` (`voice.speechlm.hearing`, the CTC head's own greedy decoding, frame by frame): the encoder's
  per-frame labels -> words, each at the frame where it is complete (the CTC emits the space after it; the
  turn's last word at the turn's end);
- `HeardQueue`: words -> the text-stream id of each user frame step (one id per step, first come first
  written, pads when nothing is waiting) and the ids still waiting when the turn ends (the block's tail
  steps, text only).

Training lays the block out with the same two classes (`voice.speechlm.format`) as the generator does
live (`voice.speechlm.generate`), so both write the same steps; `spoil` adds spelling mistakes to the
training turns, whose voices the encoder hears better than it hears new ones.
"""

from __future__ import annotations

import numpy as np
import torch

from voice.speechlm.hearing import Speller


class HeardQueue:
    """Words -> one text-stream id per user frame step, in the order they were heard.

    `frame(words)`: the id of the next frame step, after queueing the words completed at that frame (a
    word is tokenized with a space before it but the turn's first); `pad` when nothing waits. `tail()`:
    the ids still waiting at the turn's end (after the last word is queued)."""

    def __init__(self, tokenize, pad: int) -> None:
        self.tokenize, self.pad = tokenize, pad
        self._waiting: list[int] = []
        self._words = 0

    def add(self, words: list[str]) -> None:
        for word in words:
            self._waiting += self.tokenize(word if self._words == 0 else " " + word)
            self._words += 1

    def frame(self, words: list[str] = ()) -> int:
        self.add(list(words))
        return self._waiting.pop(0) if self._waiting else self.pad

    def frames(self, words: list[tuple[int, str]], first: int, n: int) -> list[int]:
        """The ids of frame steps first .. first + n - 1, given the words [(frame, word)] complete among them."""
        at: dict[int, list[str]] = {}
        for frame, word in words:
            at.setdefault(int(frame), []).append(word)
        return [self.frame(at.get(f, [])) for f in range(first, first + n)]

    def tail(self, words: list[str] = ()) -> list[int]:
        self.add(list(words))
        out, self._waiting = self._waiting, []
        return out


def heard_steps(heard: list[tuple[int, str]], frames: int, tokenize, pad: int) -> tuple[list[int], list[int]]:
    """A whole turn's words [(frame, word)] (frame == `frames` for the last word) -> (the id at each of the
    `frames` frame steps, the tail ids after them): what the generator writes when the frames come live."""
    queue = HeardQueue(tokenize, pad)
    ids = queue.frames([(f, w) for f, w in heard if f < frames], 0, frames)
    return ids, queue.tail([w for f, w in heard if f >= frames])


def spell_turn(encoder, inputs) -> list[tuple[int, str]]:
    """A whole user turn through a frozen hearing encoder: codes [K, T] (or, for an ear encoder, rows [T, D])
    -> its words [(frame, word)], as `Speller` makes them frame by frame."""
    with torch.no_grad():
        if encoder.config.reads_features:
            x = torch.as_tensor(np.asarray(inputs, np.float32)).T[None]
        else:
            x = torch.as_tensor(np.asarray(inputs)[: encoder.config.num_codebooks], dtype=torch.long)[None]
        labels = encoder.ctc_logits(encoder(x))[0].argmax(-1).tolist()
    speller = Speller()
    return speller.push(labels) + speller.finish()


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def spoil(heard: list[tuple[int, str]], rate: float, rng: np.random.Generator) -> list[tuple[int, str]]:
    """Spelling mistakes at about `rate` per character (a third each deleted, replaced, followed by a random
    letter); a word whose letters are all deleted vanishes; the frames stay."""
    if rate <= 0:
        return list(heard)
    out = []
    for frame, word in heard:
        chars = []
        for c in word:
            r = rng.random()
            if r < rate / 3:
                continue
            if r < 2 * rate / 3:
                c = LETTERS[int(rng.integers(len(LETTERS)))]
            chars.append(c)
            if 2 * rate / 3 <= r < rate:
                chars.append(LETTERS[int(rng.integers(len(LETTERS)))])
        if chars:
            out.append((frame, "".join(chars)))
    return out


def spoil_and_snap(heard: list[tuple[int, str]], rate: float, rng: np.random.Generator,
                   snap=None) -> list[tuple[int, str]]:
    """`spoil`, then each word through `snap` (a `voice.speechlm.lexicon.WordSnapper`, by spelling), as the generator
    snaps what it hears: a model trained on it reads wrong but real words, as it does on a new voice, instead of the
    misspellings the generator never lets through."""
    spoiled = spoil(heard, rate, rng)
    return [(frame, snap(word)) for frame, word in spoiled] if snap is not None else spoiled


def attach_heard(dialogues, encoder, progress: bool = True) -> None:
    """Every user speech turn of `dialogues` (`voice.speechlm.data.Dialogue`) gets its encoder's words
    (`Turn.heard`), from its ear rows (an ear encoder, rows fitted to the frames as the LM reads them) or codes."""
    from tqdm import tqdm

    from voice.speechlm.whisper_ear import fit_frames

    turns = [t for d in dialogues for t in d.turns if t.role == "user" and t.codes is not None]
    for turn in tqdm(turns, desc="heard text", unit="turn", disable=not progress, mininterval=2):
        if encoder.config.reads_features:
            if turn.ear is None:
                raise ValueError("an ear encoder spells from the Whisper ear's rows: load the dialogues with the ear")
            turn.heard = spell_turn(encoder, fit_frames(np.asarray(turn.ear), turn.codes.shape[1]))
        else:
            turn.heard = spell_turn(encoder, turn.codes)
