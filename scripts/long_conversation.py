"""One long e2e conversation, in process: the first answer codes after each turn's end, against the context length.

The e2e stages (`CodecEncodeStage` -> `SpeechLMStage`) with the shipped speech LM hear the corpus test questions
one after the other in one conversation, as the browser's page keeps one; for each turn it prints the context
length when the turn ended and the milliseconds from the stage's `SpeechStopped` to its first assistant codes
(what the bench's tracer calls the first codes). The user's frames go in faster than real time, but in the
stage's pieces, as a server feeds them while the user speaks; only the end of the turn is timed.

    .venv/bin/python scripts/long_conversation.py --turns 30 --context-s 16 --context-s 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import torch


async def _conversation(items, context_s: float, think: bool | None) -> list[dict]:
    from voice import pipelines
    from voice.frames import Codes, SpeechStarted, SpeechStopped, UserAudio

    options = {**({"context_s": context_s} if context_s else {}), **({} if think is None else {"think": int(think)})}
    encode, lm, _ = pipelines.get("e2e").build(options, pipelines.ModelCache())
    rows = []
    for turn, item in enumerate(items, 1):
        step = item.sample_rate_hz // 50
        frames = [SpeechStarted(turn_id=turn, stream_s=0.0)]
        frames += [UserAudio(turn_id=turn, pcm=item.pcm[i:i + step], sample_rate_hz=item.sample_rate_hz,
                             stream_s=i / item.sample_rate_hz) for i in range(0, len(item.pcm), step)]
        stop = SpeechStopped(turn_id=turn, stream_s=len(item.pcm) / item.sample_rate_hz, speech_start_s=0.0)
        for frame in frames:
            async for coded in encode.process(frame):
                async for _ in lm.process(coded):
                    pass
        pending = [f async for f in encode.process(stop)]        # the turn's last codes, then SpeechStopped
        first = None
        for frame in pending:
            if isinstance(frame, SpeechStopped):
                gs = lm._conv.session
                length = lm.service.generator.length(gs) if gs is not None else 0
                t0 = time.perf_counter()
            async for out in lm.process(frame):
                if first is None and isinstance(out, Codes) and out.role == "assistant":
                    first = (time.perf_counter() - t0) * 1000
        rows.append({"turn": turn, "context": length, "first_codes_ms": round(first, 1) if first else None})
        print(json.dumps({"context_s": context_s, **rows[-1]}), flush=True)
    await lm.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--context-s", type=float, action="append",
                    help="the hello option context_s (repeat to compare; 0: the server's default)")
    ap.add_argument("--think", type=int, choices=(0, 1), default=None)
    ap.add_argument("--corpus-dir", default="data/corpus/v2")
    args = ap.parse_args()
    from voice.bench.sets import load_set

    torch.set_num_threads(1)
    items = load_set("corpus-test", corpus_dir=args.corpus_dir, limit=args.turns)
    summary = {}
    for context_s in args.context_s or [16.0]:
        rows = asyncio.run(_conversation(items, context_s, None if args.think is None else bool(args.think)))
        ms = [r["first_codes_ms"] for r in rows if r["first_codes_ms"] is not None]
        contexts = [r["context"] for r in rows]
        summary[context_s] = {"turns": len(rows), "first_codes_ms_p50": round(statistics.median(ms), 1),
                              "first_codes_ms_max": max(ms), "context_p50": statistics.median(contexts),
                              "context_max": max(contexts)}
    for context_s, s in summary.items():
        print(f"context_s {context_s:g}: {s}")


if __name__ == "__main__":
    main()
