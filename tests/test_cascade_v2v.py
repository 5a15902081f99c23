"""Voice-to-voice latency of the cascade against a real server (a slow smoke test, and the measuring script).

Full measurement (quoted in docs/cascade.md):
  .venv/bin/python tests/test_cascade_v2v.py speech [--asr whisper] [--tts piper]
  .venv/bin/python tests/test_cascade_v2v.py corpus --n 20
v2v = arrival of the first non-silent answer sample at the client minus the true end of speech
(the clip's last speech sample by frame energy, voice.bench.reference), streamed in real time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import FIXED_RULES, ROOT, SPEECH_DIR, run, speech_files  # noqa: E402

from voice.audio import first_non_silent_index, read_wav, resample  # noqa: E402
from voice.client import VoiceClient  # noqa: E402
from voice.server.app import ServerConfig, VoiceServer  # noqa: E402

LEAD_S, TAIL_S = 0.3, 1.5
STAGES = ("asr.Transcript", "llm.AssistantText", "ws_out.AssistantAudio")


async def measure_turn(c: VoiceClient, pcm: np.ndarray, turn: int) -> dict:
    """Stream one question in real time; returns v2v, the stage breakdown and the texts."""
    from voice.bench.reference import find_speech

    speech_end_s = find_speech(pcm, 16000).end_s
    clip = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), pcm, np.zeros(int(TAIL_S * 16000), np.float32)])
    t0 = await c.stream(clip)
    end = await c.wait_for(lambda e: e["type"] == "turn_end" and e["turn"] == turn, 120, include_past=True)
    audio = [a for a in c.log.audio if a.turn_id == turn]
    first = next((a.t_s + i / c.output_rate_hz for a in audio
                  if (i := first_non_silent_index(a.pcm)) is not None), None)
    await asyncio.sleep(sum(len(a.pcm) for a in audio) / c.output_rate_hz)   # let the answer play out
    true_end = t0 + LEAD_S + speech_end_s
    texts = lambda kind: [e for e in c.log.of_type(kind) if e.get("turn") == turn]  # noqa: E731
    return {"v2v_ms": None if first is None else round((first - true_end) * 1000, 1),
            "endpointing_ms": end.get("endpointing_ms"), "timings_ms": {k: end["timings_ms"].get(k) for k in STAGES},
            "transcript": " ".join(e["text"] for e in texts("transcript") if e["final"]),
            "answer": "".join(e["text"] for e in texts("assistant_text"))}


async def measure(items: list[tuple[np.ndarray, dict]], options: dict) -> list[dict]:
    """One session per item (its options may fix the clock); one warm server for all."""
    srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES, pipeline="cascade"))
    await srv.start()
    out = []
    try:
        for pcm, extra in items:
            async with VoiceClient(srv.url, 16000, "cascade", {**options, **extra.get("options", {})}) as c:
                out.append({**extra, **await measure_turn(c, pcm, 1)})
    finally:
        await srv.stop()
    return out


def summary(rows: list[dict]) -> dict:
    def pct(values, q):
        values = [v for v in values if v is not None]
        return round(float(np.percentile(values, q)), 1) if values else None
    keys = {"v2v_ms": [r["v2v_ms"] for r in rows], "endpointing_ms": [r["endpointing_ms"] for r in rows]}
    keys.update({k: [r["timings_ms"][k] for r in rows] for k in STAGES})
    out = {"turns": len(rows), **{f"{k}_p50": pct(v, 50) for k, v in keys.items()},
           **{f"{k}_p95": pct(v, 95) for k, v in keys.items()}}
    if rows and "correct" in rows[0]:
        out["answer_accuracy"] = round(sum(r["correct"] for r in rows) / len(rows), 3)
    return out


def _speech_items(paths) -> list[tuple[np.ndarray, dict]]:
    items = []
    for p in paths:
        pcm, rate = read_wav(p)
        items.append((pcm if rate == 16000 else resample(pcm, rate, 16000), {"file": p.name}))
    return items


def _corpus_items(n: int) -> list[tuple[np.ndarray, dict]]:
    import datetime as dt

    corpus = ROOT / "data" / "corpus" / "v1"
    items = []
    for line in open(corpus / "manifest.jsonl"):
        r = json.loads(line)
        if r["split"] != "test" or r["role"] != "user" or r["turn_index"] != 0 or not (corpus / r["wav"]).is_file():
            continue
        now = dt.datetime.strptime(r["context"], "Today is %A, %B %d, %Y. The time is %I:%M %p.")
        pcm, rate = read_wav(corpus / r["wav"])
        items.append((pcm, {"id": r["id"], "intent": r["intent"], "expected": r["expected"], "text": r["text"],
                            "options": {"now": now.isoformat()}}))
        if len(items) >= n:
            break
    return items


@pytest.mark.slow
def test_cascade_v2v_smoke(speech_dir) -> None:
    files = [speech_dir / n for n in ("sb_timit_spk1_snt5.wav", "ps_goforward.wav")]
    rows = run(measure(_speech_items(files), {"tts": "espeak", "max_new_tokens": 24}), timeout_s=300)
    assert all(r["v2v_ms"] is not None and 0 < r["v2v_ms"] < 10_000 for r in rows), rows
    assert all(r["transcript"] and r["answer"] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("set", choices=["speech", "corpus"])
    ap.add_argument("--asr", default="whisper")
    ap.add_argument("--tts", default="piper")
    ap.add_argument("--n", type=int, default=20, help="corpus questions")
    ap.add_argument("--out", type=Path, help="write rows + summary as JSON")
    args = ap.parse_args()
    options = {"asr": args.asr, "tts": args.tts}
    items = _speech_items(speech_files()) if args.set == "speech" else _corpus_items(args.n)
    rows = asyncio.run(measure(items, options))
    if args.set == "corpus":
        from voice.data.answers import check_answer

        for r in rows:
            r["correct"] = check_answer(r["intent"], r["expected"], r["answer"])
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "options"}))
    result = {"options": options, "set": args.set, "summary": summary(rows)}
    print(json.dumps(result["summary"], indent=1))
    if args.out:
        args.out.write_text(json.dumps({**result, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
