"""`voice bench` report plots: the empirical CDF of v2v per variant, the per-turn view and the stage breakdown."""

from __future__ import annotations

import numpy as np
import pytest

from voice.bench.report import ecdf_points, plot, plot_figure, summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _turn(variant: str, pipeline: str, v2v: float | None, **timings: float) -> dict:
    return {"variant": variant, "pipeline": pipeline, "v2v_ms": v2v, "end_silence_ms": 500,
            "timings_ms": timings or None, "error": None if v2v is not None else "no answer"}


def _records() -> list[dict]:
    """Two variants with answers (echo: 3 turns, cascade: 4) and one (`broken`) whose turns have no v2v."""
    return [_turn("echo", "echo", 560.0, **{"vad/end": 0.0, "echo/audio": 2.0}),
            _turn("echo", "echo", 540.0, **{"vad/end": 0.0, "echo/audio": 3.0}),
            _turn("echo", "echo", 610.0, **{"vad/end": 0.0, "echo/audio": 2.5}),
            _turn("cascade", "cascade", 1500.0, **{"asr/text": 300.0, "llm/text": 700.0, "tts/audio": 900.0}),
            _turn("cascade", "cascade", 1700.0, **{"asr/text": 350.0, "llm/text": 800.0, "tts/audio": 1000.0}),
            _turn("cascade", "cascade", 1300.0, **{"asr/text": 280.0, "llm/text": 650.0, "tts/audio": 850.0}),
            _turn("cascade", "cascade", 2100.0, **{"asr/text": 400.0, "llm/text": 1200.0, "tts/audio": 1500.0}),
            _turn("broken", "cascade", None),
            _turn("broken", "cascade", None)]


def test_ecdf_points_are_the_sorted_values_and_their_cumulative_fractions():
    x, y = ecdf_points([30.0, None, 10.0, 20.0, 10.0])
    assert x.tolist() == [10.0, 10.0, 20.0, 30.0]             # None (a turn without an answer) is left out
    assert y.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_ecdf_points_of_nothing_is_empty():
    x, y = ecdf_points([None, None])
    assert len(x) == 0 and len(y) == 0


def test_plot_writes_a_png(tmp_path):
    records = _records()
    path = tmp_path / "r.png"
    plot(summarize(records), records, path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_cdf_panel_has_one_step_line_per_variant_with_its_n_and_marked_percentiles():
    records = _records()
    fig = plot_figure(summarize(records), records)
    cdf, turns, stages = fig.axes
    assert cdf.get_xlabel() == "voice-to-voice (ms)" and turns.get_xlabel() == "voice-to-voice (ms)"
    steps = {line.get_label().split(",")[0]: line for line in cdf.get_lines()
             if not line.get_label().startswith("_") and len(line.get_xdata())}
    assert sorted(steps) == ["cascade", "echo"]
    x, y = steps["echo"].get_data()
    assert list(x) == [540.0, 540.0, 560.0, 610.0] and list(y) == pytest.approx([0, 1 / 3, 2 / 3, 1])
    # p50 and p95 marked at the percentiles the report's tables give (numpy's linear interpolation)
    cascade = [1300.0, 1500.0, 1700.0, 2100.0]
    marks = {line.get_label(): line.get_data() for line in cdf.get_lines()}["_cascade p50/p95"]
    assert list(marks[0]) == [np.percentile(cascade, 50), np.percentile(cascade, 95)] and list(marks[1]) == [0.5, 0.95]
    legend = [t.get_text() for t in cdf.get_legend().get_texts()]
    assert legend == ["echo, n=3: p50 560, p95 605 ms", "cascade, n=4: p50 1600, p95 2040 ms",
                      "broken (cascade): no v2v"]      # a variant without answers is named, not drawn
    assert "stage" in stages.get_title()
    fig.clf()


def test_plot_survives_no_v2v_at_all(tmp_path):
    records = [_turn("broken", "echo", None)]
    path = tmp_path / "none.png"
    plot(summarize(records), records, path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_browser_vs_bench_compares_the_same_clips():
    from voice.bench.report import BROWSER_GAP_LIMIT_MS, summarize

    bench = [{"variant": "echo", "pipeline": "echo", "item": f"c{i}", "v2v_ms": 200.0 + i} for i in range(4)]
    bench.append({"variant": "echo", "pipeline": "echo", "item": "c0", "v2v_ms": 210.0})     # c0 twice: its median
    page = [{"variant": "echo in the browser", "pipeline": "echo", "client": "browser", "item": f"c{i}",
             "v2v_ms": 250.0 + i} for i in range(3)]
    page.append({"variant": "echo in the browser", "pipeline": "echo", "client": "browser", "item": "c3",
                 "error": "no answer played in the browser for this clip"})
    s = summarize(bench + page)
    g = s["echo in the browser"]["browser_vs_bench_ms"]
    assert g["n"] == 3 and g["gap_per_clip"]["min"] == 45.0 and g["gap_per_clip"]["p50"] == 50.0   # c0: 250 - 205
    assert g["limit_ms"] == BROWSER_GAP_LIMIT_MS and g["met"] and g["session_underruns"] == 0
    assert "browser_vs_bench_ms" not in s["echo"] and g["underrun_turns"] == []
    page[1]["browser_underruns"], page[1]["browser_underrun_at_ms"] = 1, [40]
    g = summarize(bench + page)["echo in the browser"]["browser_vs_bench_ms"]
    assert g["underrun_turns"] == ["c1"] and g["underrun_at_ms"] == [40]
    slow = [{**r, "v2v_ms": r["v2v_ms"] + 100} if "v2v_ms" in r else r for r in page]
    assert not summarize(bench + slow)["echo in the browser"]["browser_vs_bench_ms"]["met"]
