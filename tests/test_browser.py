"""Browser client in headless Chromium (fake microphone = a real speech WAV) against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXED_RULES
from voice import pipelines
from voice.audio import read_wav, write_wav
from voice.bench.browser import chromium_args

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
from tests.conftest import SPEECH_DIR  # noqa: E402

SPEECH = SPEECH_DIR
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The README's screenshot is refreshed only on request (VOICE_UPDATE_SCREENSHOT=1), so a test
# run leaves the checkout clean; otherwise it goes to a temporary folder.
SCREENSHOT = ROOT / "docs" / "client.png" if os.environ.get("VOICE_UPDATE_SCREENSHOT") else \
    Path(tempfile.gettempdir()) / "voice-client.png"


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory) -> Path:
    """0.5 s silence, a real spoken command, 2.5 s silence; Chromium loops it as the microphone."""
    pcm, rate = read_wav(SPEECH / "ps_goforward.wav")
    silence = lambda s: np.zeros(int(s * rate), np.float32)  # noqa: E731
    path = tmp_path_factory.mktemp("mic") / "fake_mic.wav"
    write_wav(path, np.concatenate([silence(0.5), pcm, silence(2.5)]), rate)
    return path


def _skip_without_browser() -> None:
    pytest.importorskip("playwright.async_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")


@contextlib.asynccontextmanager
async def chromium(args: list[str], init_script: str | None = None):
    """A fresh Chromium page (running `init_script` before the page's own); page errors fail the test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 640})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            if init_script:
                await page.add_init_script(init_script)
            yield page
            assert not errors, errors
        finally:
            await browser.close()


async def _with_page(pipeline: str, args: list[str], body, query: str = "", vad_defaults: dict | None = None):
    from voice.server.app import ServerConfig, VoiceServer

    server = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES if vad_defaults is None else vad_defaults,
                                      pipeline=pipeline))
    await server.start()
    try:
        async with chromium(args) as page:
            await page.goto(f"http://127.0.0.1:{server.port}/{query}")
            await body(page)
    finally:
        await server.stop()


async def _stats(page) -> dict:
    return await page.evaluate("() => JSON.parse(JSON.stringify(window.voiceStats))")


async def _wait(page, condition: str, timeout_s: float) -> None:
    await page.wait_for_function(condition, timeout=timeout_s * 1000, polling=50)


def test_the_default_turn_taking_answers_in_the_browser(fake_mic):
    """The server's own defaults (the end-of-turn and barge-in models, speculative start) with the browser's
    audio: the turn is answered, sooner than the 1.5 s fallback silence would allow at its median."""
    _skip_without_browser()

    async def body(page):
        await page.click("#connect")
        await _wait(page, "window.voiceStats.latenciesMs.length >= 3", 60)
        s = await _stats(page)
        assert not s["errors"] and s["underruns"] == 0
        latencies = sorted(s["latenciesMs"][:3])
        # the browser's own v2v (jitter buffer and output latency included). The log-mel model of 2026-12-03
        # called this recording over at its first checks (431-467 ms); the Whisper-front-end model rates it
        # 0.52-0.94, under its 0.95, so the late threshold (0.5 from 800 ms of silence) ends it at the check
        # after 800 ms: about 1.1 s, where the 1.5 s fallback plus that overhead (about 250 ms) is 1.75 s
        assert latencies[1] < 1400, latencies

    asyncio.run(_with_page("echo", chromium_args(fake_mic), body, vad_defaults={}))


def test_an_answer_that_runs_dry_is_an_underrun_at_its_point_in_the_answer(fake_mic):
    """A pipeline whose answer stops for 0.5 s after its first 0.1 s: the page's jitter buffer runs dry there, and
    the turn records how far into the answer (what `voice bench --browser` reports per clip)."""
    _skip_without_browser()
    from voice.frames import AssistantAudio, SpeechStopped, TurnEnd
    from voice.runtime.stage import Stage

    tone = lambda s: (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * s)) / 16000)).astype(np.float32)  # noqa: E731

    class GappyAnswer(Stage):
        name = "gappy"

        async def process(self, frame):
            if isinstance(frame, SpeechStopped):          # (a speculative one: the session holds the answer)
                yield AssistantAudio(turn_id=frame.turn_id, pcm=tone(0.1), sample_rate_hz=16000)
                await asyncio.sleep(0.5)
                yield AssistantAudio(turn_id=frame.turn_id, pcm=tone(0.2), sample_rate_hz=16000)
                yield TurnEnd(turn_id=frame.turn_id)

    async def body(page):
        await page.click("#connect")
        await _wait(page, "window.voiceStats.turns.some((t) => t.underrunAtMs)", 60)
        s = await _stats(page)
        turn = next(t for t in s["turns"] if t.get("underrunAtMs"))
        assert turn["underruns"] == 1 and 80 <= turn["underrunAtMs"][0] <= 130, turn   # the first 0.1 s played
        assert not s["errors"]

    pipelines.register(pipelines.PipelineDef(name="gappy", description="an answer with a gap (test)",
                                             build=lambda options, models: [GappyAnswer()],
                                             output_sample_rate_hz=lambda options, models: 16000))
    try:
        asyncio.run(_with_page("gappy", chromium_args(fake_mic), body))
    finally:
        del pipelines._REGISTRY["gappy"]


@pytest.mark.parametrize("pipeline", sorted(pipelines.available()))
def test_turn_is_answered_and_played(fake_mic, pipeline):
    """Speech from the fake microphone goes out; the answer comes back, is played, and the UI shows the turn."""
    _skip_without_browser()

    async def body(page):
        await page.wait_for_function("document.querySelectorAll('#pipeline option').length > 0")
        await page.select_option("#pipeline", pipeline)
        await page.click("#connect")
        await _wait(page, "window.voiceStats.latenciesMs.length >= 1", 90)
        await _wait(page, "window.voiceStats.samplesPlayed > 0 && window.voiceStats.bufferedSamples === 0", 30)
        s = await _stats(page)
        assert s["samplesSent"] > 16000 and s["samplesReceived"] > 0
        assert s["samplesPlayed"] > 0 and s["underruns"] == 0 and not s["errors"]
        assert 0 < s["latenciesMs"][0] < 10000
        turn = page.locator("#turns li").first
        assert (await turn.locator(".latency").inner_text()).endswith(" ms")
        assert "You:" in await turn.inner_text()
        if pipeline == "echo":   # the echo answer is the user's own speech: about as long as the turn
            context_rate = await page.evaluate("() => new AudioContext().sampleRate")
            spoken_s = s["turns"][0]["speechEnd"] - s["turns"][0]["speechStart"]
            assert s["samplesReceived"] / 16000 >= spoken_s
            assert s["samplesPlayed"] / context_rate == pytest.approx(s["samplesReceived"] / 16000, abs=0.05)

    asyncio.run(_with_page(pipeline, chromium_args(fake_mic), body))


def test_interrupt_empties_the_playback_buffer_and_screenshot(fake_mic):
    """An interrupt during playback flushes the worklet's buffer at once; the last state is saved as docs/client.png."""
    _skip_without_browser()

    async def body(page):
        await page.click("#connect")
        await _wait(page, "window.voiceStats.latenciesMs.length >= 1 && window.voiceStats.bufferedSamples === 0", 60)
        # the next loop of the fake microphone: wait until its answer is playing with a full buffer
        await _wait(page, "window.voiceStats.latenciesMs.length >= 2 && window.voiceStats.bufferedSamples > 20000", 30)
        before = await _stats(page)
        await page.click("#interrupt")
        await _wait(page, "window.voiceStats.bufferedSamples === 0 && !window.voiceStats.playing", 0.3)
        after = await _stats(page)
        assert after["flushedSamples"] - before["flushedSamples"] > 20000 - 2000
        assert after["clears"] >= before["clears"] + 1
        await _wait(page, "window.voiceStats.clears >= 2", 5)    # the server's clear event followed
        await page.wait_for_timeout(300)
        assert (await _stats(page))["bufferedSamples"] == 0
        assert await page.locator("#turns li .interrupted").count() == 1
        await _wait(page, "window.voiceStats.latenciesMs.length >= 3", 30)   # and the session goes on
        await page.wait_for_timeout(2500)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT))
        # "New conversation": the server confirms, the list shows where the new one starts, the session goes on
        turns_before = len((await _stats(page))["latenciesMs"])
        await page.click("#new-conversation")
        await _wait(page, "window.voiceStats.conversations === 1", 5)
        assert await page.locator("#turns li.session-start").all_inner_texts() == ["New conversation"]
        await _wait(page, f"window.voiceStats.latenciesMs.length > {turns_before}", 30)

    asyncio.run(_with_page("echo", chromium_args(fake_mic), body))


def test_unreachable_server_is_reported(fake_mic):
    _skip_without_browser()

    async def body(page):
        await page.click("#connect")
        await page.wait_for_selector("#error:not([hidden])", timeout=10000)
        assert "Cannot reach the server" in await page.inner_text("#error")
        assert (await _stats(page))["state"] == "idle"

    asyncio.run(_with_page("echo", chromium_args(fake_mic), body, query="?server=ws://127.0.0.1:9/ws"))


def test_denied_microphone_is_reported(fake_mic):
    _skip_without_browser()

    async def body(page):
        await page.click("#connect")
        await page.wait_for_selector("#error:not([hidden])", timeout=10000)
        assert "denied" in await page.inner_text("#error")

    asyncio.run(_with_page("echo", chromium_args(fake_mic, grant_microphone=False), body))


def test_bench_browser_times_the_page_on_the_bench_clips(tmp_path):
    """`voice bench --browser`: the same clips through the page; its chart's v2v beside the bench's, and its parts."""
    _skip_without_browser()
    import json

    from voice.cli import main

    speech = tmp_path / "speech"
    speech.mkdir()
    for name in ("tf_speech_commands_yes.wav", "ps_goforward.wav"):
        shutil.copy(SPEECH / name, speech / name)
    out = tmp_path / "reports"
    assert main(["bench", "--pipelines", "echo", "--set", "shared-speech", "--speech-dir", str(speech), "--out", str(out),
                 "--browser", "--browser-gap-s", "2", "--chromium", CHROMIUM, "--no-warmup",
                 "--screenshot", str(tmp_path / "page.png"), "--browser-new-conversation"]) == 0
    report = json.loads(next(out.glob("*.json")).read_text())
    page = [t for t in report["turns"] if t["variant"] == "echo in the browser"]
    assert [t["file"] for t in page] == ["ps_goforward.wav", "tf_speech_commands_yes.wav"]
    # a new conversation before the second clip, as the bench answers each clip in a session of its own
    assert [t["browser_new_conversations"] for t in page] == [1, 1]
    for t in page:
        assert 0 < t["v2v_ms"] < 3000, t
        parts = t["browser_arrived_ms"] + t["browser_buffered_ms"] + t["browser_output_ms"]
        assert abs(parts - t["v2v_ms"]) <= 3, t           # rounding only
    g = report["summary"]["echo in the browser"]["browser_vs_bench_ms"]
    assert g["n"] == 2 and isinstance(g["met"], bool)
    assert (tmp_path / "page.png").read_bytes()[:4] == b"\x89PNG"
    assert "The page's own v2v against the bench's" in next(out.glob("*.md")).read_text()
