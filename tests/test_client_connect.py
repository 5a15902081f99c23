"""Browser client in headless Chromium: connecting, failing to, losing the server and getting it back."""

from __future__ import annotations

import asyncio

import pytest

from conftest import FIXED_RULES
from tests.test_browser import _skip_without_browser, chromium, chromium_args, fake_mic  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

# Counts what a page opens: every AudioContext and every microphone stream.
TRACK_AUDIO = """
(() => {
  const Base = window.AudioContext;
  window.__contexts = [];
  window.AudioContext = class extends Base {
    constructor(...args) { super(...args); window.__contexts.push(this); }
  };
  window.__streams = [];
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => { const s = await gum(c); window.__streams.push(s); return s; };
})();
"""
LIVE_AUDIO = """() => ({
  contexts: window.__contexts.length,
  live: window.__contexts.filter((c) => c.state !== "closed").length,
  liveTracks: window.__streams.flatMap((s) => s.getTracks()).filter((t) => t.readyState !== "ended").length,
})"""


async def start_server(port: int = 0, **config):
    from voice.server.app import ServerConfig, VoiceServer

    server = VoiceServer(ServerConfig(port=port, vad_defaults=FIXED_RULES, **config))
    await server.start()
    return server


async def wait(page, condition: str, timeout_s: float = 10.0) -> None:
    await page.wait_for_function(condition, timeout=timeout_s * 1000, polling=50)


async def banner(page, timeout_s: float = 10.0) -> str:
    await page.wait_for_selector("#error:not([hidden])", timeout=timeout_s * 1000)
    return await page.inner_text("#error")


async def loaded(page, url: str) -> None:
    await page.goto(url)
    await wait(page, "document.querySelectorAll('#pipeline option').length > 0")


def browse(fake_wav, body) -> None:
    """Run `body(page)` in a page that records its audio (servers are the body's business)."""
    _skip_without_browser()

    async def main():
        async with chromium(chromium_args(fake_wav), TRACK_AUDIO) as page:
            await body(page)
    asyncio.run(asyncio.wait_for(main(), 120))


def browse_served(fake_wav, body, query: str = "", **config) -> None:
    """Run `body(page, server)` with the page loaded from a fresh server started with `config`."""
    async def with_server(page):
        server = await start_server(**config)
        try:
            await loaded(page, f"http://127.0.0.1:{server.port}/{query}")
            await body(page, server)
        finally:
            await server.stop()
    browse(fake_wav, with_server)


def test_connect_after_the_server_stopped_says_it_cannot_reach_it(fake_mic):
    async def body(page):
        server = await start_server()
        await loaded(page, f"http://127.0.0.1:{server.port}/")
        await server.stop()
        await page.click("#connect")
        text = await banner(page)
        assert "Cannot reach the server" in text and "worklet" not in text
        assert (await page.evaluate(LIVE_AUDIO))["live"] == 0

    browse(fake_mic, body)


def test_failed_connects_leave_no_audio_context_or_microphone_running(fake_mic):
    async def body(page, server):
        await choose_unknown_pipeline(page)     # refused after the audio was set up
        for attempt in range(3):
            await page.click("#connect")
            await wait(page, f"window.voiceStats.errors.length > {attempt} && window.voiceStats.state === 'idle'")
            assert "unknown_pipeline" in await page.inner_text("#error")
        await wait(page, "window.__contexts.every((c) => c.state === 'closed')", 5)
        audio = await page.evaluate(LIVE_AUDIO)
        assert audio == {"contexts": 3, "live": 0, "liveTracks": 0}

    browse_served(fake_mic, body)


async def choose_unknown_pipeline(page) -> None:
    """Select a pipeline the server does not have (its hello is refused with unknown_pipeline)."""
    await page.evaluate("() => { const s = document.querySelector('#pipeline'); s.add(new Option('nope', 'nope')); s.value = 'nope'; }")


def test_a_refused_origin_is_named_with_allow_origin(fake_mic):
    """The page from server A talks to server B (?server=); B refuses A's origin until --allow-origin names it."""
    async def body(page):
        page_server, refusing = await start_server(), await start_server()
        origin = f"http://127.0.0.1:{page_server.port}"
        allowing = await start_server(security=_allow(origin))
        try:
            await page.goto(f"{origin}/?server=ws://127.0.0.1:{refusing.port}/ws")
            for _ in range(2):            # at load, then again at Connect
                text = await banner(page)
                assert "refused this page's origin" in text and f"--allow-origin {origin}" in text
                assert "Cannot reach" not in text
                await page.click("#connect")
                await wait(page, "window.voiceStats.errors.length >= 2 && window.voiceStats.state === 'idle'")
            # the same page against a server that allows its origin: pipelines listed, session opens
            await loaded(page, f"{origin}/?server=ws://127.0.0.1:{allowing.port}/ws")
            assert await page.is_hidden("#error")
            await page.click("#connect")
            await wait(page, "window.voiceStats.connected")
        finally:
            for server in (page_server, refusing, allowing):
                await server.stop()

    browse(fake_mic, body)


def _allow(origin: str):
    from voice.server.security import SecurityConfig

    return SecurityConfig(allowed_origins=(origin,))


def test_a_lost_server_is_said_in_words_and_reconnected_by_itself(fake_mic):
    async def body(page):
        # a loaded machine can keep the browser's close reply past the default 0.2 s, and the page then
        # sees 1006 (connection lost) instead of the 1001 this test is about
        server = await start_server(shutdown_handshake_s=1.0)
        port = server.port
        try:
            await loaded(page, f"http://127.0.0.1:{port}/")
            await page.click("#connect")
            await wait(page, "window.voiceStats.connected")
            # SIGTERM: close 1001. Read the banner while the server is still stopping: stop() waits up to the
            # 1 s handshake, and on a loaded machine the client's first retry had already replaced the banner
            # with "Cannot reach the server" by the time it returned
            stopping = asyncio.create_task(server.stop())
            text = await banner(page)
            await stopping
            assert text.startswith("The server shut down.") and "Reconnecting in" in text and "1001" not in text
            assert await page.is_visible("#reconnect")
            assert (await page.evaluate("window.voiceStats.state")) == "reconnecting"
            await asyncio.sleep(1.5)                             # an attempt or two fail while it is down
            server = await start_server(port)
            await wait(page, "window.voiceStats.connected && window.voiceStats.sessions === 2", 20)
            assert await page.is_hidden("#error")
            for session in list(server.sessions.values()):      # the connection drops: 1006
                session.ws.transport.abort()
            text = await banner(page)
            assert text.startswith("The connection to the server was lost.") and "1006" not in text
            await wait(page, "window.voiceStats.connected && window.voiceStats.sessions === 3", 20)
            assert (await page.evaluate(LIVE_AUDIO))["live"] == 1    # one session, one context
        finally:
            await server.stop()

    browse(fake_mic, body)


def test_enter_on_connect_keeps_the_focus_on_it(fake_mic):
    async def body(page, server):
        await page.focus("#connect")
        await page.keyboard.press("Enter")
        await wait(page, "window.voiceStats.connected")
        assert await page.evaluate("document.activeElement.id") == "connect"
        await page.keyboard.press("Enter")                       # Disconnect, from the keyboard too
        await wait(page, "!window.voiceStats.connected")
        assert await page.evaluate("document.activeElement.id") == "connect"

    browse_served(fake_mic, body)
