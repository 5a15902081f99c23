"""Browser client in headless Chromium: what the page shows and tells (turns, roles and names, states)."""

from __future__ import annotations

import re

import pytest

from tests.test_browser import fake_mic  # noqa: F401 (fixture)
from tests.test_client_connect import browse_served, choose_unknown_pipeline, wait
from tests.test_protocol_turns import paced_pipeline

pytestmark = pytest.mark.slow


def test_turns_of_a_new_session_are_added_not_replaced(fake_mic):
    """Every session numbers its turns from 1: after Disconnect -> Connect both turn 1s stay listed."""
    async def body(page, server):
        for session in (1, 2):
            await page.click("#connect")
            await wait(page, f"window.voiceStats.latenciesMs.length >= {session}", 60)
            await page.click("#connect")                         # Disconnect
        keys = await page.eval_on_selector_all("#turns li[data-turn]", "els => els.map((e) => e.dataset.turn)")
        assert len(keys) == len(set(keys)) >= 2                         # session 1 turn 1, session 2 turn 1
        assert await page.locator("#turns li.session-start").count() == 1
        latencies = await page.eval_on_selector_all("#turns li[data-turn] .latency", "els => els.map((e) => e.textContent)")
        bars = await page.evaluate("window.voiceStats.latenciesMs.length")
        assert sum(1 for t in latencies if t.endswith(" ms")) == bars >= 2    # as many as the chart's bars

    browse_served(fake_mic, body)


def test_roles_names_and_states_for_screen_readers_and_eyes(fake_mic):
    """The banner is an alert, the pill a live status, the meter and chart are named, Mute is a toggle;
    the pill says 'hearing you' while the user speaks and 'muted' while muted; the pipeline is locked
    during a session; Disconnect leaves no stale playback figures."""
    async def body(page, server):
        assert await page.get_by_role("status").inner_text() == "idle"
        assert await page.get_by_role("meter", name="Microphone level").count() == 1
        assert await page.get_by_role("img", name=re.compile("Voice-to-voice latency per turn")).count() == 1
        await page.click("#connect")
        await wait(page, "window.voiceStats.connected")
        assert await page.is_disabled("#pipeline")
        await page.get_by_role("button", name="Mute", pressed=False).wait_for()
        await wait(page, "window.voiceStats.state === 'hearing'", 20)
        assert await page.get_by_role("status").inner_text() == "hearing you"
        await wait(page, "window.voiceStats.latenciesMs.length >= 1", 30)
        assert "median" in (await page.get_by_role("img", name=re.compile("latency")).get_attribute("aria-label"))
        await page.wait_for_function("document.querySelector('#buffer').textContent.includes('playback buffer')")
        await page.click("#mute")
        await page.get_by_role("button", name="Unmute", pressed=True).wait_for()
        # an answer to the turn before the mute may still come and play ("speaking" wins over "muted"): wait it out;
        # the server may not have ended that turn yet (its VAD needs up to 1.5 s of the muted silence), so quiet
        # once is not enough: quiet again after 2 s, by when any turn in progress has ended and reached the page
        quiet = ("window.voiceStats.state === 'muted' && !window.voiceStats.playing && "
                 "window.voiceStats.bufferedSamples === 0 && window.voiceStats.turns.every((t) => !t.waiting)")
        await wait(page, quiet, 20)
        await page.wait_for_timeout(2000)
        await wait(page, quiet, 20)
        assert await page.get_by_role("status").inner_text() == "muted"
        await page.click("#connect")                             # Disconnect
        assert await page.inner_text("#buffer") == ""
        assert await page.is_enabled("#pipeline")
        assert await page.get_by_role("button", name="Mute", pressed=False).count() == 1
        await choose_unknown_pipeline(page)
        await page.click("#connect")
        assert "unknown_pipeline" in await page.get_by_role("alert").inner_text()

    browse_served(fake_mic, body)


def test_after_a_cut_only_the_words_heard_are_shown(fake_mic):
    """An 8-word answer (3 s of audio, all sent at once) cut after about 0.6 s shows its first words only."""
    async def body(page, server):
        await page.click("#connect")
        await wait(page, "window.voiceStats.latenciesMs.length >= 1", 60)
        rate = await page.evaluate("() => new AudioContext().sampleRate")
        await wait(page, f"window.voiceStats.samplesPlayed > {0.6 * rate}", 10)
        await page.click("#interrupt")
        await wait(page, "window.voiceStats.turns[0].heardText !== undefined", 5)
        turn = await page.evaluate("() => JSON.parse(JSON.stringify(window.voiceStats.turns[0]))")
        assert turn["assistantText"] == "One two three four. Five six seven eight."
        assert 1 <= len(turn["heardText"].split()) <= 4, turn["heardText"]
        shown = await page.inner_text('#turns li[data-turn="1:1"]')
        assert turn["heardText"] in shown and "Five" not in shown and "not heard" in shown

    with paced_pipeline("paced-ui", ["One two three four.", " Five six seven eight."], piece_s=1.5, pace=0):
        browse_served(fake_mic, body, query="?pipeline=paced-ui", warmup=False)


def test_the_median_label_never_covers_a_bar_and_the_page_explains_connect(fake_mic):
    async def body(page, server):
        overlaps = await page.evaluate("""async () => {
          const { drawLatencyChart } = await import("./chart.js");
          const sets = [[300], [300, 2000, 400], Array(8).fill(1500), Array.from({ length: 20 }, (_, i) => 200 + 150 * i),
                        [5000, 100, 100, 100, 100, 100, 100, 4900]];
          const hit = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
          return sets.map((values) => {
            const canvas = document.createElement("canvas");
            canvas.width = 360; canvas.height = 180;
            const { bars, label } = drawLatencyChart(canvas, values);
            return label.y >= 0 && label.x >= 0 ? bars.filter((bar) => hit(bar, label)).length : -1;
          });
        }""")
        assert overlaps == [0, 0, 0, 0, 0]
        hint = await page.inner_text("#hint")
        assert "microphone" in hint and "headphones" in hint
        assert await page.get_attribute("#connect", "aria-describedby") == "hint"

    browse_served(fake_mic, body)
