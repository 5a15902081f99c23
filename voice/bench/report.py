"""Bench reports: summary statistics, machine description, and the .json / .md / .png files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np

from voice.bench.browser import BROWSER_SUFFIX
from voice.bench.variants import Variant, format_options

ROOT = Path(__file__).resolve().parents[2]
ECHO_TARGET_MS = 50.0   # Foundation issue: echo v2v minus end-of-turn silence, p95 over the carried recordings (voice/assets/speech)
FALSE_INTERRUPTION_LIMIT = 0.05   # issue 14: noises, backchannels and echo that stop the answer
PREMATURE_LIMIT = 0.03   # issue 14: answers that start while the user only pauses, share of paused turns
BROWSER_GAP_LIMIT_MS = 80.0   # issue 13: the browser's own v2v above the bench's, same pipeline and clips
METRICS = ("v2v_ms", "v2v_played_ms", "v2v_minus_end_silence_ms", "first_audio_ms", "speech_stopped_ms",
           "vad_end_error_ms", "vad_start_error_ms", "endpointing_ms", "barge_in_clear_ms", "barge_in_last_audio_ms",
           "barge_in_audio_after_clear_ms",
           "browser_decided_ms", "browser_arrived_ms", "browser_buffered_ms", "browser_output_ms")


def machine() -> dict:
    """CPU model, cores, OS, Python, load average."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def git_commit() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or "none (no commit yet)",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def stats(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return {"n": 0}
    return {"n": int(len(v)), "p50": round(float(np.percentile(v, 50)), 1), "p95": round(float(np.percentile(v, 95)), 1),
            "mean": round(float(v.mean()), 1), "min": round(float(v.min()), 1), "max": round(float(v.max()), 1)}


def breakdown(recs: list[dict]) -> dict:
    """Where v2v goes, p50 / p95 of each part: VAD stamp late vs the true end, the VAD's silence wait beyond
    end_silence_ms (whole 32 ms windows), audio transport into the server (client chunking), and the
    pipeline plus the way back (first answer sample after the end-of-turn event)."""
    full = [r for r in recs if None not in (r.get("v2v_ms"), r.get("vad_end_error_ms"), r.get("endpointing_ms"),
                                            r.get("speech_stopped_ms"))]
    parts = {
        "vad_stamp_late": [r["vad_end_error_ms"] for r in full],
        "end_of_turn_wait": [r["endpointing_ms"] for r in full],
        "silence_wait_beyond_config": [r["endpointing_ms"] - r["end_silence_ms"] for r in full
                                       if r.get("turn_detection", "silence") == "silence"],
        "audio_in_transport": [r["speech_stopped_ms"] - r["vad_end_error_ms"] - r["endpointing_ms"] for r in full],
        "pipeline_and_audio_out": [r["v2v_ms"] - r["speech_stopped_ms"] for r in full],
    }
    return {k: {q: v for q, v in stats(vals).items() if q in ("p50", "p95")} for k, vals in parts.items()
            if full and vals}


def variants_of(config: dict) -> list[Variant]:
    """The run's variants from a report's `meta.config`."""
    return [Variant(name, v["pipeline"], v["options"]) for name, v in config.get("variants", {}).items()]


def summarize(records: list[dict], config: dict | None = None) -> dict:
    """Per variant: its pipeline, hello options and the ones the server ignored, statistics of every metric,
    median stage timings, correctness, failures. `config` is `meta.config` (global and per-variant options)."""
    config = config or {}
    own = {v.name: v.options for v in variants_of(config)}
    by_name: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_name[r["variant"]].append(r)
    out = {}
    for name, recs in by_name.items():
        s = {"pipeline": recs[0]["pipeline"], "options": {**config.get("options", {}), **own.get(name, {})},
             "ignored_options": sorted({k for r in recs for k in r.get("ignored_options") or []})}
        metrics = {m: stats([r.get(m) for r in recs]) for m in METRICS}
        s.update({m: v for m, v in metrics.items() if v["n"]})
        keys = sorted({k for r in recs for k in (r.get("timings_ms") or {})})
        s["stage_timings_ms_p50"] = {k: stats([(r.get("timings_ms") or {}).get(k) for r in recs]).get("p50") for k in keys}
        checked = [r["correct"] for r in recs if r.get("correct") is not None]
        s["correct"] = {"n": len(checked), "rate": round(sum(checked) / len(checked), 3)} if checked else None
        s["v2v_breakdown_ms"] = breakdown(recs)
        s["turns"] = len(recs)
        s["failures"] = sum(1 for r in recs if r.get("error") or r.get("v2v_ms") is None)
        s["turn_detection"] = sorted({r.get("turn_detection", "silence") for r in recs})
        reasons = [r.get("end_reason") for r in recs if r.get("end_reason")]
        s["end_reasons"] = {k: reasons.count(k) for k in sorted(set(reasons))}
        early = [-r["answer_started_ms"] for r in recs if r.get("answer_started_ms") is not None]
        taken_back = sum(r.get("answers_taken_back") or 0 for r in recs)
        s["speculative_starts"] = ({"n": len(early), "ahead_ms": stats(early), "taken_back": taken_back}
                                   if early or taken_back else None)
        noise = [r for r in recs if r.get("false_interruption") is not None]
        if noise:
            kinds = sorted({r["barge_in_kind"] for r in noise})
            rate = sum(r["false_interruption"] for r in noise) / len(noise)
            s["false_interruption"] = {
                "n": len(noise), "rate": round(rate, 4), "limit": FALSE_INTERRUPTION_LIMIT,
                "met": rate <= FALSE_INTERRUPTION_LIMIT,
                "by_kind": {k: round(sum(r["false_interruption"] for r in noise if r["barge_in_kind"] == k)
                                     / sum(1 for r in noise if r["barge_in_kind"] == k), 4) for k in kinds}}
        paused = [r["premature_end"] for r in recs if r.get("premature_end") is not None]
        if paused:
            s["premature_end"] = {"n": len(paused), "rate": round(sum(paused) / len(paused), 4),
                                  "limit": PREMATURE_LIMIT, "met": sum(paused) / len(paused) <= PREMATURE_LIMIT}
        if recs[0].get("client") == "browser":
            s["browser_vs_bench_ms"] = browser_vs_bench(recs, by_name.get(name.removesuffix(BROWSER_SUFFIX), []))
        if s["pipeline"] == "echo" and "v2v_minus_end_silence_ms" in s:
            p95 = s["v2v_minus_end_silence_ms"]["p95"]
            s["target"] = {"what": "p95 of v2v minus end_silence_ms", "limit_ms": ECHO_TARGET_MS,
                           "p95_ms": p95, "met": p95 <= ECHO_TARGET_MS}
        out[name] = s
    return out


def browser_vs_bench(browser: list[dict], bench: list[dict]) -> dict | None:
    """The page's v2v against the bench's on the same clips: both distributions, and the gap clip by clip."""
    own: dict[str, list[float]] = defaultdict(list)
    stamp: dict[str, list[float]] = defaultdict(list)
    for r in bench:
        if r.get("v2v_ms") is not None:
            own[r["item"]].append(r["v2v_ms"])
            if r.get("vad_end_error_ms") is not None:
                stamp[r["item"]].append(r["v2v_ms"] - r["vad_end_error_ms"])
    pairs = [(r["v2v_ms"], float(np.median(own[r["item"]]))) for r in browser
             if r.get("v2v_ms") is not None and own.get(r["item"])]
    if not pairs:
        return None
    # the page times from the VAD's stamp: the bench's v2v from the same stamp isolates what the page adds
    same_end = [r["v2v_ms"] - float(np.median(stamp[r["item"]])) for r in browser
                if r.get("v2v_ms") is not None and stamp.get(r["item"])]
    page, ref = stats([a for a, _ in pairs]), stats([b for _, b in pairs])
    above = {"p50": round(page["p50"] - ref["p50"], 1), "p95": round(page["p95"] - ref["p95"], 1)}
    underruns = max((r.get("browser_session_underruns") or 0 for r in browser), default=0)
    underrun_turns = [r.get("turn", r["item"]) for r in browser if r.get("browser_underruns")]
    underrun_at_ms = [a for r in browser for a in (r.get("browser_underrun_at_ms") or [])]
    return {"n": len(pairs), "browser": page, "bench": ref, "above": above, "gap_per_clip": stats([a - b for a, b in pairs]),
            "limit_ms": BROWSER_GAP_LIMIT_MS, "met": max(above.values()) <= BROWSER_GAP_LIMIT_MS,
            "session_underruns": underruns, "underrun_turns": underrun_turns, "underrun_at_ms": underrun_at_ms,
            "gap_per_clip_from_the_stamp": stats(same_end)}


def write_reports(out_dir: Path, stem: str, meta: dict, records: list[dict]) -> dict[str, Path]:
    """Write <stem>.json, .md and .png into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(records, meta["config"])
    paths = {ext: out_dir / f"{stem}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps({"meta": meta, "summary": summary, "turns": records}, indent=1) + "\n")
    paths["md"].write_text(markdown(meta, summary, records, paths["png"].name))
    plot(summary, records, paths["png"])
    return paths


def _row(name: str, st: dict | None) -> str:
    if not st or not st.get("n"):
        return f"| {name} | - | - | - | - | - |"
    return f"| {name} | {st['n']} | {st['p50']:.0f} | {st['p95']:.0f} | {st['min']:.0f} | {st['max']:.0f} |"


def markdown(meta: dict, summary: dict, records: list[dict], png_name: str) -> str:
    m, cfg = meta["machine"], meta["config"]
    lines = [f"# Latency report: {meta['name']}", "",
             f"- date: {meta['date']}", f"- command: `{meta['command']}`",
             f"- machine: {m['cpu_model']}, {m['cpu_cores']} cores, {m['os']}, Python {m['python']}",
             f"- load average (1/5/15 min) at start {meta['load_start']}, at end {meta['load_end']} "
             "(the cores are shared with other jobs: numbers are noisy)",
             f"- git: {meta['git']['commit']}{' (uncommitted changes)' if meta['git']['dirty'] else ''}",
             f"- server: {meta['server']}; set: {cfg['set']} ({meta['n_items']} clips)",
             f"- variants: {'; '.join(v.describe() for v in variants_of(cfg))}",
             f"- options of every variant (--option): {format_options(cfg['options']) or 'none'}",
             f"- config: {json.dumps(cfg['run'])}", ""]
    lines += ["All times in ms. v2v = arrival at the client of the first answer chunk holding a sample above "
              f"{cfg['run']['silence_threshold']} (about -40 dBFS) minus the true end of the user's speech "
              "(reviewed energy reference). A variant's hello options are the --option ones with its own over them "
              "(the set may add per-turn ones, such as the dialogue's clock). See docs/benchmarking.md.", ""]
    for name, s in summary.items():
        lines += [f"## {name}", "", f"Pipeline `{s['pipeline']}`, hello options: {format_options(s['options']) or 'none'}.", ""]
        if s["ignored_options"]:
            lines += [f"**Options ignored by the server: {', '.join(s['ignored_options'])}** (a typo, or another "
                      "pipeline's option: `ready.ignored_options`, docs/protocol.md).", ""]
        lines += [f"{s['turns']} turns, {s['failures']} without a measured answer. Turn detection: "
                  f"{', '.join(s.get('turn_detection') or ['silence'])}; turns ended by "
                  f"{', '.join(f'{k} {n}' for k, n in (s.get('end_reasons') or {}).items()) or '-'}.", ""]
        if s.get("speculative_starts"):
            sp = s["speculative_starts"]
            ahead = (f", by p50 {sp['ahead_ms']['p50']:.0f} ms (p95 {sp['ahead_ms']['p95']:.0f} ms) ahead"
                     if sp["n"] else "")
            lines += [f"Answers started speculatively, before the end was confirmed: {sp['n']} of {s['turns']} turns"
                      f"{ahead}; {sp['taken_back']} started at a pause and taken back when the user went on.", ""]
        if s.get("false_interruption"):
            fi = s["false_interruption"]
            by_kind = ", ".join(f"{k} {v:.0%}" for k, v in fi["by_kind"].items())
            lines += [f"**False interruptions (a noise, a backchannel or the assistant's own voice stopped the answer): "
                      f"{fi['rate']:.1%} of {fi['n']} ({by_kind}; target <= {fi['limit']:.0%}: "
                      f"{'met' if fi['met'] else 'NOT met'}).**", ""]
        if s.get("premature_end"):
            pe = s["premature_end"]
            lines += [f"**Premature end of turn (the VAD ended the turn during a pause inside it): {pe['rate']:.1%} of "
                      f"{pe['n']} paused turns (target <= {pe['limit']:.0%}: {'met' if pe['met'] else 'NOT met'}).**", ""]
        if s.get("browser_vs_bench_ms"):
            g = s["browser_vs_bench_ms"]
            lines += [f"**The page's own v2v against the bench's on the same {g['n']} clips: p50 {g['browser']['p50']:.0f} "
                      f"vs {g['bench']['p50']:.0f} ms ({g['above']['p50']:+.0f}), p95 {g['browser']['p95']:.0f} vs "
                      f"{g['bench']['p95']:.0f} ms ({g['above']['p95']:+.0f}); per clip p50 {g['gap_per_clip']['p50']:+.0f}"
                      f" ms (target: at most +{g['limit_ms']:.0f}: {'met' if g['met'] else 'NOT met'}).** The page "
                      "times from the VAD's stamped end of speech to the sound leaving its output device "
                      f"(arrived + buffered + output below); the bench's v2v counted from that stamp too, the page "
                      f"adds p50 {g['gap_per_clip_from_the_stamp'].get('p50', 0):.0f} ms per clip. Playback underruns in "
                      f"the page's session: {g['session_underruns']}"
                      + (f" (in the answers of turns {', '.join(map(str, g['underrun_turns']))})" if g.get("underrun_turns") else "")
                      + (f", at {', '.join(f'{a} ms' for a in g['underrun_at_ms'])} into the answer"
                         if g.get("underrun_at_ms") else "")
                      + ".", ""]
        if "target" in s:
            t = s["target"]
            lines += [f"**Echo floor: v2v minus end_silence_ms = {t['p95_ms']:.0f} ms at p95 "
                      f"(target <= {t['limit_ms']:.0f} ms: {'met' if t['met'] else 'NOT met'}).**", ""]
        lines += ["| metric | n | p50 | p95 | min | max |", "|---|---|---|---|---|---|"]
        lines += [_row(k, s.get(k)) for k in METRICS if k in s]
        if s.get("v2v_breakdown_ms"):
            lines += ["", "Where v2v goes (p50 / p95 of each part; see docs/benchmarking.md):", ""]
            lines += [f"- {k}: {v.get('p50')} / {v.get('p95')}" for k, v in s["v2v_breakdown_ms"].items()]
        if s.get("stage_timings_ms_p50"):
            lines += ["", "Stage timings (tracer, ms after the VAD's end of turn, p50):", ""]
            lines += [f"- {k}: {v}" for k, v in s["stage_timings_ms_p50"].items()]
        lines += ["", f"Answer correctness: {s['correct']['rate']:.0%} of {s['correct']['n']}" if s["correct"]
                  else "Answer correctness: not checked (this set has no expected answers).", ""]
    lines += ["## Turns", "", "| variant | turn | file | v2v | v2v - end silence | VAD end error | endpointing | answer s | answer text |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        text = (r.get("answer_text") or r.get("error") or "").replace("|", "/")[:60]
        lines.append(f"| {r['variant']} | {r.get('turn')} | {r['file']} | {_f(r.get('v2v_ms'))} | "
                     f"{_f(r.get('v2v_minus_end_silence_ms'))} | {_f(r.get('vad_end_error_ms'))} | "
                     f"{_f(r.get('endpointing_ms'))} | {r.get('answer_audio_s', '-')} | {text} |")
    lines += ["", f"![latency]({png_name})", ""]
    return "\n".join(lines)


def _f(x) -> str:
    return "-" if x is None else f"{x:.0f}"


def ecdf_points(values: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF's step points: the values sorted (None left out) and the fraction of values at or
    below each, k / n for k = 1..n. Empty arrays when there is no value."""
    x = np.sort(np.asarray([v for v in values if v is not None], dtype=float))
    return x, np.arange(1, len(x) + 1) / max(1, len(x))


def _label(name: str, pipeline: str) -> str:
    """A variant's name, with its pipeline when that differs."""
    return name if pipeline == name else f"{name} ({pipeline})"


def plot_figure(summary: dict, records: list[dict]):
    """The report's figure, three panels sharing the variants' colours:

    - the empirical CDF of v2v per variant (a step line each, p50 and p95 marked, n in the legend);
    - v2v per turn: a horizontal box (quartiles, whiskers at 1.5 IQR) with every turn as a point, same x axis;
    - the stage breakdown: the tracer's median ms after the VAD's end of turn, per stage and frame kind.

    A variant without any v2v (every turn failed) is named in the legend and the turn panel, not drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    data = [[r["v2v_ms"] for r in records if r["variant"] == p and r.get("v2v_ms") is not None] for p in names]
    labels = [_label(p, summary[p]["pipeline"]) for p in names]
    fig, (cdf, turns, stages) = plt.subplots(1, 3, figsize=(15, 4.5), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    turns.sharex(cdf)

    for i, (label, d) in enumerate(zip(labels, data)):
        color = f"C{i}"
        if not d:
            cdf.plot([], [], color=color, linestyle=":", label=f"{label}: no v2v")
            turns.text(0.02, i, "no v2v", transform=turns.get_yaxis_transform(), va="center", fontsize=8, color=color)
            continue
        x, y = ecdf_points(d)
        p50, p95 = np.percentile(d, 50), np.percentile(d, 95)
        cdf.plot(np.r_[x[0], x], np.r_[0.0, y], drawstyle="steps-post", color=color,
                 label=f"{label}, n={len(d)}: p50 {p50:.0f}, p95 {p95:.0f} ms")
        cdf.plot([p50, p95], [0.5, 0.95], "o", color=color, markersize=5, label=f"_{names[i]} p50/p95")
        turns.boxplot([d], positions=[i], orientation="horizontal", showfliers=False, widths=0.5,
                      medianprops={"color": "black"})
        turns.scatter(d, i + np.random.default_rng(i).uniform(-0.12, 0.12, len(d)), s=10, alpha=0.6, color=color)
    for q in (0.5, 0.95):
        cdf.axhline(q, color="grey", linewidth=0.6, linestyle="--")
    if not any(data):
        cdf.text(0.5, 0.5, "no v2v measured", transform=cdf.transAxes, ha="center")
    cdf.set_ylim(0, 1.02)
    cdf.set_xlabel("voice-to-voice (ms)")
    cdf.set_ylabel("fraction of turns")
    cdf.set_title("v2v distribution (CDF; dots: p50, p95)")
    cdf.legend(fontsize=7, loc="lower right")
    turns.set_yticks(range(len(names)), labels, fontsize=8)
    turns.set_ylim(len(names) - 0.5, -0.5)                     # first variant on top
    turns.set_xlabel("voice-to-voice (ms)")
    turns.set_title("v2v per turn (box: quartiles)")

    keys = sorted({k for p in names for k in summary[p].get("stage_timings_ms_p50", {})})
    width = 0.8 / max(1, len(names))
    for j, p in enumerate(names):
        vals = [summary[p].get("stage_timings_ms_p50", {}).get(k) or 0 for k in keys]
        stages.barh(np.arange(len(keys)) + j * width, vals, height=width, color=f"C{j}", label=labels[j])
    stages.set_yticks(np.arange(len(keys)) + width * (len(names) - 1) / 2, keys, fontsize=7)
    stages.invert_yaxis()                                      # stages in name order, first variant on top
    stages.set_xlabel("ms after the VAD's end of turn (p50)")
    stages.set_title("stage breakdown (tracer)")
    stages.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot(summary: dict, records: list[dict], path: Path) -> None:
    """Write `plot_figure` to `path` (PNG)."""
    fig = plot_figure(summary, records)          # selects the Agg backend first
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
