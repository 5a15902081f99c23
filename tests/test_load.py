"""A short bounded load test on loopback: `voice serve` in a child process, 4 real-time sessions for 20 s."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest

from voice.loadtest import LoadConfig, passes, run_load
from tests.conftest import ROOT, run

pytestmark = pytest.mark.slow


def test_four_sessions_for_twenty_seconds(speech_dir):
    cfg = LoadConfig(sessions=4, seconds=20.0, warmup_s=6.0)
    report = run(run_load([4], cfg, speech_dir, asyncio.Event()), timeout_s=120)
    level = report["levels"][0]
    assert report["server_exit_status"] == 0 and not report["interrupted"]
    assert level["turns"] >= 8 and level["missed_turns"] == 0 and not level["errors"] and not level["session_failures"]
    # echo with the end-of-turn model (the load test's server runs the defaults): a 200 ms pause at the
    # least, or the 1.5 s fallback, + a VAD window; a loaded server adds to it
    assert 150 <= level["v2v_ms"]["p50"] <= 1600 and level["v2v_ms"]["p95"] <= 2200
    # most answers start at the early question, before the end is confirmed (the VAD's speculative start)
    assert 0 < level["started_early"] <= level["turns"]
    assert level["rss_growth_after_warmup_pct"] <= 5.0
    assert level["tasks_before_after"][0] == level["tasks_before_after"][1]
    assert level["fds_before_after"][0] == level["fds_before_after"][1]
    assert passes(level, level)


def test_sigterm_flushes_the_report_and_leaves_no_partial_file(tmp_path, speech_dir):
    out = tmp_path / "reports" / "load.json"
    proc = subprocess.Popen([sys.executable, "-m", "voice.loadtest", "--sessions", "2", "--minutes", "2",
                             "--speech-dir", str(speech_dir), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(15)                       # the server starts (~5 s), then a few turns are measured
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status == 1                       # interrupted, reported as such
    report = json.loads(out.read_text())
    assert report["interrupted"] and report["levels"][0]["interrupted"]
    assert report["server_exit_status"] == 0  # the server child was shut down cleanly too
    assert sorted(p.name for p in out.parent.iterdir()) == ["load.json", "load.md", "load.png"]   # plot and table too
