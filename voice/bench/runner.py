"""Runs scripted turns through a real server at real-time pace and measures latency at the client."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from voice.audio import first_non_silent_index
from voice.bench.sets import TurnItem
from voice.bench.variants import Variant
from voice.client import VoiceClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    variants: tuple[Variant, ...] = (Variant("echo", "echo"),)  # what is compared, each under its own name
    turns: int = 0                   # timed turns per pipeline (0: one pass over the set)
    lead_s: float = 0.5              # silence streamed before each clip (a microphone is open before you talk)
    chunk_ms: float = 20.0           # client chunk size
    turn_timeout_s: float = 60.0     # a turn with no turn_end after its speech ends this long is a failure
    end_slack_s: float = 8.0         # the VAD ends the clip's last turn within its longest silence rule plus this,
                                     # or never (a rest after a premature end that the barge-in model let pass)
    silence_threshold: float = 0.01  # |sample| above this (about -40 dBFS) is "non-silent" answer audio
    barge_in: bool = False           # also time interruptions during the answer
    barge_items: tuple = ()          # what is played over the answers (default: the set's next item)
    warmup: bool = True              # one untimed turn per pipeline first
    options: dict = field(default_factory=dict)  # hello options of every variant (VAD settings, pipeline options)

    def hello_options(self, variant: Variant) -> dict:
        """The global options with the variant's own over them (a turn's set options, e.g. its clock, go last)."""
        return {**self.options, **variant.options}


class ServerThread:
    """A real VoiceServer on a loopback port, in its own thread and event loop (isolated from the client)."""

    def __init__(self, pipeline: str, torch_threads: int = 0, speechlm_process: bool = False) -> None:
        from voice.server.app import ServerConfig, VoiceServer

        self.server = VoiceServer(ServerConfig(port=0, pipeline=pipeline, torch_threads=torch_threads,
                                               speechlm_process=speechlm_process))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-server", daemon=True)

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=300)
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def _stream_silence(client: VoiceClient, stop: asyncio.Event, chunk_ms: float, max_s: float) -> None:
    """Keep the microphone open: real-time paced silence until `stop` is set or `max_s` passes."""
    step = max(1, int(client.sample_rate_hz * chunk_ms / 1000))
    t0, sent = time.monotonic(), 0
    while not stop.is_set() and sent / client.sample_rate_hz < max_s:
        due = t0 + (sent + step) / client.sample_rate_hz
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
            return
        except asyncio.TimeoutError:
            pass
        await client.send_audio(np.zeros(step, np.float32))
        sent += step


async def _speak(client: VoiceClient, item: TurnItem, cfg: RunConfig) -> float:
    """Stream lead silence + the clip; returns the monotonic time of the clip's first sample."""
    lead = np.zeros(int(cfg.lead_s * item.sample_rate_hz), np.float32)
    t0 = await client.stream(np.concatenate([lead, item.pcm]), chunk_ms=cfg.chunk_ms, realtime=True)
    return t0 + len(lead) / item.sample_rate_hz


def _event_time(client: VoiceClient, kind: str, turn: int | None = None) -> tuple[float, dict] | tuple[None, None]:
    """Arrival time and body of the first `kind` event (of VAD turn `turn`, if given)."""
    for t, e in client.log.events:
        if e.get("type") == kind and (turn is None or e.get("turn") == turn):
            return t, e
    return None, None


async def run_turn(url: str, variant: Variant, item: TurnItem, cfg: RunConfig,
                   barge_item: TurnItem | None = None) -> dict:
    """One scripted turn (plus an interruption when `barge_item` is given); returns its record."""
    options = {**cfg.hello_options(variant), **item.options}
    client = VoiceClient(url, sample_rate_hz=item.sample_rate_hz, pipeline=variant.pipeline, options=options)
    ready = await client.connect()
    rec: dict = {"variant": variant.name, "pipeline": variant.pipeline, "item": item.item_id, "file": Path(item.path).name,
                 "speech_start_s": item.speech.start_s, "speech_end_s": item.speech.end_s,
                 "clip_s": round(len(item.pcm) / item.sample_rate_hz, 3),
                 "end_silence_ms": float(options.get("end_silence_ms", 500.0)),
                 # what the server runs: "model" falls back to "silence" where no end-of-turn model ships
                 "turn_detection": str(ready.get("turn_detection", options.get("turn_detection", "silence"))),
                 "ignored_options": ready.get("ignored_options", [])}
    try:
        clip_t0 = await _speak(client, item, cfg)
        true_end = clip_t0 + item.speech.end_s
        stop = asyncio.Event()
        mic = asyncio.create_task(_stream_silence(client, stop, cfg.chunk_ms, cfg.turn_timeout_s))
        end_wait_s = min(cfg.turn_timeout_s, cfg.end_slack_s + max(float(options.get("turn_max_silence_ms", 1500.0)),
                                                                   rec["end_silence_ms"]) / 1000)
        turn = await _wait_answer(client, item, cfg, rec, "audio_start" if barge_item is not None else "turn_end",
                                  end_wait_s)
        stop.set()
        await mic
        if barge_item is not None and "error" not in rec:
            await _barge_in(client, barge_item, cfg, rec, turn)
        _measure(client, cfg, rec, true_end, turn, item.pauses)
        if item.expected is not None:
            from voice.data.answers import check_answer

            rec["expected"] = item.expected
            # no answer text (echo, audio-only answers): not checked here; an ASR of the answer audio would be needed
            rec["correct"] = check_answer(item.intent or "", item.expected, rec["answer_text"]) if rec["answer_text"] else None
    finally:
        await client.close()
    return rec


async def _wait_answer(client: VoiceClient, item: TurnItem, cfg: RunConfig, rec: dict, waiting: str,
                       end_wait_s: float | None = None) -> int | None:
    """Wait for the VAD turn that ends the clip's speech, then for its `waiting` event; returns its turn id.

    A clip with a pause longer than end_silence_ms makes several VAD turns; the one measured is the
    last (its end of speech is the clip's true end; a stamp up to 300 ms early is accepted). The VAD
    decides within its own silence rules, so the end of speech is awaited `end_wait_s` (the answer,
    which a slow pipeline makes, up to turn_timeout_s).
    """
    last_end_s = cfg.lead_s + item.speech.end_s - 0.3
    try:
        stopped = await client.wait_for(lambda e: e.get("type") == "speech_stopped" and e["t"] >= last_end_s,
                                        end_wait_s or cfg.turn_timeout_s, include_past=True)
    except asyncio.TimeoutError:
        rec["error"] = f"no end of speech within {end_wait_s or cfg.turn_timeout_s:.1f} s of the clip's end"
        return None
    try:
        turn = int(stopped["turn"])
        await client.wait_for(lambda e: e.get("type") in (waiting, "turn_end") and e.get("turn") == turn,
                              cfg.turn_timeout_s, include_past=True)
    except asyncio.TimeoutError:
        rec["error"] = f"no {waiting} within {cfg.turn_timeout_s:.0f} s of the end of speech"
        return None
    rec["vad_turns"] = len(client.log.of_type("speech_stopped"))
    return turn


def first_sound(chunks: list, rate_hz: int, threshold: float) -> tuple[float, float] | tuple[None, None]:
    """(arrival, playout) of the first sample above `threshold`: the arrival time of the chunk holding
    it, and when a gapless player would play it (it starts each chunk on its arrival or when the
    previous one has played, whichever is later; no jitter buffer, no output device). Unlike the
    arrival, the playout counts silence that comes before the sound. (None, None) without a sound."""
    clock = None
    for chunk in chunks:
        start = chunk.t_s if clock is None else max(clock, chunk.t_s)
        i = first_non_silent_index(chunk.pcm, threshold)
        if i is not None:
            return chunk.t_s, start + i / rate_hz
        clock = start + len(chunk.pcm) / rate_hz
    return None, None


def _measure(client: VoiceClient, cfg: RunConfig, rec: dict, true_end: float, turn: int | None,
             item_pauses: tuple = ()) -> None:
    """Fill the record for VAD turn `turn`: v2v, VAD timing, stage breakdown, answer text and audio."""
    end_silence_ms = rec["end_silence_ms"]
    answer = [a for a in client.log.audio if a.turn_id == turn]
    clear_t = rec.get("_clear_t", float("inf"))
    t_sound, t_played = first_sound([a for a in answer if a.t_s < clear_t], client.output_rate_hz,
                                    cfg.silence_threshold)
    rec["v2v_ms"] = _ms(t_sound - true_end) if t_sound is not None else None
    rec["v2v_played_ms"] = _ms(t_played - true_end) if t_played is not None else None
    silence_mode = rec.get("turn_detection") == "silence"
    rec["v2v_minus_end_silence_ms"] = (round(rec["v2v_ms"] - end_silence_ms, 1)
                                       if t_sound is not None and silence_mode else None)
    rec["first_audio_ms"] = _ms(answer[0].t_s - true_end) if answer else None
    t_stop, stopped = _event_time(client, "speech_stopped", turn=turn)
    if stopped is not None:
        rec["end_reason"] = stopped.get("reason")
        rec["answer_started_ms"] = stopped.get("answer_started_ms")   # a speculative start: ms before the end
        # the VAD's stamped end (input timeline; the lead silence comes first) minus the true end
        rec["vad_end_error_ms"] = _ms(stopped["t"] - cfg.lead_s - rec["speech_end_s"])
        rec["speech_stopped_ms"] = _ms(t_stop - true_end)
    _, started = _event_time(client, "speech_started")
    if started is not None:
        rec["vad_start_error_ms"] = _ms(started["t"] - cfg.lead_s - rec["speech_start_s"])
    _, turn_end = _event_time(client, "turn_end", turn=turn)
    if turn_end is not None:
        rec["timings_ms"] = turn_end.get("timings_ms") or {}
        rec["endpointing_ms"] = turn_end.get("endpointing_ms")
        rec["interrupted"] = bool(turn_end.get("interrupted"))
        rec["answers_taken_back"] = turn_end.get("answers_taken_back", 0)
    texts = [e for _, e in client.log.events if e.get("type") == "assistant_text" and e.get("turn") == turn]
    # assistant_text events are deltas; the final one closes the answer (usually empty)
    rec["answer_text"] = "".join(e.get("text", "") for e in texts).strip()
    rec["transcript"] = " ".join(e["text"] for _, e in client.log.events if e.get("type") == "transcript" and e.get("final"))
    rec["answer_audio_s"] = round(sum(len(a.pcm) for a in answer) / client.output_rate_hz, 3)
    rec.pop("_clear_t", None)
    if item_pauses:
        # a turn the VAD ended before the last pause inside the clip was over: an answer to half a question
        last_pause_end_s = cfg.lead_s + max(end for _, end in item_pauses)
        rec["premature_end"] = any(e.get("t", 0.0) < last_pause_end_s - 0.05
                                   for e in client.log.of_type("speech_stopped"))


AFTER_CLEAR_S = 0.5     # how long a barge-in turn listens after the `clear` for audio of the cancelled answer


async def _barge_in(client: VoiceClient, item: TurnItem, cfg: RunConfig, rec: dict, turn: int | None) -> None:
    """While the answer to `turn` plays, the user speaks `item`: time the `clear` and the last answer sample."""
    rec["barge_in_item"] = item.item_id
    rec["barge_in_kind"] = item.barge_kind
    t_audio_start, _ = _event_time(client, "audio_start", turn=turn)
    clip_t0 = await _speak(client, item, cfg)  # the lead silence is part of the overlap with the answer
    true_start = clip_t0 + item.speech.start_s
    stop = asyncio.Event()
    mic = asyncio.create_task(_stream_silence(client, stop, cfg.chunk_ms, cfg.turn_timeout_s))
    # an interruption is waited for; anything else gets a second after it to (wrongly) stop the answer
    wait_s = cfg.turn_timeout_s if item.barge_kind == "interrupt" else 1.0
    try:
        # a `clear` of the answer, or the speech starting a turn of its own: the answer had finished playing
        # before the VAD took the speech for an interruption (a barge-in's `clear` comes before its turn's start)
        event = await client.wait_for(_clear_or_new_turn(turn), wait_s, include_past=True)
        if event.get("type") == "clear" and item.barge_kind == "interrupt":
            await asyncio.sleep(AFTER_CLEAR_S)   # still listening: no audio of the cancelled answer may follow
        elif event.get("type") != "clear" and item.barge_kind == "interrupt":
            rec["barge_in_error"] = (f"no clear: the answer had finished playing, the speech became turn "
                                     f"{event.get('turn')}")
    except asyncio.TimeoutError:
        if item.barge_kind == "interrupt":
            rec["barge_in_error"] = "no clear event"
    stop.set()
    await mic
    t_clear = next((t for t, e in client.log.events if _clears(turn)(e)), None)
    rec["_clear_t"] = t_clear if t_clear is not None else float("inf")
    if item.barge_kind != "interrupt":
        rec["false_interruption"] = t_clear is not None
        return
    if t_clear is None:
        return
    rec["barge_in_clear_ms"] = _ms(t_clear - true_start)
    before = [a.t_s for a in client.log.audio if a.turn_id == turn and a.t_s <= t_clear]
    # a client plays until `clear`; audio that arrived earlier was buffered, so both are reported
    rec["barge_in_last_audio_ms"] = _ms(max(before) - true_start) if before else None
    # issue 13: nothing of the cancelled answer reaches the client after its `clear`
    rec["barge_in_audio_after_clear_ms"] = _ms(sum(len(a.pcm) for a in client.log.audio
                                                   if a.turn_id == turn and a.t_s > t_clear) / client.output_rate_hz)
    rec["barge_in_started_after_answer_ms"] = _ms(true_start - t_audio_start) if t_audio_start else None


def _clears(turn: int | None) -> Callable[[dict], bool]:
    return lambda e: e.get("type") == "clear" and turn in (e.get("turns") or [])


def _clear_or_new_turn(turn: int | None) -> Callable[[dict], bool]:
    clears = _clears(turn)
    return lambda e: clears(e) or (turn is not None and e.get("type") == "speech_started"
                                   and int(e.get("turn") or 0) > turn)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


@dataclass
class Schedule:
    """Which (variant, item) each timed turn runs, interleaved so that load noise hits every variant alike."""

    keys: list[tuple[str, int, int]]  # (variant name, turn index, item index)

    @classmethod
    def make(cls, names: tuple[str, ...], n_items: int, turns: int) -> "Schedule":
        n = turns or n_items
        return cls([(p, k, k % n_items) for k in range(n) for p in names])


def load_partial(path: Path) -> dict[tuple[str, int], dict]:
    """Finished turns of an interrupted run, by (variant, turn); a torn last line is ignored.

    A record written before variants existed is the variant named after its pipeline.
    """
    done: dict[tuple[str, int], dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        rec.setdefault("variant", rec["pipeline"])
        done[(rec["variant"], rec["turn"])] = rec
    return done


async def run_all(url: str, items: list[TurnItem], cfg: RunConfig, partial_path: Path,
                  done: dict[tuple[str, int], dict], on_turn: Callable[[dict], None] | None = None) -> list[dict]:
    """Warm up each variant, then run every scheduled turn not already in `done`; appends to `partial_path`.

    The first time the server ignores options of a variant (`ready.ignored_options`), a warning names them.
    """
    variants = {v.name: v for v in cfg.variants}
    warned: set[str] = set()

    async def turn(v: Variant, item: TurnItem, barge: TurnItem | None = None) -> dict:
        rec = await run_turn(url, v, item, cfg, barge)
        if rec["ignored_options"] and v.name not in warned:
            warned.add(v.name)
            log.warning("%s: the server ignored the options %s (a typo? another pipeline's option?)",
                        v.describe(), ", ".join(rec["ignored_options"]))
        return rec

    if cfg.warmup:
        for v in cfg.variants:
            log.info("warming up %s (one untimed turn)", v.describe())
            warm = await turn(v, items[0])
            if warm.get("error"):
                log.warning("warm-up turn of %s: %s", v.name, warm["error"])
    schedule = Schedule.make(tuple(variants), len(items), cfg.turns)
    records = []
    with open(partial_path, "a", encoding="utf-8") as out:
        for name, k, i in schedule.keys:
            if (name, k) in done:
                records.append(done[(name, k)])
                if on_turn:
                    on_turn(done[(name, k)])
                continue
            barge = None
            if cfg.barge_in:
                barge = cfg.barge_items[k % len(cfg.barge_items)] if cfg.barge_items else items[(i + 1) % len(items)]
            rec = await turn(variants[name], items[i], barge)
            rec["turn"] = k
            out.write(json.dumps(rec) + "\n")
            out.flush()
            records.append(rec)
            if on_turn:
                on_turn(rec)
    return records
