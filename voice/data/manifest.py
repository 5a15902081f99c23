"""The corpus format: manifest records (one JSON line per utterance), reading, writing and the summary."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Iterator

FORMAT_NAME = "voice-corpus"
FORMAT_VERSION = 1
MANIFEST = "manifest.jsonl"
BUILD_INFO = "build_info.json"
SUMMARY = "summary.json"
# Required keys of every manifest line. `tokens` is null until a codec caches codes for the utterance;
# then it maps a codec name to a path relative to the corpus root: tokens/<codec>/<shard>/<id>.npy.
REQUIRED_KEYS = ("id", "dialogue_id", "turn_index", "role", "text", "intent", "expected", "voice", "split",
                 "wav", "duration_s", "sample_rate_hz", "context", "tokens")


def tokens_path(record: dict, codec: str) -> str:
    """Where a codec should cache the codes of `record` (relative to the corpus root)."""
    shard = Path(record["wav"]).parent.name
    return f"tokens/{codec}/{shard}/{record['id']}.npy"


def read_manifest(path: str | Path) -> list[dict]:
    """All complete records of a manifest (a corpus folder or the .jsonl itself); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no manifest at {path}")
    return list(iter_records(path))


def iter_records(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # a build is writing this line right now
            if line.strip():
                yield json.loads(line)


def dumps(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def summarize(records: list[dict]) -> dict:
    """Hours per split and role, utterances per voice and intent."""
    hours: dict = defaultdict(lambda: defaultdict(float))
    voices: dict = defaultdict(Counter)
    intents: dict = defaultdict(Counter)
    dialogues: dict = defaultdict(set)
    for r in records:
        hours[r["split"]][r["role"]] += r["duration_s"] / 3600.0
        voices[r["split"]][r["voice"]] += 1
        intents[r["split"]][r["intent"] or "none"] += 1
        dialogues[r["split"]].add(r["dialogue_id"])
    splits = {}
    for split in sorted(hours):
        roles = {role: round(h, 3) for role, h in sorted(hours[split].items())}
        splits[split] = {"hours": round(sum(hours[split].values()), 3), "hours_by_role": roles,
                         "dialogues": len(dialogues[split]), "utterances": sum(voices[split].values()),
                         "voices": dict(sorted(voices[split].items())), "intents": dict(sorted(intents[split].items()))}
    total = sum(s["hours"] for s in splits.values())
    return {"total_hours": round(total, 3), "utterances": len(records), "splits": splits}


def format_summary(summary: dict) -> str:
    """A few human-readable lines for the CLI."""
    lines = [f"total: {summary['total_hours']:.2f} h in {summary['utterances']} utterances"]
    for split, s in summary["splits"].items():
        roles = ", ".join(f"{role} {h:.2f} h" for role, h in s["hours_by_role"].items())
        lines.append(f"  {split:<10} {s['hours']:6.2f} h ({roles}); {s['dialogues']} dialogues, {s['utterances']} utterances")
        lines.append(f"  {'':<10} voices: {', '.join(f'{v}={n}' for v, n in s['voices'].items())}")
        lines.append(f"  {'':<10} intents: {', '.join(f'{i}={n}' for i, n in s['intents'].items())}")
    return "\n".join(lines)
