"""The browser's own voice-to-voice on the bench's turns (`voice bench --browser`).

The page the server serves runs in headless Chromium (Playwright, Debian's `chromium`), with the
set's clips as its microphone: one WAV of every clip in turn, each after `LEAD_S` of silence and
followed by room for the answer (`--browser-gap-s` plus the clip's own length), played by
Chromium's fake capture device. The page's latency chart is read per turn (`window.voiceStats`):
from the VAD's stamped end of speech (`speech_stopped.t`) to when the first non-silent answer
sample plays, the output device's latency included; and where it went: until the sound reached
the page (`arrived`), waiting in the jitter buffer (`buffered`), the output device (`output`).

A clip is matched to the page's turns on the input timeline: Chromium's capture starts the file
from its first sample, so the first turn's start fixes the offset; a clip's measured turn is the
last that ended within it, as in the bench. The page keeps one conversation over all the clips,
where the bench opens a session per clip; with `new_conversations` it presses "New conversation"
in the lead silence before each clip after the first (the input timeline tells where the file is),
so that each question is answered as the first of a conversation, as in the bench. The records sit
beside the bench's own, as a variant `<name> in the browser`, so the report compares them on the same
clips (docs/benchmarking.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from voice.audio import resample, write_wav
from voice.bench.sets import TurnItem

LEAD_S = 1.0                 # silence before each clip
FILE_RATE_HZ = 48000         # the fake microphone's file (Chromium's usual context rate)
BROWSER_SUFFIX = " in the browser"


@dataclass(frozen=True)
class ClipSpan:
    """Where one clip's speech lies in the fake microphone's file (seconds)."""

    speech_start_s: float
    speech_end_s: float
    clip_end_s: float        # the clip's last sample
    next_start_s: float      # where the next clip's lead silence starts


def chromium_args(fake_wav: Path | None, grant_microphone: bool = True) -> list[str]:
    """Headless Chromium's flags for the page: a fake microphone (playing `fake_wav`), granted or denied."""
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--autoplay-policy=no-user-gesture-required", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream" if grant_microphone else "--deny-permission-prompts"]
    if fake_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_wav}")
    return args


def find_chromium(path: str | None = None) -> str:
    """The Chromium executable (`path`, else `chromium` on PATH); FileNotFoundError with a hint."""
    found = path or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        raise FileNotFoundError("no Chromium found for --browser (apt-get install chromium, or pass --chromium PATH)")
    return found


def fake_microphone(items: list[TurnItem], path: Path, gap_s: float) -> list[ClipSpan]:
    """Write the clips, each after LEAD_S of silence and followed by its own length plus `gap_s` of silence."""
    parts, spans, t = [], [], 0.0
    for item in items:
        pcm = np.asarray(item.pcm, np.float32)
        if item.sample_rate_hz != FILE_RATE_HZ:
            pcm = resample(pcm, item.sample_rate_hz, FILE_RATE_HZ).astype(np.float32)
        clip_s = len(pcm) / FILE_RATE_HZ
        tail = np.zeros(int(round((clip_s + gap_s) * FILE_RATE_HZ)), np.float32)
        lead = np.zeros(int(round(LEAD_S * FILE_RATE_HZ)), np.float32)
        start = t + len(lead) / FILE_RATE_HZ
        parts += [lead, pcm, tail]
        t = start + (len(pcm) + len(tail)) / FILE_RATE_HZ
        spans.append(ClipSpan(start + item.speech.start_s, start + item.speech.end_s, start + clip_s, t))
    write_wav(path, np.concatenate(parts), FILE_RATE_HZ)
    return spans


def match_turns(turns: list[dict], spans: list[ClipSpan]) -> list[list[dict]]:
    """For each clip, the page's turns (`voiceStats.turns` records) that ended within it, in order.

    The first turn with a start fixes the offset of the input timeline against the file (it is the
    first clip's); a turn belongs to the clip in whose span (its speech start to the next clip's
    lead) its end falls. The last of a clip's turns is the one measured, as in the bench."""
    timed = [t for t in turns if t.get("speechStart") is not None and t.get("speechEnd") is not None]
    matched: list[list[dict]] = [[] for _ in spans]
    if not timed or not spans:
        return matched
    offset = timed[0]["speechStart"] - spans[0].speech_start_s
    for turn in timed:
        end = turn["speechEnd"] - offset
        for i, span in enumerate(spans):
            if span.speech_start_s <= end < span.next_start_s:
                matched[i].append(turn)
                break
    return matched


def records_for(name: str, pipeline: str, items: list[TurnItem], matched: list[list[dict]],
                ready: dict | None = None, session_underruns: int | None = None) -> list[dict]:
    """One bench record per clip, from the last page turn matched to it (`ready`: the session's ready
    message; `session_underruns`: the playback underruns of the whole session, in every record)."""
    out = []
    for k, (item, turns) in enumerate(zip(items, matched)):
        rec = {"variant": name + BROWSER_SUFFIX, "pipeline": pipeline, "client": "browser", "item": item.item_id,
               "file": Path(item.path).name, "turn": k, "speech_start_s": item.speech.start_s,
               "speech_end_s": item.speech.end_s, "vad_turns": len(turns),
               "turn_detection": (ready or {}).get("turn_detection", "silence"),
               "browser_session_underruns": session_underruns}
        turn = turns[-1] if turns else None
        if turn is None or turn.get("latencyMs") is None:
            rec["error"] = "no answer played in the browser for this clip"
        else:
            parts = turn.get("latencyParts") or {}
            rec.update({"v2v_ms": float(turn["latencyMs"]), "end_reason": turn.get("endReason"),
                        "browser_decided_ms": parts.get("decidedMs"), "browser_arrived_ms": parts.get("arrivedMs"),
                        "browser_buffered_ms": parts.get("bufferedMs"), "browser_output_ms": parts.get("outputMs"),
                        "browser_underruns": sum(int(t.get("underruns") or 0) for t in turns),
                        # how far into the answer each one came (ms of it played): at its start, or later
                        "browser_underrun_at_ms": [a for t in turns for a in (t.get("underrunAtMs") or [])],
                        "answer_text": (turn.get("assistantText") or "").strip(),
                        "timings_ms": turn.get("timings") or {}})   # the server's tracer, from turn_end
        out.append(rec)
    return out


def new_conversation_times(spans: list[ClipSpan]) -> list[float]:
    """Where in the file the page starts a new conversation: 0.2 s into the lead silence of each clip after the
    first (its answer has had the clip's length plus the gap; a longer one is cut there)."""
    return [span.next_start_s + 0.2 for span in spans[:-1]]


def file_position_s(stats: dict, first_speech_start_s: float) -> float | None:
    """Where the page's microphone is in the file (s), from the input timeline (16 kHz samples sent) and the
    first turn's start, which is the first clip's (`first_speech_start_s` in the file); None before that turn."""
    first = next((t.get("speechStart") for t in stats.get("turns", []) if t.get("speechStart") is not None), None)
    if first is None:
        return None
    return stats.get("samplesSent", 0) / 16000 - (first - first_speech_start_s)


async def browse(page_url: str, wav: Path, n_turns_until_s: float, chromium: str,
                 on_progress: Callable[[int], None] | None = None, screenshot: Path | None = None,
                 spans: list[ClipSpan] | None = None) -> dict:
    """Open the page with `wav` as the microphone, connect, let the file play once; returns `voiceStats`.
    With `spans`, a new conversation before each clip after the first (`new_conversation_times`)."""
    from playwright.async_api import Error as PlaywrightError

    try:
        return await _browse(page_url, wav, n_turns_until_s, chromium, on_progress, screenshot, spans)
    except PlaywrightError as exc:
        raise RuntimeError(f"the browser session failed: {exc}") from exc


async def _browse(page_url: str, wav: Path, n_turns_until_s: float, chromium: str,
                  on_progress: Callable[[int], None] | None, screenshot: Path | None,
                  spans: list[ClipSpan] | None = None) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium,
                                          args=chromium_args(wav))
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 640})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(page_url)
            await page.wait_for_function("document.getElementById('pipeline').options.length > 0", timeout=30_000)
            await page.click("#connect")
            await page.wait_for_function("window.voiceStats.connected", timeout=60_000)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            resets = new_conversation_times(spans) if spans else []
            while loop.time() - t0 < n_turns_until_s:
                await asyncio.sleep(0.1 if resets else 0.5)
                if on_progress:
                    on_progress(await page.evaluate("window.voiceStats.latenciesMs.length"))
                if errors:
                    break
                if resets:
                    at = file_position_s(await page.evaluate(
                        "() => ({samplesSent: window.voiceStats.samplesSent, "
                        "turns: window.voiceStats.turns.map(t => ({speechStart: t.speechStart}))})"),
                        spans[0].speech_start_s)
                    if at is not None and at >= resets[0]:
                        resets.pop(0)
                        await page.evaluate("window.voiceApp.newConversation()")
            stats = await page.evaluate("() => JSON.parse(JSON.stringify(window.voiceStats))")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(screenshot))
            if errors:
                raise RuntimeError(f"the page failed: {errors[0]}")
            return stats
        finally:
            with contextlib.suppress(Exception):
                await browser.close()


def page_url(ws_url: str, pipeline: str) -> str:
    """The served page for the server at `ws_url`, with `pipeline` chosen."""
    http = ws_url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    return f"{http.rsplit('/ws', 1)[0]}/?pipeline={pipeline}"


def run_browser(ws_url: str, name: str, pipeline: str, items: list[TurnItem], work_dir: Path, gap_s: float,
                chromium: str, on_progress: Callable[[int], None] | None = None,
                screenshot: Path | None = None, new_conversations: bool = False) -> list[dict]:
    """One browser session over every clip of `items` against the server at `ws_url`; one record per clip.
    `new_conversations`: each clip after the first starts a new conversation (the bench's fresh sessions)."""
    wav = work_dir / f"{name}.browser-mic.wav"
    spans = fake_microphone(items, wav, gap_s)
    try:
        # stop before the file starts over (the capture started it a little before the session)
        stats = asyncio.run(browse(page_url(ws_url, pipeline), wav, spans[-1].next_start_s - 1.0, chromium,
                                   on_progress, screenshot, spans if new_conversations else None))
    finally:
        wav.unlink(missing_ok=True)
    turns = stats.get("turns", [])
    records = records_for(name, pipeline, items, match_turns(turns, spans), stats.get("ready"), stats.get("underruns"))
    for rec in records:
        rec["browser_new_conversations"] = stats.get("conversations", 0) if new_conversations else None
    return records
