"""`voice loadtest --out X.json` also writes X.png and X.md: v2v p50 / p95 against sessions, the +100 ms target."""

from __future__ import annotations

from voice.loadtest import levels_markdown, over_single_by_clip, plot_levels, target_ms, write_level_reports

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _level(sessions: int, p50: float | None, p95: float | None, turns: int, missed: int, real_time: bool) -> dict:
    """A level as run_level reports it (the fields the plot and table read, and a few more)."""
    return {"sessions": sessions, "seconds": 60.0, "pipeline": "echo", "interrupted": False, "turns": turns,
            "missed_turns": missed, "errors": [], "session_failures": [],
            "v2v_ms": {"p50": p50, "p95": p95, "max": p95},
            "client_late_ms": {"p50": 0.5, "p95": 1.0, "max": 3.0}, "server_cpu_cores": 0.05 * sessions,
            "real_time": real_time, "started_early": turns // 2}


def _report() -> dict:
    return {"config": {"pipeline": "echo", "seconds": 60.0}, "interrupted": False,
            "machine": {"cpus": 2, "loadavg_1_5_15": [1.0, 1.0, 1.0]},
            "levels": [_level(1, 600.0, 700.0, 9, 0, True), _level(4, 620.0, 790.0, 36, 0, True),
                       _level(8, 700.0, 850.0, 70, 0, True), _level(16, 900.0, 2000.0, 60, 12, False)],
            "max_real_time_sessions": 8}


def test_target_is_one_sessions_p95_plus_100_ms():
    assert target_ms(_report()) == 800.0
    no_single = {"levels": [_level(4, 620.0, 790.0, 36, 0, True)]}
    assert target_ms(no_single) is None                      # no 1-session level: no baseline to add 100 ms to


def test_markdown_has_a_row_per_level_with_the_target_verdict():
    md = levels_markdown(_report(), "lt.png")
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "4", "8", "16"]
    four, eight, sixteen = rows[1].split("|"), rows[2].split("|"), rows[3].split("|")
    assert "+90" in four[6] and "yes" in four[7]             # 790 <= 700 + 100
    assert "+150" in eight[6] and "no" in eight[7]           # 850 > 800
    assert sixteen[3].strip() == "12" and "no" in sixteen[9]  # missed turns; not real time
    assert four[11].strip() == "18"                          # answers started before the end was confirmed
    assert "800 ms" in md and "![load](lt.png)" in md


def test_plot_levels_writes_a_png(tmp_path):
    path = tmp_path / "lt.png"
    plot_levels(_report(), path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_plot_levels_survives_a_level_without_turns_and_no_single_session_level(tmp_path):
    report = {"config": {"pipeline": "cascade"}, "levels": [_level(2, None, None, 0, 3, False)]}
    path = tmp_path / "empty.png"
    plot_levels(report, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert "| 2 | 0 | 3 | - | - | - |" in levels_markdown(report, "empty.png")


def test_write_level_reports_puts_png_and_md_beside_the_json(tmp_path):
    out = tmp_path / "reports" / "load.json"
    out.parent.mkdir()
    paths = write_level_reports(_report(), out)
    assert paths == {"png": tmp_path / "reports" / "load.png", "md": tmp_path / "reports" / "load.md"}
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert "| 16 |" in paths["md"].read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["load.md", "load.png"]   # no temporary left


def test_loadtest_options_parse_as_the_bench_does(monkeypatch):
    """`voice loadtest --option` goes through the bench's parser and reaches every session's hello;
    `--speechlm-in-process` reaches the server's command line."""
    import pytest

    import voice.loadtest as lt
    from voice.bench.variants import parse_options

    assert parse_options(["hear_frames=25"]) == {"hear_frames": 25.0}
    assert parse_options(["turn_detection=silence"]) == {"turn_detection": "silence"}
    for bad in ("hear_frames", "=3"):
        with pytest.raises(ValueError):
            parse_options([bad])
    seen = {}

    async def fake_run_load(levels, cfg, speech_dir, stop):
        seen["options"], seen["server_args"] = dict(cfg.options), cfg.server_args
        return {"levels": [], "interrupted": True}

    monkeypatch.setattr(lt, "run_load", fake_run_load)
    args = lt.argparse.Namespace(sessions="1", minutes=0.1, pipeline="echo", warmup_s=1.0, speech_dir=None,
                                 option=["hear_frames=25", "turn_detection=silence"], out=None,
                                 speechlm_in_process=False)
    lt.run(args)
    assert seen["options"] == {"hear_frames": 25.0, "turn_detection": "silence"} and seen["server_args"] == ()
    lt.run(lt.argparse.Namespace(**{**vars(args), "speechlm_in_process": True}))
    assert seen["server_args"] == ("--speechlm-in-process",)          # voice serve's flag
    assert lt.run(lt.argparse.Namespace(**{**vars(args), "option": ["bad"]})) == 2


def test_same_clips_over_one_session_cancels_the_clips_own_turn_taking():
    single = {"turn_v2v_ms": [["a", 300.0], ["b", 900.0], ["c", 310.0], ["a", 320.0]]}   # b waits for the fallback
    loaded = {"turn_v2v_ms": [["a", 350.0], ["b", 950.0], ["c", 360.0], ["b", 960.0], ["d", 5000.0]]}
    paired = over_single_by_clip(loaded, single)
    assert paired["turns"] == 4                     # d was never played alone: left out
    assert paired["p50"] == 50.0 and 50.0 <= paired["p95"] <= 60.0   # b's 900 ms alone is not load
    report = _report()
    report["levels"][1]["over_single_by_clip_ms"] = paired
    four = [line for line in levels_markdown(report, "lt.png").splitlines() if line.startswith("| 4 |")][0]
    assert "+50 / +" in four.split("|")[8]


def test_the_tracers_first_codes_and_audio_per_level_show_where_the_load_adds_time():
    from voice.loadtest import stage_timings

    turns = [{"speechlm.Codes": 50.0 + i, "codec_decode.AssistantAudio": 60.0 + i, "vad.UserAudio": 1.0,
              "speechlm.AssistantText": 30.0} for i in range(20)] + [{"speechlm.Codes": 300.0}]
    timings = stage_timings(turns)
    assert set(timings) == {"speechlm.Codes", "codec_decode.AssistantAudio"}     # the answer's first codes and audio
    assert timings["speechlm.Codes"]["p50"] == 60.0 and timings["speechlm.Codes"]["p95"] >= 69.0
    assert timings["codec_decode.AssistantAudio"]["p50"] == 69.5           # over the turns that have it
    report = _report()
    report["levels"][0]["stage_timings_ms"] = timings
    report["levels"][1]["stage_timings_ms"] = stage_timings([{"speechlm.Codes": 90.0}])
    md = levels_markdown(report, "lt.png")
    codes = [line for line in md.splitlines() if line.startswith("| speechlm.Codes |")][0].split("|")
    assert codes[2].strip().startswith("60 / ") and codes[3].strip() == "90 / 90" and codes[4].strip() == "- / -"
    rows = [line.split("|")[1].strip() for line in md.splitlines() if ".Codes |" in line or ".AssistantAudio |" in line]
    assert rows == ["speechlm.Codes", "codec_decode.AssistantAudio"]         # in the order the answer goes
