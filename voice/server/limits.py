"""Per-session limits: sizes, durations, message rates (token buckets) and socket send timeouts; the
server's load monitors (event-loop lag, CPU share)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from voice.protocol import MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class SessionLimits:
    max_message_bytes: int = MAX_MESSAGE_BYTES
    outbox_size: int = 256            # messages waiting for the socket (bounded: a slow reader stalls us)
    queue_size: int = 64              # frames between stages
    hello_timeout_s: float = 10.0     # a connection must say hello within this (slot squatting)
    max_session_s: float = 4 * 3600.0  # then error `session_too_long`, close 1008
    control_per_s: float = 20.0       # text messages per second, sustained ...
    control_burst: int = 40           # ... with bursts up to this; over: `rate_limited`, message dropped
    audio_per_s: float = 400.0        # binary messages per second, sustained (2.5 ms chunks) ...
    audio_burst: int = 4000           # ... with bursts up to this (80 s of 20 ms chunks sent at once);
                                      # over: `too_many_messages`, close 1008
    send_timeout_s: float = 10.0      # a socket write making no progress this long ends the session

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "outbox_size", "queue_size", "hello_timeout_s", "max_session_s",
                     "control_per_s", "control_burst", "audio_per_s", "audio_burst", "send_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SessionLimits.{name} must be positive")


class TokenBucket:
    """Allows `rate_per_s` events per second on average and bursts of `burst`."""

    def __init__(self, rate_per_s: float, burst: int, clock=time.monotonic) -> None:
        self.rate_per_s, self.burst = float(rate_per_s), float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def allow(self, cost: float = 1.0) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class LoopLagMonitor:
    """How late the event loop wakes up, smoothed: a CPU-starved server falls behind every session.

    Sampled every `interval_s`; `lag_ms` is an exponential average (time constant about
    interval_s / smoothing). The server refuses new sessions while it is above its limit.
    """

    def __init__(self, interval_s: float = 0.1, smoothing: float = 0.2) -> None:
        self.interval_s, self.smoothing = interval_s, smoothing
        self.lag_ms = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.interval_s)
            late_ms = max(0.0, loop.time() - t - self.interval_s) * 1000
            self.lag_ms += self.smoothing * (late_ms - self.lag_ms)


def process_tree(pid: int) -> list[int]:
    """`pid` and the processes it started, theirs too (Linux /proc; just `pid` where there is none):
    the server and the speech LM's process."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return found


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by `pid` and each of its live descendants, by pid (/proc counts
    in ticks of 10 ms; this process itself is read from `time.process_time()`, which is exact)."""
    used: dict[int, float] = {}
    for p in process_tree(pid):
        if p == os.getpid():
            used[p] = time.process_time()
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            used[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass                     # it ended meanwhile
    return used


def cpu_used_since(before: dict[int, float], now: dict[int, float]) -> float:
    """CPU seconds between two `tree_cpu` readings: a process that ended between them counts for nothing (its
    seconds must not leave the total), one that started counts whole."""
    return sum(cpu - before.get(p, 0.0) for p, cpu in now.items())


class CpuLoadMonitor:
    """The share of the machine's cores this process and the processes its models run in keep busy,
    smoothed (time constant about interval_s / smoothing: 1 s). The VAD asks the end-of-turn model early
    (`turn_speculate_ms`) only while it is low: an answer started early and taken back is work thrown
    away, which a loaded server cannot spare (docs/turn-taking.md, "Asked early").

    `others()`: CPU seconds used so far by those other processes, by key (`ModelCache.process_cpu`: the
    speech LM's process reports its own; listing the children through /proc on the event loop, while other
    threads held Python's lock, made a reading take hundreds of ms). A key must be in two readings to
    count: a process that started or ended between them adds nothing."""

    def __init__(self, interval_s: float = 0.25, smoothing: float = 0.25, cores: int | None = None,
                 others: Callable[[], dict[Any, float]] | None = None) -> None:
        self.interval_s, self.smoothing = interval_s, smoothing
        self.cores = max(1, cores or os.cpu_count() or 1)
        self.others = others or dict
        self.share = 0.0

    async def run(self) -> None:
        while True:
            t, cpu, others = time.monotonic(), time.process_time(), self.others()
            await asyncio.sleep(self.interval_s)
            now = self.others()
            used = time.process_time() - cpu + sum(max(0.0, s - others[k]) for k, s in now.items() if k in others)
            busy = used / max(1e-3, time.monotonic() - t) / self.cores
            self.share += self.smoothing * (min(1.0, busy) - self.share)
