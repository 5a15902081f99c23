"""`voice data import`: real recordings (voice/assets/speech, test data only) into the corpus format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice.assets import SPEECH_DIR
from voice.data import manifest as mf
from voice.data.importer import ImportError_, find_pairs, import_recordings

SPEECH = SPEECH_DIR


def _tone(path: Path, seconds: float, rate_hz: int, channels: int = 1) -> None:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    sf.write(str(path), np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate_hz, subtype="PCM_16")


def test_import_the_shared_recordings(tmp_path):
    with open(SPEECH / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    summary = import_recordings(SPEECH, tmp_path / "real", split="test")
    records = mf.read_manifest(tmp_path / "real")
    assert summary["utterances"] == len(records) == len(rows)
    for row, r in zip(rows, records):
        assert all(key in r for key in mf.REQUIRED_KEYS)
        assert r["text"] == row["transcript"] and r["split"] == "test" and r["source"] == "real"
        assert r["role"] == "user" and r["intent"] is None
        info = sf.info(str(tmp_path / "real" / r["wav"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert abs(r["duration_s"] - float(row["seconds"])) < 0.02, (row["file"], r["duration_s"])
    assert set(summary["splits"]) == {"test"}


def test_import_a_folder_with_sidecar_transcripts(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    _tone(src / "a.wav", 1.5, 44100, channels=2)
    (src / "a.txt").write_text("hello there\n")
    _tone(src / "b.wav", 0.75, 8000)
    (src / "b.txt").write_text("what time is it")
    import_recordings(src, tmp_path / "out", split="train", sample_rate_hz=16000)
    import_recordings(src, tmp_path / "out", split="train")  # importing again replaces, never duplicates
    records = mf.read_manifest(tmp_path / "out")
    assert [r["text"] for r in records] == ["hello there", "what time is it"]
    assert [r["duration_s"] for r in records] == pytest.approx([1.5, 0.75], abs=0.01)
    audio, rate = sf.read(str(tmp_path / "out" / records[0]["wav"]), dtype="float32")
    assert rate == 16000 and audio.ndim == 1 and 0.25 < np.max(np.abs(audio)) < 0.35
    assert records[0]["voice"] == "real:mine" and records[0]["split"] == "train"


def test_import_a_jsonl_manifest(tmp_path):
    _tone(tmp_path / "x.wav", 1.0, 16000)
    (tmp_path / "list.jsonl").write_text(json.dumps({"audio": "x.wav", "text": "one two", "speaker": "ann"}) + "\n")
    import_recordings(tmp_path / "list.jsonl", tmp_path / "out", name="mine")
    (record,) = mf.read_manifest(tmp_path / "out")
    assert record["voice"] == "real:mine/ann" and record["text"] == "one two"


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(ImportError_, match="does not exist"):
        find_pairs(tmp_path / "nothing")
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(ImportError_, match="no audio files"):
        find_pairs(src)
    _tone(src / "a.wav", 0.5, 16000)
    with pytest.raises(ImportError_, match="has no transcript a.txt"):
        find_pairs(src)
    (src / "manifest.tsv").write_text("file\ttranscript\nmissing.wav\thi\n")
    with pytest.raises(ImportError_, match="missing.wav is missing"):
        find_pairs(src)
    (src / "manifest.tsv").write_text("name\twords\na.wav\thi\n")
    with pytest.raises(ImportError_, match="no audio file column"):
        find_pairs(src)


def test_import_refuses_a_synthetic_corpus_folder(tmp_path):
    (tmp_path / "syn").mkdir()
    (tmp_path / "syn" / mf.BUILD_INFO).write_text(json.dumps({"format": mf.FORMAT_NAME, "config": {}}))
    _tone(tmp_path / "a.wav", 0.5, 16000)
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(ImportError_, match="synthetic corpus"):
        import_recordings(tmp_path, tmp_path / "syn")
