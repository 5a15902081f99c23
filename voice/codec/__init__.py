"""Streaming neural speech codecs: the `StreamingCodec` interface, its sources, training and evaluation."""

from __future__ import annotations

__all__ = ["StreamingCodec", "CodecState", "load_codec", "CompactCodec", "CompactCodecConfig"]


def __getattr__(name: str):  # lazy, so `import voice.codec` does not import torch
    if name in ("StreamingCodec", "CodecState"):
        from voice.codec import codec

        return getattr(codec, name)
    if name == "load_codec":
        from voice.codec.loader import load_codec

        return load_codec
    if name in ("CompactCodec", "CompactCodecConfig"):
        from voice.codec import compact

        return getattr(compact, name)
    raise AttributeError(name)
