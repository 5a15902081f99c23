"""The speech LM's text ids: SmolLM2's tokenizer, optionally cut down to the ids the model needs.

A model trained from scratch on the corpus only ever learns the few thousand tokenizer ids its
texts use; the other 45,000 rows of the embedding (and of the tied text head, which every LM step
pays for) stay untrained. `TextIds` keeps a chosen list of tokenizer ids (the first `common` ids,
which a byte-level BPE orders roughly by frequency and which hold its 256 byte symbols, plus every
id of the training texts) and renumbers them 0..n-1. A tokenizer id outside the list is spelled
with its byte symbols, so every text can still be written and read back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable


class TextIds:
    """text <-> the model's text ids. `kept` None: the tokenizer's own ids, all of them."""

    def __init__(self, tokenizer, kept: list[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.kept = sorted(set(kept)) if kept is not None else None
        if self.kept is not None:
            self._to_model = {tid: i for i, tid in enumerate(self.kept)}
            self._byte_ids = {}
            for symbol in _byte_symbols():
                tid = tokenizer.convert_tokens_to_ids(symbol)
                if tid not in self._to_model:
                    raise ValueError(f"the kept ids lack the byte symbol {symbol!r} (id {tid})")
                self._byte_ids[symbol] = self._to_model[tid]

    @property
    def size(self) -> int:
        return len(self.kept) if self.kept is not None else len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.kept is None:
            return ids
        out: list[int] = []
        for tid in ids:
            if tid in self._to_model:
                out.append(self._to_model[tid])
            else:       # spell the token with its byte symbols
                out.extend(self._byte_ids[s] for s in self.tokenizer.convert_ids_to_tokens(tid))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self.kept is not None:
            ids = [self.kept[i] for i in ids if 0 <= i < len(self.kept)]
        return self.tokenizer.decode(ids)


def _byte_symbols() -> list[str]:
    """The 256 symbols a byte-level BPE (GPT-2, SmolLM2) writes bytes with."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def choose_ids(tokenizer, texts: Iterable[str], common: int = 4096) -> list[int]:
    """The first `common` tokenizer ids (with every byte symbol) plus every id that `texts` use."""
    kept = set(range(min(common, len(tokenizer))))
    kept.update(tokenizer.convert_tokens_to_ids(s) for s in _byte_symbols())
    for text in texts:
        kept.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return sorted(kept)
