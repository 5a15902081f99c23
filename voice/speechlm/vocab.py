"""The speech LM's one vocabulary: text ids (SmolLM2's tokenizer), special tokens, one id block per codebook."""

from __future__ import annotations

from dataclasses import dataclass

# Special tokens, in id order after the text vocabulary. Turn and modality boundaries, task markers,
# end of text, and the pad of the text stream (a step where the text stream says nothing).
SPECIALS = (
    "<|pad|>",            # text stream: nothing at this step
    "<|context|>",        # the context sentence (date and time) follows, as text
    "<|user_speech|>",    # the user's turn follows as audio frames
    "<|user_text|>",      # the user's turn follows as text
    "<|assistant_speech|>",  # the assistant answers in speech, its words a few steps ahead (text stream)
    "<|assistant_text|>",    # the assistant answers in text only
    "<|transcribe|>",     # task speech -> text: the transcript of the audio before follows
    "<|speak|>",          # task text -> speech: the text before is to be spoken
    "<|end_of_text|>",    # the text stream of a turn is complete
    "<|end_of_turn|>",    # the turn is over (after the last audio frame, or after the text)
)


@dataclass(frozen=True)
class Vocab:
    """Id layout: [0, text_size) text | specials | codebook 0 entries | codebook 1 entries | ...

    Audio ids are only used where a sequence is written out flat (documentation, round trips,
    AnyGPT-style storage); the model reads audio through one input per codebook, so inside the
    model a code is its index within its codebook, and `AUDIO_NONE` (= codebook_size) marks a step
    without a code for that codebook (before an answer's audio starts, after it ends, text steps).
    """

    text_size: int
    num_codebooks: int
    codebook_size: int

    @property
    def special_base(self) -> int:
        return self.text_size

    @property
    def audio_base(self) -> int:
        return self.text_size + len(SPECIALS)

    @property
    def size(self) -> int:
        return self.audio_base + self.num_codebooks * self.codebook_size

    @property
    def text_stream_size(self) -> int:
        """Ids the text stream (its embedding and head) covers: text and specials."""
        return self.audio_base

    @property
    def audio_none(self) -> int:
        """In-codebook index meaning "no code at this step" (also the end-of-speech class of codebook 0)."""
        return self.codebook_size

    def special(self, name: str) -> int:
        token = name if name.startswith("<|") else f"<|{name}|>"
        try:
            return self.special_base + SPECIALS.index(token)
        except ValueError:
            raise KeyError(f"unknown special token {name!r}; known: {', '.join(SPECIALS)}") from None

    def special_name(self, token_id: int) -> str | None:
        i = token_id - self.special_base
        return SPECIALS[i] if 0 <= i < len(SPECIALS) else None

    def audio_id(self, codebook: int, code: int) -> int:
        """Unified id of entry `code` of `codebook`."""
        if not 0 <= codebook < self.num_codebooks or not 0 <= code < self.codebook_size:
            raise ValueError(f"codebook {codebook} code {code} is outside {self.num_codebooks} x {self.codebook_size}")
        return self.audio_base + codebook * self.codebook_size + code

    def split_audio_id(self, token_id: int) -> tuple[int, int]:
        """(codebook, code) of a unified audio id."""
        offset = token_id - self.audio_base
        if not 0 <= offset < self.num_codebooks * self.codebook_size:
            raise ValueError(f"id {token_id} is not an audio id")
        return divmod(offset, self.codebook_size)

    def is_text(self, token_id: int) -> bool:
        return 0 <= token_id < self.text_size
