"""`voice loadtest`: K real-time sessions turn after turn; v2v p95, memory growth, leaked tasks and fds."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from voice.assets import speech_dir  # noqa: E402

log = logging.getLogger(__name__)
SPEECH_DIR = speech_dir()
CHUNK_MS = 20.0


@dataclass(frozen=True)
class LoadConfig:
    sessions: int = 4                 # concurrent sessions
    seconds: float = 60.0             # how long each level runs
    pipeline: str = "echo"
    rates_hz: tuple[int, ...] = (16000, 48000)   # session i sends at rates_hz[i % n] (browsers send 48 kHz)
    warmup_s: float = 30.0            # memory baseline taken this long into the level (at most half of it)
    tail_s: float = 0.5               # silence after the answer has played, before the next clip
    answer_timeout_s: float = 30.0    # a turn with no complete answer by then counts as missed
    max_pause_s: float = 0.4          # clips with longer pauses would be split into two turns by the VAD
    max_clip_s: float = 6.0
    options: tuple[tuple[str, object], ...] = ()   # hello options of every session (e.g. turn_detection=silence)
    server_args: tuple[str, ...] = ()  # more arguments of `voice serve` (e.g. --speechlm-in-process)


@dataclass
class Clip:
    name: str
    pcm: np.ndarray        # float32 at the session rate
    speech_end_s: float    # true end of speech (frame energy, voice.bench.reference)
    duration_s: float


def load_clips(speech_dir: Path, rate_hz: int, cfg: LoadConfig) -> list[Clip]:
    """Clean single-utterance WAVs from `speech_dir`, resampled to `rate_hz`, with their true speech end."""
    from voice.audio import read_wav, resample
    from voice.bench.reference import find_speech

    clips = []
    for path in sorted(Path(speech_dir).glob("*.wav")):
        pcm, rate = read_wav(path)
        b = find_speech(pcm, rate)
        if b.duration_s > cfg.max_clip_s or b.longest_pause_s() > cfg.max_pause_s or b.end_s - b.start_s < 0.4:
            continue
        clips.append(Clip(path.stem, resample(pcm, rate, rate_hz) if rate != rate_hz else pcm, b.end_s, b.duration_s))
    if not clips:
        raise ValueError(f"no usable speech clips in {speech_dir}")
    return clips


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


# ---- the server under test ---------------------------------------------------------------
class ServerProcess:
    """`voice serve` in a child process on a free loopback port; stats from /healthz and /proc."""

    def __init__(self, pipeline: str, max_sessions: int, server_args: tuple[str, ...] = ()) -> None:
        cmd = [sys.executable, "-m", "voice.cli", "serve", "--port", "0", "--pipelines", pipeline,
               "--pipeline", pipeline, "--max-sessions", str(max_sessions), *server_args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url = ""
        self.lines: list[str] = []
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"voice server ready at (\S+)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            raise RuntimeError("the server did not start:\n" + "".join(self.lines[-20:]))
        threading.Thread(target=self._drain, daemon=True).start()
        self._cpu0 = (self.cpu_by_pid(), time.monotonic())

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            del self.lines[:-200]

    def health(self) -> dict:
        base = self.url.replace("ws://", "http://").rsplit("/ws", 1)[0]
        with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
            return json.loads(r.read())

    def cpu_by_pid(self) -> dict[int, float]:
        """CPU seconds of the server and of each of its children (the speech LM's process), by pid."""
        from voice.server.limits import tree_cpu

        return tree_cpu(self.proc.pid)

    def cpu_cores_since_mark(self) -> float:
        from voice.server.limits import cpu_used_since

        cpu, t = self.cpu_by_pid(), time.monotonic()
        used = cpu_used_since(self._cpu0[0], cpu) / max(1e-6, t - self._cpu0[1])
        self._cpu0 = (cpu, t)
        return round(used, 2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


# ---- one simulated user --------------------------------------------------------------------
async def paced_stream(client, pcm: np.ndarray, rate_hz: int, late_ms: list[float],
                       until=lambda: True, max_extra_s: float = 0.0) -> float:
    """Send like a microphone (a 20 ms chunk when it is complete); append each chunk's lateness.

    After `pcm`, keep sending silence (a microphone stays open) until `until()` is true or
    `max_extra_s` have passed. Returns t0, the time sample 0 would have been captured.
    """
    step = int(rate_hz * CHUNK_MS / 1000)
    silence = np.zeros(step, np.float32)
    t0, i = time.monotonic(), 0
    limit = len(pcm) + int(max_extra_s * rate_hz)
    while i < len(pcm) or (i < limit and not until()):
        chunk = pcm[i:i + step] if i < len(pcm) else silence
        due = t0 + (i + len(chunk)) / rate_hz
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        late_ms.append((time.monotonic() - due) * 1000)
        await client.send_audio(chunk)
        i += len(chunk)
    return t0


async def run_user(url: str, pipeline: str, rate_hz: int, clips: list[Clip], first: int, deadline: float,
                   cfg: LoadConfig, out: dict) -> None:
    """Turn after turn until `deadline`: stream a clip plus silence, measure v2v of the answer."""
    from voice.audio import first_non_silent_index
    from voice.client import VoiceClient

    loud: dict[int, float] = {}                       # turn -> when its first non-silent sample plays
    arrived: dict[int, float] = {}                    # turn -> when that sample arrived (what voice bench reports)
    played: dict[int, tuple[float, int]] = {}         # turn -> (first arrival, samples before this chunk)

    def on_audio(a) -> None:
        t_first, n_before = played.get(a.turn_id, (a.t_s, 0))
        played[a.turn_id] = (t_first, n_before + len(a.pcm))
        idx = first_non_silent_index(a.pcm)
        if a.turn_id not in loud and idx is not None:
            # playback starts at the first arrival; a sample plays once it is due and has arrived
            loud[a.turn_id] = max(a.t_s, t_first + (n_before + idx) / client.output_rate_hz)
            arrived[a.turn_id] = a.t_s

    client = VoiceClient(url, rate_hz, pipeline=pipeline, on_audio=on_audio, options=dict(cfg.options))
    await client.connect()

    def answered() -> bool:
        """The last turn is over and its answer has had time to play (no barge-in into it)."""
        stopped = client.log.of_type("speech_stopped")
        if not stopped:
            return False
        turn = stopped[-1]["turn"]
        if not [e for e in client.log.of_type("turn_end") if e["turn"] == turn]:
            return False
        t_first, n = played.get(turn, (0.0, 0))
        return time.monotonic() > t_first + n / client.output_rate_hz + cfg.tail_s

    k = first
    try:
        while time.monotonic() < deadline:
            clip = clips[k % len(clips)]
            k += 1
            client.log.events.clear()
            client.log.audio.clear()
            loud.clear()
            arrived.clear()
            played.clear()
            t0 = await paced_stream(client, clip.pcm, rate_hz, out["late_ms"], answered, cfg.answer_timeout_s)
            stopped = client.log.of_type("speech_stopped")
            ends = [e for e in client.log.of_type("turn_end") if stopped and e["turn"] == stopped[-1]["turn"]]
            if not ends or stopped[-1]["turn"] not in loud:
                out["missed"].append(clip.name)
                continue
            out["v2v_ms"].append((loud[stopped[-1]["turn"]] - (t0 + clip.speech_end_s)) * 1000)
            out["clips"].append(clip.name)
            out["v2v_arrival_ms"].append((arrived[stopped[-1]["turn"]] - (t0 + clip.speech_end_s)) * 1000)
            out["timings"].append(ends[0].get("timings_ms") or {})
            out["started_early"].append((stopped[-1].get("answer_started_ms") or 0.0) < 0)   # before the end was confirmed
            if ends[0].get("endpointing_ms") is not None:
                out["endpointing_ms"].append(ends[0]["endpointing_ms"])
            out["errors"].extend(e["code"] for e in client.log.of_type("error"))
    finally:
        await client.close()


# ---- a level: K users for the configured time ------------------------------------------------
async def run_level(server: ServerProcess, cfg: LoadConfig, clips_by_rate: dict[int, list[Clip]],
                    stop: asyncio.Event) -> dict:
    """K users until the level's time is up (or `stop`: the turns measured so far are still reported)."""
    out: dict = {"v2v_ms": [], "clips": [], "v2v_arrival_ms": [], "endpointing_ms": [], "late_ms": [], "missed": [],
                 "errors": [], "timings": [], "started_early": []}
    server.cpu_cores_since_mark()
    idle = await asyncio.to_thread(server.health)
    t_start, cpu_start = time.monotonic(), _own_cpu_s()
    deadline = time.monotonic() + cfg.seconds
    users = [asyncio.create_task(run_user(server.url, cfg.pipeline, cfg.rates_hz[i % len(cfg.rates_hz)],
                                          clips_by_rate[cfg.rates_hz[i % len(cfg.rates_hz)]], i * 3, deadline,
                                          cfg, out))
             for i in range(cfg.sessions)]
    everyone = asyncio.gather(*users, return_exceptions=True)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([everyone, stopper], timeout=min(cfg.warmup_s, cfg.seconds / 2),
                       return_when=asyncio.FIRST_COMPLETED)
    warm = await asyncio.to_thread(server.health)
    await asyncio.wait([everyone, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    busy = await asyncio.to_thread(server.health)
    if not everyone.done():
        everyone.cancel()
    try:
        results = await everyone
    except asyncio.CancelledError:      # stopped early: the turns measured so far still count
        results = []
    cpu = server.cpu_cores_since_mark()
    client_cpu = (_own_cpu_s() - cpu_start) / max(1e-6, time.monotonic() - t_start)
    failures = [f"{type(r).__name__}: {r}" for r in results
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    after = await settled_health(server)
    return {
        "interrupted": stop.is_set(), "sessions": cfg.sessions, "seconds": cfg.seconds, "pipeline": cfg.pipeline,
        **_summary(out), "session_failures": failures[:5],
        "server_cpu_cores": cpu, "client_cpu_cores": round(client_cpu, 2),
        "loadavg_1min_end": round(os.getloadavg()[0], 2),
        "server_rss_mb": {"idle": idle.get("rss_mb"), "after_warmup": warm.get("rss_mb"), "end": busy.get("rss_mb")},
        "rss_growth_after_warmup_pct": round(100 * (busy["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"], 2),
        "tasks_before_after": [idle.get("asyncio_tasks"), after.get("asyncio_tasks")],
        "fds_before_after": [idle.get("open_fds"), after.get("open_fds")],
    }


def _summary(out: dict) -> dict:
    """Percentiles of what the users measured."""
    return {
        "turns": len(out["v2v_ms"]), "missed_turns": len(out["missed"]), "errors": out["errors"],
        "started_early": sum(out.get("started_early", [])),
        "v2v_ms": {"p50": pct(out["v2v_ms"], 50), "p95": pct(out["v2v_ms"], 95), "max": pct(out["v2v_ms"], 100)},
        "v2v_arrival_ms": {"p50": pct(out["v2v_arrival_ms"], 50), "p95": pct(out["v2v_arrival_ms"], 95)},
        "endpointing_ms": {"p50": pct(out["endpointing_ms"], 50), "p95": pct(out["endpointing_ms"], 95)},
        "client_late_ms": {"p50": pct(out["late_ms"], 50), "p95": pct(out["late_ms"], 95),
                           "max": pct(out["late_ms"], 100)},
        "turn_v2v_ms": [[clip, round(v, 1)] for clip, v in zip(out["clips"], out["v2v_ms"])],
        "stage_timings_ms": stage_timings(out.get("timings", [])),
    }


def stage_timings(turns: list[dict]) -> dict:
    """The server's tracer per turn (`turn_end`'s `timings_ms`: when each stage's first frame of a kind left it, ms
    after the end of the user's turn), p50 / p95 over the turns, for the answer's first codes and audio."""
    values: dict[str, list[float]] = {}
    for t in turns:
        for k, v in t.items():
            if k.endswith((".Codes", ".AssistantAudio")):
                values.setdefault(k, []).append(v)
    return {k: {"p50": pct(values[k], 50), "p95": pct(values[k], 95)} for k in sorted(values)}


def over_single_by_clip(level: dict, single: dict) -> dict:
    """Each of the level's turns against the same clip's v2v with one session (its median there): p50 / p95 of
    the differences. The clips' own turn-taking (one that waits for the late fallback, one that does not) then
    cancels out, which a difference of two levels' p95s, each the tail of a few dozen turns, keeps."""
    alone: dict[str, list[float]] = {}
    for clip, v in single.get("turn_v2v_ms", []):
        alone.setdefault(clip, []).append(v)
    deltas = [v - float(np.median(alone[clip])) for clip, v in level.get("turn_v2v_ms", []) if clip in alone]
    return {"turns": len(deltas), "p50": pct(deltas, 50), "p95": pct(deltas, 95)}


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def settled_health(server: ServerProcess, timeout_s: float = 5.0) -> dict:
    """/healthz once every session has gone (cleanup is asynchronous)."""
    t_end = time.monotonic() + timeout_s
    while True:
        h = await asyncio.to_thread(server.health)
        if h.get("sessions") == 0 or time.monotonic() > t_end:
            await asyncio.sleep(0.5)
            return await asyncio.to_thread(server.health)
        await asyncio.sleep(0.1)


def passes(level: dict, single: dict, factor: float = 2.0) -> bool:
    """Real time held: p95 v2v within `factor` x one session's, no missed turns, no errors, sender on time."""
    p95, base = level["v2v_ms"]["p95"], single["v2v_ms"]["p95"]
    sender_on_time = (level["client_late_ms"]["p95"] or 0) < 2 * CHUNK_MS   # else the generator is the bottleneck
    return (p95 is not None and base is not None and p95 <= factor * base and not level["missed_turns"]
            and not level["errors"] and not level["session_failures"] and sender_on_time)


async def run_load(levels: list[int], cfg: LoadConfig, speech_dir: Path, stop: asyncio.Event) -> dict:
    """Each level in turn against one server process; the first level is the baseline for `passes`."""
    clips = {r: load_clips(speech_dir, r, cfg) for r in set(cfg.rates_hz)}
    server = await asyncio.to_thread(ServerProcess, cfg.pipeline, max(levels) + 2, cfg.server_args)
    report: dict = {"config": asdict(cfg), "levels": [], "clips": [c.name for c in clips[cfg.rates_hz[0]]],
                    "machine": machine_info(), "interrupted": False}
    try:
        report["server_idle"] = await asyncio.to_thread(server.health)
        for k in levels:
            level = await run_level(server, replace(cfg, sessions=k), clips, stop)
            level["real_time"] = passes(level, report["levels"][0] if report["levels"] else level)
            single = next((lv for lv in report["levels"] + [level] if lv["sessions"] == 1), None)
            if single is not None:
                level["over_single_by_clip_ms"] = over_single_by_clip(level, single)
            report["levels"].append(level)
            log.info("%d sessions: v2v p95 %s ms, missed %d, server %.2f cores, real time: %s", k,
                     level["v2v_ms"]["p95"], level["missed_turns"], level["server_cpu_cores"], level["real_time"])
            if level["interrupted"]:
                report["interrupted"] = True
                break
        held = [lv["sessions"] for lv in report["levels"] if lv["real_time"]]
        report["max_real_time_sessions"] = max(held) if held else 0
    finally:
        report["server_exit_status"] = await asyncio.to_thread(server.stop)
    return report


def machine_info() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load], "python": sys.version.split()[0]}


# ---- the report's plot and table ----------------------------------------------------------------
TARGET_OVER_ONE_SESSION_MS = 100.0   # issue 13: K sessions' v2v p95 at most this much over one session's


def target_ms(report: dict) -> float | None:
    """Issue 13's bound on a level's v2v p95: the 1-session level's p95 + 100 ms (None without that level)."""
    single = next((lv for lv in report["levels"] if lv["sessions"] == 1), None)
    p95 = single["v2v_ms"]["p95"] if single else None
    return None if p95 is None else round(p95 + TARGET_OVER_ONE_SESSION_MS, 1)


def _ms(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def levels_markdown(report: dict, png_name: str) -> str:
    """A table of the levels: turns, missed turns, v2v p50 / p95, p95 over one session's and the +100 ms
    verdict, `real_time` (the `passes` rule), server CPU and the sender's lateness; then the plot."""
    cfg, target = report.get("config", {}), target_ms(report)
    base = None if target is None else target - TARGET_OVER_ONE_SESSION_MS
    load = report.get("machine", {}).get("loadavg_1_5_15")
    options = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cfg.get("options", ()))
    lines = [f"# Load test: {cfg.get('pipeline', '?')}" + (f" ({options})" if options else ""), "",
             f"- {_ms(cfg.get('seconds'))} s per level; {report.get('machine', {}).get('cpus', '?')} cores, "
             f"load average (1/5/15 min) at start {load}",
             "- target (issue 13): v2v p95 at most one session's + 100 ms: "
             + (f"{target:.0f} ms" if target is not None else "no 1-session level, so no target"),
             "- real time (`passes`): p95 within 2x the first level's, no missed turns, no errors, sender on time; "
             f"held up to {report.get('max_real_time_sessions', '-')} sessions"
             + (" (stopped early)" if report.get("interrupted") else ""), "",
             "- same clips over 1 session: each turn against the same clip's v2v with one session, p50 / p95 of "
             "the differences (the clips' own turn-taking cancels out)", "",
             "| sessions | turns | missed | v2v p50 | v2v p95 | p95 over 1 session | within +100 ms "
             "| same clips over 1 session, p50 / p95 | real time | server cores | started early | sender late p95 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lv in report["levels"]:
        p95 = lv["v2v_ms"]["p95"]
        over = "-" if base is None or p95 is None else f"{p95 - base:+.0f}"
        within = "-" if over == "-" else ("yes" if p95 <= target else "no")
        paired = lv.get("over_single_by_clip_ms") or {}
        same = "-" if paired.get("p95") is None else f"{paired['p50']:+.0f} / {paired['p95']:+.0f}"
        lines.append(f"| {lv['sessions']}{' (stopped early)' if lv.get('interrupted') else ''} | {lv['turns']} "
                     f"| {lv['missed_turns']} | {_ms(lv['v2v_ms']['p50'])} | {_ms(p95)} | {over} | {within} | {same} "
                     f"| {'yes' if lv.get('real_time') else 'no'} | {_ms(lv.get('server_cpu_cores'), '.2f')} "
                     f"| {lv.get('started_early', '-')} | {_ms(lv.get('client_late_ms', {}).get('p95'), '.1f')} |")
    lines += ["", "v2v in ms: the true end of speech to the first non-silent answer sample playing at the client.", ""]
    keys = sorted({k for lv in report["levels"] for k in lv.get("stage_timings_ms", {})},
                  key=lambda k: min(lv.get("stage_timings_ms", {}).get(k, {}).get("p50") or 1e9 for lv in report["levels"]))
    if keys:
        lines += ["Where the time goes: the server's tracer, ms from the end of the user's turn (the VAD's "
                  "`speech_stopped`) to the first frame of each kind leaving each stage, p50 / p95:", "",
                  "| stage.frame | " + " | ".join(f"{lv['sessions']} sessions" for lv in report["levels"]) + " |",
                  "|---|" + "---|" * len(report["levels"])]
        for k in keys:
            cells = [lv.get("stage_timings_ms", {}).get(k, {}) for lv in report["levels"]]
            lines.append(f"| {k} | " + " | ".join(f"{_ms(c.get('p50'))} / {_ms(c.get('p95'))}" for c in cells) + " |")
        lines.append("")
    lines += [f"![load]({png_name})", ""]
    return "\n".join(lines)


def plot_levels(report: dict, path: Path) -> None:
    """Two panels against the number of sessions: v2v p50 and p95 with the +100 ms target line (levels that
    did not hold real time crossed out), and the share of missed turns (bar colour: real time held or not)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from voice.fileutil import atomic_write

    levels, target = report["levels"], target_ms(report)
    k = [lv["sessions"] for lv in levels]
    nan = lambda x: np.nan if x is None else x  # noqa: E731
    fig, (lat, miss) = plt.subplots(1, 2, figsize=(11, 4.2))
    lat.plot(k, [nan(lv["v2v_ms"]["p50"]) for lv in levels], "o-", label="v2v p50")
    lat.plot(k, [nan(lv["v2v_ms"]["p95"]) for lv in levels], "s-", label="v2v p95")
    if target is not None:
        lat.axhline(target, color="red", linestyle="--", linewidth=1,
                    label=f"target: 1 session's p95 + {TARGET_OVER_ONE_SESSION_MS:.0f} ms = {target:.0f} ms")
    bad = [lv for lv in levels if not lv.get("real_time") and lv["v2v_ms"]["p95"] is not None]
    if bad:
        lat.plot([lv["sessions"] for lv in bad], [lv["v2v_ms"]["p95"] for lv in bad], "x", color="red",
                 markersize=12, markeredgewidth=2, label="not real time")
    lat.set_xticks(k)
    lat.set_xlabel("concurrent sessions")
    lat.set_ylabel("voice-to-voice (ms)")
    lat.set_title(f"v2v against sessions ({report.get('config', {}).get('pipeline', '?')})")
    lat.legend(fontsize=8)

    x = np.arange(len(levels))
    tried = [lv["turns"] + lv["missed_turns"] for lv in levels]
    share = [100 * lv["missed_turns"] / n if n else 0 for lv, n in zip(levels, tried)]
    miss.bar(x, share, color=["tab:green" if lv.get("real_time") else "tab:red" for lv in levels])
    for i, (lv, n) in enumerate(zip(levels, tried)):
        miss.text(i, share[i], f"{lv['missed_turns']}/{n}", ha="center", va="bottom", fontsize=8)
    miss.set_xticks(x, [str(s) for s in k])
    miss.set_ylim(0, max(10.0, max(share, default=0) * 1.2))
    miss.set_xlabel("concurrent sessions")
    miss.set_ylabel("missed turns (%)")
    miss.set_title("missed turns (green: real time held, red: not)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def write_level_reports(report: dict, json_path: Path) -> dict[str, Path]:
    """Write X.png (`plot_levels`) and X.md (`levels_markdown`) beside the JSON report X.json."""
    from voice.fileutil import atomic_write

    paths = {"png": Path(json_path).with_suffix(".png"), "md": Path(json_path).with_suffix(".md")}
    plot_levels(report, paths["png"])
    atomic_write(paths["md"], levels_markdown(report, paths["png"].name))
    return paths


# ---- CLI ---------------------------------------------------------------------------------------
def register(subparsers, registered: dict) -> None:
    p = subparsers.add_parser("loadtest", help="K real-time sessions against `voice serve`: v2v p95, memory, leaks")
    p.add_argument("--sessions", default="4", help="concurrent sessions; a comma list ramps up (e.g. 1,8,16,32)")
    p.add_argument("--minutes", type=float, default=1.0, help="duration of each level")
    p.add_argument("--pipeline", default="echo")
    p.add_argument("--warmup-s", type=float, default=30.0, help="memory baseline this long into each level")
    p.add_argument("--speech-dir", type=Path, default=SPEECH_DIR)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="hello option of every session, repeatable (e.g. turn_detection=silence)")
    p.add_argument("--speechlm-in-process", action="store_true",
                   help="the server runs the speech LM on a thread of its own process (voice serve's flag)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here (atomically), "
                   "and a plot and table beside it (same name, .png and .md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voice.fileutil import atomic_write_json

    levels = [int(x) for x in str(args.sessions).split(",") if x.strip()]
    if not levels or min(levels) < 1:
        log.error("--sessions needs positive integers")
        return 2
    from voice.bench.variants import parse_options

    try:
        options = tuple(parse_options(args.option).items())
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    cfg = LoadConfig(sessions=levels[0], seconds=args.minutes * 60.0, pipeline=args.pipeline, warmup_s=args.warmup_s,
                     options=options, server_args=("--speechlm-in-process",) if args.speechlm_in_process else ())

    async def main() -> dict:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await run_load(levels, cfg, args.speech_dir, stop)

    report = asyncio.run(main())
    text = json.dumps(report, indent=2)
    if args.out:
        atomic_write_json(args.out, report)
        written = write_level_reports(report, args.out)
        log.info("report: %s, %s, %s", args.out, written["png"], written["md"])
    print(text)
    return 0 if report["levels"] and not report["interrupted"] else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m voice.loadtest ...` (the same as `voice loadtest ...`)."""
    parser = argparse.ArgumentParser(prog="voice")
    register(parser.add_subparsers(dest="command"), {})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(["loadtest", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
