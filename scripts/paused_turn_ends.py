"""Where the VAD ends the bench's paused turns early: its rule replayed on each clip, no server.

Each item of `voice bench --set paused-turns` (a test-split question said as prefix, pause, rest;
data/turns/v2) goes through the VAD stage as the server runs it (the shipped end-of-turn model, its
thresholds, the speculative early question), 20 ms at a time after the bench's 0.5 s of lead silence.
A decided end (`TurnConfirmed`, or a `SpeechStopped` that is not speculative) before the designed
pause is over is a premature end, as in the bench; it is placed:

- `pause`: at the designed pause (the model took the prefix for a whole turn);
- `inside`: at a shorter pause inside a piece, which the synthesizer made at a comma or a filler
  (`voice eval turn` never asks there: its checks are in the designed pause only);
- and its reason (`model`, `max_silence`).

    .venv/bin/python scripts/paused_turn_ends.py [--limit 60] [--turns data/turns/v2]
        [--model runs/turn/NAME --threshold 0.95]     # a trained run instead of models/turn
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path

import numpy as np

from voice.bench.sets import paused_turns
from voice.frames import SpeechStopped, TurnConfirmed, UserAudio
from voice.stages.vad import VadConfig, VadStage, load_barge_in_detector, load_turn_detector

LEAD_S = 0.5


async def decided_ends(pcm: np.ndarray, detector) -> list[tuple[float, str]]:
    # unbound, as the session is while the user speaks: no answer playing, speculation allowed, nothing to retract
    vad = VadStage(16000, VadConfig(), turn_detector=detector, barge_in_detector=load_barge_in_detector())
    audio = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), pcm, np.zeros(3 * 16000, np.float32)])
    ends = []
    for i in range(0, len(audio), 320):
        async for f in vad.process(UserAudio(pcm=audio[i:i + 320], sample_rate_hz=16000, stream_s=i / 16000)):
            if isinstance(f, TurnConfirmed) or (isinstance(f, SpeechStopped) and not f.speculative):
                ends.append((f.stream_s - LEAD_S, f.reason))
    return ends


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--turns", default="data/turns/v2")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--model", default="", help="a run folder (its turn.pt) instead of the shipped models/turn")
    p.add_argument("--threshold", type=float, default=0.0, help="its decision threshold (0: thresholds.json or 0.5)")
    args = p.parse_args()
    detector = load_turn_detector()
    if args.model:
        from voice.turn.model import shared_detector

        detector = shared_detector(Path(args.model))
    if args.threshold:
        detector.threshold = detector.audio_threshold = args.threshold
    counts: Counter = Counter()
    items = paused_turns(Path(args.turns), args.limit)
    for item in items:
        (pause_start, pause_end), = item.pauses
        early = [(t, why) for t, why in asyncio.run(decided_ends(item.pcm, detector)) if t < pause_end - 0.05]
        if not early:
            continue
        t, why = early[0]
        where = "pause" if t >= pause_start - 0.15 else "inside"
        counts[where, why] += 1
        print(f"{item.item_id:24s} ended at {t:5.2f} s ({where}, {why}); designed pause {pause_start:.2f}-{pause_end:.2f} s: "
              f"{item.text}")
    total = sum(counts.values())
    print(f"premature: {total} of {len(items)} ({100 * total / max(1, len(items)):.1f}%); "
          + ", ".join(f"{where} by {why}: {n}" for (where, why), n in sorted(counts.items())))


if __name__ == "__main__":
    main()
