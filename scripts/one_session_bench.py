"""One long conversation through a real server: the corpus test questions said one after the other in one session.

`voice bench` opens a fresh session for every question; people (and the browser's page) keep one. This speaks N
questions in real time over one WebSocket (lead silence, the clip, silence until the answer is over) and prints,
per turn, the voice-to-voice (first answer audio above -40 dBFS after the clip's speech ends) and the server's
stage timings (`turn_end.timings_ms`), to tell the cost of a long conversation apart from the page's own.

    .venv/bin/python scripts/one_session_bench.py --turns 30 [--option context_s=8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np


async def _run(url: str, items, options: dict, lead_s: float = 0.5) -> list[dict]:
    from voice.bench.runner import RunConfig, first_sound
    from voice.client import VoiceClient

    client = VoiceClient(url, sample_rate_hz=items[0].sample_rate_hz, pipeline="e2e", options=options)
    await client.connect()
    rows = []
    try:
        sent_s = 0.0                     # the server's input timeline: seconds streamed so far
        for k, item in enumerate(items):
            rate = item.sample_rate_hz
            seen = len(client.log.events)
            clip = np.concatenate([np.zeros(int(lead_s * rate), np.float32), item.pcm])
            t0 = await client.stream(clip, chunk_ms=20.0, realtime=True)
            true_end = t0 + lead_s + item.speech.end_s
            last_end_s = sent_s + lead_s + item.speech.end_s - 0.3     # a turn ended inside a pause is not this one
            sent_s += len(clip) / rate
            done, turn, t_wait = None, None, time.monotonic()
            while done is None and time.monotonic() - t_wait < 30:      # the microphone stays open, silent
                await client.stream(np.zeros(rate // 10, np.float32), chunk_ms=20.0, realtime=True)
                sent_s += 0.1
                events = [e for _, e in client.log.events[seen:]]
                if turn is None:
                    turn = next((e["turn"] for e in events if e.get("type") == "speech_stopped"
                                 and e.get("t", 0.0) >= last_end_s), None)
                done = next((e for e in events if e.get("type") == "turn_end" and e.get("turn") == turn), None)
            if done is None:
                rows.append({"turn": k, "error": "no turn_end"})
                continue
            turn = done.get("turn")
            audio = [a for a in client.log.audio if a.turn_id == turn]
            loud, _ = first_sound(audio, client.output_rate_hz, RunConfig.silence_threshold)   # as the bench's v2v
            rows.append({"turn": k, "v2v_ms": None if loud is None else round((loud - true_end) * 1000),
                         "timings_ms": done.get("timings_ms") or {}})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        await client.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--option", action="append", default=[], help="a hello option NAME=VALUE (a number)")
    ap.add_argument("--corpus-dir", default="data/corpus/v2")
    args = ap.parse_args()
    from voice.bench.runner import ServerThread
    from voice.bench.sets import load_set

    options = {k: float(v) for k, v in (o.split("=", 1) for o in args.option)}
    items = load_set("corpus-test", corpus_dir=args.corpus_dir, limit=args.turns)
    with ServerThread("e2e") as server:
        rows = asyncio.run(_run(server.url, items, options))
    v2v = [r["v2v_ms"] for r in rows if r.get("v2v_ms") is not None]
    print(f"options {options}: {len(v2v)} answers, v2v p50 {statistics.median(v2v):.0f} ms, "
          f"first ten {statistics.median(v2v[:10]):.0f}, last ten {statistics.median(v2v[-10:]):.0f}")


if __name__ == "__main__":
    main()
