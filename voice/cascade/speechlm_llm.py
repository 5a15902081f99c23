"""`llm_backend=speechlm`: the speech LM's text mode (task t2t) as the cascade's LLM, the "same brain".

The e2e pipeline answers speech with the speech LM; this backend asks the same model the same
questions as text, between the cascade's ASR and TTS, so a bench can tell what the architecture
costs or gains from what the model knows. The prompt is the t2t layout of `voice.speechlm.format`:

    <|context|> Today is Sunday, May 3, 2026. The time is 4:33 PM.
    <|user_text|> ... <|assistant_text|> ... <|end_of_text|> <|user_text|> ... <|assistant_text|>

then greedy text until `<|end_of_text|>`. The model knows no system instructions (it was trained
with the context sentence alone), so the cascade's `instructions` option does not reach it.

Each generation opens a fresh generator session, prefills the dialogue the cascade's
`Conversation` hands over (only what was spoken), writes the answer and closes the session. When
the dialogue and a full-length answer would not fit in the model's context, the oldest exchanges
are left out (a fresh context with the latest turns); a single user turn too long for it keeps its
last words. One generator per model folder serves every session of a server, one answer at a time.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from voice.cascade.conversation import clock_text
from voice.cascade.llm import Generation, LlmBackend, set_torch_threads
from voice.pipelines import ModelCache

log = logging.getLogger(__name__)

SERVER_MODEL = "speechlm"     # the `llm` value naming the server's speech LM (the e2e pipeline's)
Block = tuple[str, list[int]]  # (marker, the model's text ids)


def speechlm_location(ref: str) -> tuple[Path, str]:
    """The folder of a speech LM reference and how to name it in messages.

    "speechlm" is the e2e pipeline's model: VOICE_SPEECHLM, else models/speechlm of the checkout."""
    if ref == SERVER_MODEL:
        from voice.e2e.e2e_pipeline import speechlm_folder

        return speechlm_folder()
    return Path(ref).expanduser(), ref


def load_speech_lm(folder: Path, shown: str):
    """(model, text ids) of a saved speech LM in float32; ValueError naming `shown` when there is none or it is broken."""
    import torch

    from voice.speechlm.cli import load_speech_lm as load

    if (folder / "config.json").is_file():
        set_torch_threads(torch)        # as the transformers backend does (docs/cascade.md, "Same brain")
    start_s = time.monotonic()
    loaded = load(folder, shown)
    log.info("loaded speech LM %s for the cascade in %.1f s", shown, time.monotonic() - start_s)
    return loaded


def make_speechlm_llm(ref: str, models: ModelCache) -> "SpeechLmLlm":
    """The backend for the speech LM `ref`, one per model folder in `models`."""
    folder, shown = speechlm_location(ref)
    return models.get(f"llm:speechlm:{folder.resolve()}", lambda: SpeechLmLlm(*load_speech_lm(folder, shown)))


class SpeechLmLlm(LlmBackend):
    """A speech LM answering in text (t2t), greedy; the whole answer is handed over when it is written.

    `SpeechGenerator.generate_text` has no per-token hook, so the text arrives in one piece and a
    cancel takes effect when the answer is written (at most `max_new_tokens` steps: tens of ms for
    the CPU-sized models). Sessions take turns on the one generator (a lock).
    """

    name = "speechlm"

    def __init__(self, model, text_ids) -> None:
        from voice.speechlm.generate import SpeechGenerator

        self.generator = SpeechGenerator(model, max_sessions=1, tokenize=getattr(text_ids, "encode", None),
                                         think=False)     # it answers in text already: no second slot
        self.text = text_ids
        self.max_len = self.generator.decoder.max_len
        self._end = [self.generator.vocab.special("end_of_text")]
        self._lock = threading.Lock()
        self.active = 0

    def system_message(self, now: dt.datetime, instructions: str) -> str:
        return clock_text(now)      # the context sentence the model was trained with; no instructions

    @staticmethod
    def steps(blocks: list[Block]) -> int:
        """Context steps the blocks take: a marker and the ids of each."""
        return sum(1 + len(ids) for _, ids in blocks)

    def blocks(self, messages: list[dict[str, str]], max_new_tokens: int) -> list[Block]:
        """The t2t prompt of chat `messages`: the context sentence, then the latest turns that leave room
        for the answer's marker and `max_new_tokens` words (starting with a user turn)."""
        system = [m["content"] for m in messages if m["role"] == "system"]
        context: Block = ("context", self.text.encode(system[0] if system else ""))
        turns: list[Block] = [("user_text", self.text.encode(m["content"])) if m["role"] == "user"
                              else ("assistant_text", self.text.encode(m["content"]) + self._end)
                              for m in messages if m["role"] in ("user", "assistant")]
        room = self.max_len - self.steps([context]) - 1 - max_new_tokens
        kept: list[Block] = []
        for block in reversed(turns):
            if self.steps([block, *kept]) > room:
                break
            kept.insert(0, block)
        while kept and kept[0][0] != "user_text":
            kept.pop(0)
        if not kept and turns and turns[-1][0] == "user_text" and room > 1:
            kept = [("user_text", turns[-1][1][-(room - 1):])]     # one turn too long: its last words
        if len(kept) < len(turns):
            log.debug("speech LM context: %d of %d turns kept", len(kept), len(turns))
        return [context, *kept]

    def generate(self, messages, max_new_tokens, on_text: Callable[[str], None], cancel) -> Generation:
        start_s = time.monotonic()
        ids: list[int] = []
        with self._lock:
            self.active += 1
            try:
                if not cancel.is_set():
                    ids = self._answer(self.blocks(messages, max_new_tokens), max_new_tokens)
            finally:
                self.active -= 1
        text = "" if cancel.is_set() else self.text.decode(ids)
        if text:
            on_text(text)
        return Generation(text, len(ids), time.monotonic() - start_s, cancel.is_set())

    def _answer(self, blocks: list[Block], max_new_tokens: int) -> list[int]:
        """Prefill the blocks in a fresh session, then the text answer's ids."""
        max_tokens = min(max_new_tokens, self.max_len - self.steps(blocks) - 1)
        if max_tokens <= 0:
            return []
        gen = self.generator
        session = gen.open()
        try:
            for marker, ids in blocks:
                gen.feed_text(session, marker, ids)
            return gen.generate_text(session, "assistant_text", max_tokens)
        finally:
            gen.close(session)
