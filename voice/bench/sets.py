"""Benchmark sets: scripted user turns (a WAV, its true speech boundaries, the expected answer if any)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voice.assets import speech_dir
from voice.bench.reference import SpeechBoundaries, find_speech, load_reference_table

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
SPEECH_DIR = speech_dir()    # the real recordings the package carries, or $VOICE_SPEECH_DIR
REFERENCE_TABLE = ROOT / "tests" / "data" / "speech_boundaries.json"
CORPUS_DIR = ROOT / "data" / "corpus" / "v2"   # what `voice data build` writes by default
TURNS_DIR = ROOT / "data" / "turns" / "v2"     # what `voice data turns` writes by default
BARGE_DIR = ROOT / "data" / "barge" / "v1"
BARGE_CORPUS_DIR = ROOT / "data" / "corpus" / "v2"
BARGE_KINDS = ("interrupt", "backchannel", "noise", "echo")
SET_NAMES = ("shared-speech", "corpus-test", "paused-turns")


@dataclass(frozen=True)
class TurnItem:
    """One scripted user turn."""

    item_id: str
    path: str
    pcm: np.ndarray              # float32 mono at sample_rate_hz
    sample_rate_hz: int
    speech: SpeechBoundaries     # true start / end of speech on the clip's timeline
    text: str = ""               # what the user says
    intent: str | None = None    # corpus intent, for check_answer
    expected: str | None = None  # expected answer (None: correctness not checked)
    options: dict = field(default_factory=dict)  # per-turn hello options (e.g. the dialogue's clock)
    pauses: tuple[tuple[float, float], ...] = ()  # pauses inside the turn (start, end) on the clip's timeline
    barge_kind: str = "interrupt"  # as a barge-in: interrupt (should stop the answer), backchannel, noise, echo


def load_set(name: str, speech_dir: Path = SPEECH_DIR, corpus_dir: Path = CORPUS_DIR,
             reference_table: Path = REFERENCE_TABLE, limit: int | None = None,
             turns_dir: Path = TURNS_DIR) -> list[TurnItem]:
    """The turns of a named set; raises ValueError / FileNotFoundError with a clear message."""
    if name == "shared-speech":
        items = _shared_speech(Path(speech_dir), Path(reference_table))
    elif name == "corpus-test":
        items = _corpus_test(Path(corpus_dir), limit)
    elif name == "paused-turns":
        items = paused_turns(Path(turns_dir), limit)
    else:
        raise ValueError(f"unknown set {name!r}; choose one of {', '.join(SET_NAMES)}")
    if not items:
        raise ValueError(f"set {name!r} is empty")
    return items[:limit] if limit else items


def _shared_speech(speech_dir: Path, reference_table: Path) -> list[TurnItem]:
    from voice.audio import read_wav

    files = sorted(speech_dir.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no recordings in {speech_dir} (pass --speech-dir)")
    reviewed = load_reference_table(reference_table) if reference_table.exists() else {}
    texts = _manifest_texts(speech_dir / "manifest.tsv")
    items = []
    for f in files:
        pcm, rate = read_wav(f)
        speech = reviewed.get(f.name) or find_speech(pcm, rate)
        items.append(TurnItem(f.stem, str(f), pcm, rate, speech, texts.get(f.name, "")))
    if not reviewed:
        log.warning("no reviewed reference table at %s; boundaries computed by the energy tool", reference_table)
    return items


def _manifest_texts(path: Path) -> dict[str, str]:
    import csv

    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {row["file"]: row.get("transcript", "") for row in csv.DictReader(f, delimiter="\t")}


def _corpus_test(corpus_dir: Path, limit: int | None) -> list[TurnItem]:
    """User turns of the corpus test split that have an expected answer (first turn of each dialogue)."""
    from voice.audio import read_wav
    from voice.data.manifest import read_manifest

    records = [r for r in read_manifest(corpus_dir) if r["split"] == "test" and r["role"] == "user"
               and r.get("expected") and r.get("turn_index", 0) == 0]
    if not records:
        raise ValueError(f"the corpus at {corpus_dir} has no test-split user turns with expected answers yet")
    items = []
    for r in records[: limit or len(records)]:
        pcm, rate = read_wav(corpus_dir / r["wav"])
        now = context_clock(r.get("context", ""))
        items.append(TurnItem(r["id"], str(corpus_dir / r["wav"]), pcm, rate, find_speech(pcm, rate),
                              r["text"], r.get("intent"), r.get("expected"), {"now": now} if now else {}))
    return items


def paused_turns(turns_dir: Path, limit: int | None = None) -> list[TurnItem]:
    """Test-split questions said with a pause inside (`voice data turns`): prefix, pause, rest.

    The held-out voices and phrasings; the pause is the one the set stores for each question
    (0.3-1.2 s). An answer that starts during the pause is a premature end of turn.
    """
    from voice.turn.data import load_records, read_piece

    records = [r for r in load_records(turns_dir, "test") if "prefix_wav" in r]
    if not records:
        raise ValueError(f"the paused-turn set at {turns_dir} has no test-split paused questions")
    items = []
    for r in records[: limit or len(records)]:
        prefix, rest = read_piece(turns_dir, r["prefix_wav"]), read_piece(turns_dir, r["rest_wav"])
        pause = np.zeros(int(round(r["pause_s"] * 16000)), np.float32)
        pcm = np.concatenate([prefix, pause, rest]).astype(np.float32)
        pause_start, pause_end = len(prefix) / 16000, (len(prefix) + len(pause)) / 16000
        speech = find_speech(pcm, 16000)
        items.append(TurnItem(f"{r['id']}:{r['kind']}", str(turns_dir / r["prefix_wav"]), pcm, 16000, speech,
                              f"{r['prefix_text']} ... {r['rest_text']}", r.get("intent"), None,
                              pauses=((round(pause_start, 4), round(pause_end, 4)),)))
    return items


def barge_in_mix(barge_dir: Path = BARGE_DIR, corpus_dir: Path = BARGE_CORPUS_DIR, n: int = 40,
                 seed: int = 0) -> list[TurnItem]:
    """What the bench plays over the answers with --barge-in-mix: the test split's voices, in turn an
    interruption, a backchannel ("uh-huh", "yeah", ...), a noise (cough, knock, clap, door, breath,
    click) and the assistant's voice coming back through the microphone (a corpus answer in the
    assistant's voice, quieter, in a room). Only the first should stop the answer."""
    from voice.turn.barge_data import NOISE_KINDS, as_echo, echo_rows, noise_burst
    from voice.turn.data import load_records, read_piece

    records = [r for r in load_records(barge_dir, "test") if "interrupt_wav" in r and "backchannel_wav" in r]
    echoes = echo_rows(corpus_dir, "test")
    if not records or not echoes:
        raise ValueError(f"the barge-in mix needs the test splits of {barge_dir} (voice data barge) and {corpus_dir}")
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        kind, r = BARGE_KINDS[i % len(BARGE_KINDS)], records[(i * 7) % len(records)]
        if kind in ("interrupt", "backchannel"):
            pcm, label = read_piece(barge_dir, r[f"{kind}_wav"]), r[f"{kind}_text"]
        elif kind == "noise":
            label = NOISE_KINDS[(i // len(BARGE_KINDS)) % len(NOISE_KINDS)]
            pcm = noise_burst(label, rng)
        else:
            label = echoes[i % len(echoes)]
            pcm = np.clip(as_echo(read_piece(corpus_dir, label), rng) * np.float32(4.0), -1, 1)[: 3 * 16000]
        pcm = pcm.astype(np.float32)
        dur = len(pcm) / 16000    # a noise or an echo "starts" with its first sample
        speech = (find_speech(pcm, 16000) if kind in ("interrupt", "backchannel") else
                  SpeechBoundaries(0.0, dur, ((0.0, dur),), -90.0, 0.0, -60.0, -50.0, dur, 16000))
        items.append(TurnItem(f"{kind}:{i}", label, pcm, 16000, speech, label, barge_kind=kind))
    return items


def context_clock(context: str) -> str | None:
    """The date and time a corpus dialogue happens at, as ISO 8601 (the `now` option of pipelines).

    "Today is Tuesday, October 27, 2026. The time is 10:01 PM." -> "2026-10-27T22:01"
    """
    import datetime as dt
    import re

    m = re.search(r"Today is \w+, (\w+ \d{1,2}, \d{4})\. The time is (\d{1,2}:\d{2} [AP]M)", context)
    if not m:
        return None
    return dt.datetime.strptime(f"{m.group(1)} {m.group(2)}", "%B %d, %Y %I:%M %p").isoformat(timespec="minutes")
