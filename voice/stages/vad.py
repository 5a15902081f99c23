"""VAD stage: resample the client's audio to 16 kHz, find turns with Silero, decide when a turn is over, detect barge-in.

Two ways to decide that the user's turn is over (`turn_detection` in the hello):

- `model` (default): at a short pause (`turn_pause_ms`, 200 ms) the end-of-turn model
  (`voice.turn.model`, shipped in models/turn) hears the last seconds of the user's audio and says
  whether the turn is over; it is asked again every `turn_recheck_ms` (96 ms) while the silence lasts, and a silence
  of `turn_max_silence_ms` ends the turn whatever it says;
- `silence`: a silence of `end_silence_ms` ends the turn.

Speculative start (model mode): when the model rates a pause as a likely end (P(over) at least
`turn_speculate_threshold`) but not yet a sure one, or already at `turn_speculate_ms` (96 ms) of silence,
where it is asked once before the first decision, the VAD sends `SpeechStopped(speculative=True)`:
the pipeline starts its answer at once and the session holds its output. When the turn is then
decided over (the model at a later check, or the long silence), a `TurnConfirmed` releases the
held answer, which by then is partly or wholly made. When the user goes on instead, the VAD asks
the session to take the answer back (`StageContext.retract`: its work is cancelled, its output
dropped, the stages forget it, the client never learns of it) and sends the turn again from its
start, so the stages hear it whole.

Two ways to decide that speech during the assistant's answer interrupts it (`barge_in_detection`):

- `model` (default): from `barge_in_check_ms` (160 ms) of speech, counted from its onset, and at
  every 32 ms window after (`barge_in_recheck_ms`), the barge-in model (models/turn/barge_in.pt)
  says whether the sound is the user taking the turn or a cough, a knock, an "uh-huh", the
  assistant's own voice; `barge_in_max_speech_ms` of speech interrupts whatever it says;
- `duration`: `barge_in_min_speech_ms` of speech interrupts.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import AsyncIterator

import numpy as np

from voice.audio import StreamingResampler
from voice.frames import Frame, SpeechStarted, SpeechStopped, TurnConfirmed, UserAudio
from voice.runtime.stage import Stage
from voice.stages.silero import SAMPLE_RATE_HZ, WINDOW_SAMPLES, SileroState, SileroVadModel, shared_model
from voice.turn import decision_threshold

log = logging.getLogger(__name__)
WINDOW_S = WINDOW_SAMPLES / SAMPLE_RATE_HZ  # 32 ms


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5              # speech probability that starts (and continues) speech
    neg_threshold_offset: float = 0.15  # below threshold - offset counts as silence (hysteresis)
    min_speech_ms: float = 250.0        # shorter bursts are not a turn (clicks, breaths)
    end_silence_ms: float = 500.0       # silence that ends the user's turn
    pre_roll_ms: float = 192.0          # audio kept from before the detected start
    barge_in_min_speech_ms: float = 400.0  # speech needed to interrupt the assistant (a cough is shorter)
    max_turn_s: float = 60.0            # an endless turn is cut here
    refine_with_energy: float = 1.0     # 1: move boundaries to the signal's energy edges (see EnergyEdges)
    turn_detection: str = "model"       # "model": the end-of-turn model decides at pauses; "silence": end_silence_ms
    turn_pause_ms: float = 200.0        # model: the silence at which the model is first asked
    turn_max_silence_ms: float = 1500.0  # model: a silence this long ends the turn whatever the model says
    turn_threshold: float = 0.0         # model: P(over) needed to end the turn (0: the model's own threshold)
    turn_recheck_ms: float = 96.0       # model: asked again this often while the silence lasts (0: asked once)
    turn_speculate_threshold: float = 0.3  # model: P(over) at which the answer starts, held until the turn is
                                        # decided over (0: never; at or above the decision threshold: never)
    turn_speculate_ms: float = 96.0     # model, speculation on: the silence at which the model is asked once before
                                        # turn_pause_ms, only whether to start the answer (0: not before turn_pause_ms)
    turn_late_ms: float = 800.0         # model: from this much silence on, turn_late_threshold decides when lower (0: never)
    turn_late_threshold: float = 0.5    # model: the decision threshold of a long silence (docs/turn-taking.md)
    turn_text: float = 0.0              # model: 1 hears the words before a pause too (when models/turn has a text
                                        # model; measured, not the default: docs/turn-taking.md), 0 the audio alone
    turn_text_wait_ms: float = 150.0    # model with a text model: how long past a due check the decision may wait
                                        # for the transcript of the words before the pause (then: audio alone)

    barge_in_detection: str = "model"   # "model": the barge-in model decides; "duration": barge_in_min_speech_ms
    barge_in_check_ms: float = 160.0    # model: speech heard when the model is first asked
    barge_in_recheck_ms: float = 32.0   # model: asked again this often while the speech lasts (rounded up to
                                        # the VAD's 32 ms windows; 0: asked once, then only barge_in_max_speech_ms)
    barge_in_from_onset: float = 1.0    # model: 1 counts the speech heard from its onset by energy (as the model
                                        # was trained and evaluated), 0 from the first window Silero called speech
    barge_in_max_speech_ms: float = 1500.0  # model: this much speech interrupts whatever the model says
    barge_in_threshold: float = 0.0     # model: P(interruption) needed (0: the model's own threshold)

    TURN_MODES = ("model", "silence")
    BARGE_IN_MODES = ("model", "duration")

    # The largest value a client may ask for (a huge pre-roll would allocate without bound).
    LIMITS = {"neg_threshold_offset": 1.0, "min_speech_ms": 10_000.0, "end_silence_ms": 10_000.0,
              "pre_roll_ms": 2_000.0, "barge_in_min_speech_ms": 10_000.0, "max_turn_s": 600.0,
              "threshold": 1.0, "refine_with_energy": 1.0, "turn_pause_ms": 10_000.0,
              "turn_max_silence_ms": 10_000.0, "turn_threshold": 1.0, "turn_recheck_ms": 10_000.0, "barge_in_check_ms": 10_000.0,
              "barge_in_recheck_ms": 10_000.0, "barge_in_from_onset": 1.0,
              "turn_speculate_threshold": 1.0, "turn_speculate_ms": 10_000.0, "turn_late_ms": 10_000.0, "turn_late_threshold": 1.0,
              "turn_text_wait_ms": 10_000.0, "turn_text": 1.0,
              "barge_in_max_speech_ms": 10_000.0, "barge_in_threshold": 1.0}
    CHOICES = {"turn_detection": TURN_MODES, "barge_in_detection": BARGE_IN_MODES}

    @classmethod
    def from_options(cls, options: dict) -> "VadConfig":
        """Build from hello options (unknown keys ignored, bad values raise ValueError)."""
        kwargs: dict = {}
        for name, choices in cls.CHOICES.items():
            if name in options:
                if options[name] not in choices:
                    raise ValueError(f"option {name} must be one of {', '.join(choices)}, got {options[name]!r:.40}")
                kwargs[name] = options[name]
        for f in fields(cls):
            if f.name in options and f.name not in cls.CHOICES:
                value = float(options[f.name])
                if not np.isfinite(value) or value < 0:
                    raise ValueError(f"option {f.name} must be a finite non-negative number")
                if value > cls.LIMITS[f.name]:
                    raise ValueError(f"option {f.name} must be at most {cls.LIMITS[f.name]:g}")
                kwargs[f.name] = value
        cfg = cls(**kwargs)
        if cfg.refine_with_energy not in (0.0, 1.0):
            raise ValueError("option refine_with_energy must be 0 or 1")
        if cfg.turn_text not in (0.0, 1.0):
            raise ValueError("option turn_text must be 0 or 1")
        if cfg.barge_in_from_onset not in (0.0, 1.0):
            raise ValueError("option barge_in_from_onset must be 0 or 1")
        if not 0.0 < cfg.threshold < 1.0:
            raise ValueError("option threshold must be between 0 and 1")
        if cfg.turn_max_silence_ms < cfg.turn_pause_ms:
            raise ValueError("option turn_max_silence_ms must be at least turn_pause_ms")
        if cfg.barge_in_max_speech_ms < cfg.barge_in_check_ms:
            raise ValueError("option barge_in_max_speech_ms must be at least barge_in_check_ms")
        return cfg

    @property
    def end_wait_ms(self) -> float:
        """The silence that ends a turn without a model decision."""
        return self.turn_max_silence_ms if self.turn_detection == "model" else self.end_silence_ms


class EnergyEdges:
    """Finds where speech really starts and ends from the energy of 8 ms sub-frames.

    Silero's probability lags the signal: it stays high for 50-150 ms after speech stops (its
    hangover) and can ignore a soft leading fricative. Around each boundary that Silero reports,
    this walks over the adjacent sub-frames that are still loud (start) or already quiet (end),
    loud meaning above max(noise floor + 6 dB, burst peak - 40 dB), on pre-emphasised audio. The noise floor follows the
    most recent windows that Silero calls silence (the median of the last eight).
    """

    SUBFRAME = 128                 # samples at 16 kHz: 8 ms
    HISTORY = 128                  # sub-frames kept (1 s)
    MAX_WALK_S = 0.3               # never move a boundary further than this
    ABOVE_FLOOR_DB = 6.0           # loud: this far above the noise floor ...
    BELOW_PEAK_DB = 40.0           # ... and no further than this below the burst's peak

    def __init__(self) -> None:
        self.db: deque[float] = deque(maxlen=self.HISTORY)
        self.next_index = 0        # absolute index of the next sub-frame
        self.silent_levels: deque[float] = deque(maxlen=8)
        self._last_sample = 0.0
        self.peak_db = -120.0

    @property
    def floor_db(self) -> float:
        return float(np.median(self.silent_levels)) if self.silent_levels else -60.0

    def _levels(self, pcm: np.ndarray) -> np.ndarray:
        """dB of each whole 8 ms sub-frame of `pcm`, pre-emphasised (a first difference keeps rumble
        and the low end of pops out of the energy), continuing from the last sample added."""
        x = pcm.astype(np.float64)
        emphasised = np.concatenate([[x[0] - 0.95 * self._last_sample], x[1:] - 0.95 * x[:-1]])
        n = len(emphasised) // self.SUBFRAME
        frames = emphasised[: n * self.SUBFRAME].reshape(n, self.SUBFRAME)
        return 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)

    def add(self, window: np.ndarray, silent: bool) -> None:
        levels = self._levels(window)
        self._last_sample = float(window[-1])
        self.db.extend(levels.tolist())
        self.next_index += len(levels)
        if silent:
            self.silent_levels.append(max(float(np.median(levels)), -90.0))
        else:
            self.peak_db = max(self.peak_db, float(levels.max()))

    def new_burst(self) -> None:
        self.peak_db = -120.0

    def _loud(self, i: int) -> bool:
        return self.db[i] >= self._threshold_db()

    def _threshold_db(self) -> float:
        return max(self.floor_db + self.ABOVE_FLOOR_DB, self.peak_db - self.BELOW_PEAK_DB)

    def is_quiet(self, pcm: np.ndarray) -> bool:
        """True if none of the whole 8 ms sub-frames of `pcm` (samples after the last window) is loud."""
        if len(pcm) < self.SUBFRAME:
            return True
        return bool(np.all(self._levels(pcm) < self._threshold_db()))

    def _index(self, t_s: float) -> int:
        """Position in `db` of the sub-frame starting at t_s (may be out of range)."""
        first = self.next_index - len(self.db)
        return round(t_s * SAMPLE_RATE_HZ / self.SUBFRAME) - first

    def _time(self, i: int) -> float:
        return (self.next_index - len(self.db) + i) * self.SUBFRAME / SAMPLE_RATE_HZ

    def refine_start(self, t_s: float) -> float:
        """Walk back from a start at t_s over loud sub-frames just before it."""
        i = self._index(t_s)
        limit = max(0, self._index(t_s - self.MAX_WALK_S))
        while i - 1 >= limit and i - 1 < len(self.db) and self._loud(i - 1):
            i -= 1
        return min(t_s, self._time(i)) if i >= 0 else t_s

    def refine_end(self, t_s: float, not_before_s: float) -> float:
        """Walk back from an end at t_s over the quiet sub-frames before it (Silero's hangover)."""
        i = min(self._index(t_s), len(self.db))
        limit = max(0, self._index(max(not_before_s, t_s - self.MAX_WALK_S)))
        while i - 1 >= limit and not self._loud(i - 1):
            i -= 1
        return min(t_s, self._time(i))


_missing_logged: set[str] = set()


def _load_detector(name: str, fallback: str):
    from voice.turn.model import shared_detector

    try:
        return shared_detector(name=name)
    except (FileNotFoundError, ValueError) as exc:
        if name not in _missing_logged:
            log.warning("no %s (%s); %s", name, exc, fallback)
            _missing_logged.add(name)
        return None


def load_turn_detector():
    """The shipped end-of-turn detector, or None (logged once) when models/turn is missing or broken."""
    from voice.turn.model import WEIGHTS

    return _load_detector(WEIGHTS, "turns end after end_silence_ms of silence")


def load_barge_in_detector():
    """The shipped barge-in detector, or None (logged once) when it is missing or broken."""
    from voice.turn.model import BARGE_IN_WEIGHTS

    return _load_detector(BARGE_IN_WEIGHTS, "barge_in_min_speech_ms of speech interrupts the assistant")


class VadStage(Stage):
    """Inline head of every pipeline.

    In: `UserAudio` at the client's rate. Out: `SpeechStarted`, the turn's `UserAudio` at 16 kHz
    in 512-sample windows (pre-roll first), `SpeechStopped` stamped with the time speech ended
    on the input timeline and the reason the turn ended. While the assistant is active, speech of
    at least `barge_in_min_speech_ms` interrupts it before the new turn starts.

    With `turn_detection="model"` an `Detector` decides at pauses (the shipped one unless
    `turn_detector` is given); without a shipped model the stage falls back to `silence`.
    """

    name = "vad"
    inline = True

    def __init__(self, input_rate_hz: int, config: VadConfig | None = None,
                 model: SileroVadModel | None = None, turn_detector=None, barge_in_detector=None) -> None:
        super().__init__()
        config = config or VadConfig()
        self.input_rate_hz = input_rate_hz
        self._model = model or shared_model()
        self.turn_detector = None
        if config.turn_detection == "model":
            self.turn_detector = turn_detector or load_turn_detector()
            if self.turn_detector is None:
                config = replace(config, turn_detection="silence")
        self.barge_in_detector = None
        if config.barge_in_detection == "model":
            self.barge_in_detector = barge_in_detector or load_barge_in_detector()
            if self.barge_in_detector is None:
                config = replace(config, barge_in_detection="duration")
        self.config = config
        # whether answers may start speculatively: model mode, a threshold below the decision's (fixed per session)
        self.speculates = (self.turn_detector is not None
                           and 0 < config.turn_speculate_threshold < self.turn_threshold)
        self.turn_id = 0
        self._reset_state()

    def _reset_state(self) -> None:
        self._resampler = StreamingResampler(self.input_rate_hz, SAMPLE_RATE_HZ)
        self._silero = SileroState()
        self._pending = np.zeros(0, np.float32)
        self._window_index = 0
        self._pre_roll: deque[np.ndarray] = deque(maxlen=max(1, round(self.config.pre_roll_ms / 1000 / WINDOW_S)))
        self._triggered = False     # speech seen, turn not yet over
        self._confirmed = False     # SpeechStarted emitted for it
        self._start_s = 0.0
        self._silence_from_s: float | None = None
        self._held: list[np.ndarray] = []   # windows of a speech burst not yet confirmed
        self._held_start_s = 0.0
        self._speech_windows = 0    # windows of the burst that Silero called speech
        self._onset_lead_s = 0.0    # speech by energy before the first window Silero called speech
        self._energy = EnergyEdges()
        context = max([d.context_samples for d in (self.turn_detector, self.barge_in_detector) if d is not None],
                      default=WINDOW_SAMPLES)
        self._recent: deque[np.ndarray] = deque(maxlen=max(1, -(-context // WINDOW_SAMPLES)))
        self._next_check_s: float | None = None   # model: stream time of the next question to it
        self._next_barge_check_s: float | None = None
        self._speculating = False   # a speculative SpeechStopped was sent for this turn, not yet decided
        self._asked_early = False   # the model was asked at turn_speculate_ms of this silence
        self._tail_text = None      # model with a text model: future of the transcript of the words before this pause
        self._text_due_s: float | None = None   # stream time of the check that is waiting for it
        self._turn_windows: list[tuple[np.ndarray, float]] = []   # the turn's audio, to send again on a retract

    @property
    def turn_threshold(self) -> float | None:
        """P(over) that ends a turn in model mode (the hello's or the pipeline's, else the model's own); None in silence mode."""
        if self.turn_detector is None:
            return None
        own = self.turn_detector.threshold
        if not self.hears_words:
            own = getattr(self.turn_detector, "audio_threshold", own)
        return self.config.turn_threshold or own

    @property
    def hears_words(self) -> bool:
        """Whether the end-of-turn decisions also hear the transcript of the words before each pause."""
        return (self.turn_detector is not None and self.config.turn_text == 1.0
                and getattr(self.turn_detector, "text_model", None) is not None)

    def reset(self) -> None:
        self._reset_state()

    @property
    def stream_s(self) -> float:
        return self._window_index * WINDOW_S

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if not isinstance(frame, UserAudio):
            yield frame
            return
        audio = self._resampler.process(frame.pcm)
        self._pending = np.concatenate([self._pending, audio])
        n = len(self._pending) // WINDOW_SAMPLES
        windows, self._pending = self._pending[: n * WINDOW_SAMPLES], self._pending[n * WINDOW_SAMPLES:]
        for window in windows.reshape(n, WINDOW_SAMPLES):
            async for out in self._on_window(window):
                yield out
        async for out in self._end_within_window():
            yield out

    async def _end_within_window(self) -> AsyncIterator[Frame]:
        """End the turn as soon as the silence is long enough, not at the next 32 ms window.

        Silero needs whole windows; between two of them the samples already received decide,
        if they are all quiet by energy, that the silence Silero saw still holds.
        """
        if not (self._confirmed and self._silence_from_s is not None and len(self._pending)):
            return
        now_s = self.stream_s + len(self._pending) / SAMPLE_RATE_HZ
        if now_s - self._silence_from_s < self.config.end_wait_ms / 1000:
            return
        if self._energy.is_quiet(self._pending):
            reason = "max_silence" if self.turn_detector is not None else "silence"
            async for out in self._end_burst(self._silence_from_s, reason):
                yield out

    async def _on_window(self, window: np.ndarray) -> AsyncIterator[Frame]:
        cfg = self.config
        t_s = self.stream_s
        self._window_index += 1
        p = self._model.probability(self._silero, window)
        self._recent.append(window)
        is_speech = p >= cfg.threshold
        is_silence = p < cfg.threshold - cfg.neg_threshold_offset
        self._energy.add(window, silent=is_silence and not self._triggered)

        if not self._triggered:
            if not is_speech:
                self._pre_roll.append(window)
                return
            self._triggered, self._confirmed = True, False
            self._speech_windows = 0
            self._start_s, self._silence_from_s = t_s, None
            if cfg.refine_with_energy:
                self._start_s = self._energy.refine_start(t_s)
            self._held_start_s = t_s - len(self._pre_roll) * WINDOW_S
            self._onset_lead_s = t_s - self._start_s
            self._held = list(self._pre_roll) + [window]
            self._pre_roll.clear()
        else:
            if self._confirmed:
                if is_speech and self._speculating:
                    async for out in self._resume():
                        yield out
                yield self._audio(window, t_s)
            else:
                self._held.append(window)
            if is_speech:
                self._silence_from_s = None
                self._next_check_s = None
                self._asked_early = False
                self._drop_transcript()
            elif is_silence and self._silence_from_s is None:
                self._silence_from_s = t_s
                if cfg.refine_with_energy:
                    self._silence_from_s = self._energy.refine_end(t_s, not_before_s=self._start_s)
                if self._confirmed and self.hears_words:
                    # the words before the pause, transcribed while the silence grows to the first check
                    self._tail_text = self.turn_detector.start_transcript(np.concatenate(list(self._recent)))
        if is_speech:
            self._speech_windows += 1

        end_s = t_s + WINDOW_S
        if self._silence_from_s is not None:
            reason, p_end = self._turn_over(end_s)
            if reason == "speculate":
                self._speculating = True
                log.debug("turn %d: speculative end, P(over)=%.2f", self.turn_id, p_end)
                yield SpeechStopped(turn_id=self.turn_id, stream_s=round(self._silence_from_s, 4),
                                    speech_start_s=round(self._start_s, 4), reason="model",
                                    end_probability=p_end, speculative=True)
            elif reason is not None:
                async for out in self._end_burst(self._silence_from_s, reason, p_end):
                    yield out
                return
        if not self._confirmed:
            speech_ms = self._speech_windows * WINDOW_S * 1000   # speech only: pauses do not count
            active = self.ctx is not None and self.ctx.assistant_active()
            if self._silence_from_s is None:
                if not active:
                    starts = speech_ms >= cfg.min_speech_ms - 1e-6
                elif self.barge_in_detector is None:
                    starts = speech_ms >= max(cfg.min_speech_ms, cfg.barge_in_min_speech_ms) - 1e-6
                else:
                    heard_ms = speech_ms + 1000 * self._onset_lead_s * cfg.barge_in_from_onset
                    starts = self._barge_in_says(heard_ms, end_s)
                if starts:
                    if active:
                        log.info("barge-in after %.0f ms of speech", speech_ms)
                        await self.ctx.interrupt("barge_in")
                    async for out in self._confirm():
                        yield out
        elif end_s - self._start_s >= cfg.max_turn_s:
            log.warning("turn %d reached max_turn_s=%.0f; ending it", self.turn_id, cfg.max_turn_s)
            async for out in self._end_burst(end_s, "max_turn"):
                yield out

    def _turn_over(self, now_s: float) -> tuple[str | None, float | None]:
        """Whether the silence that started at `_silence_from_s` ends the turn at `now_s`, and why.

        Silence mode: once it lasts end_silence_ms. Model mode: once it lasts turn_max_silence_ms,
        or earlier when the end-of-turn model, asked at turn_pause_ms and every turn_recheck_ms after,
        says the turn is over; "speculate" when it rates the end likely (turn_speculate_threshold) but
        not sure, the first time in this silence. An unconfirmed burst (too short to be a turn) ends
        as in silence mode.
        """
        cfg = self.config
        silence_ms = (now_s - self._silence_from_s) * 1000
        if self.turn_detector is None or not self._confirmed:
            limit = cfg.end_silence_ms if self.turn_detector is None else min(cfg.end_silence_ms, cfg.turn_max_silence_ms)
            return ("silence", None) if silence_ms >= limit - 1e-6 else (None, None)
        if silence_ms >= cfg.turn_max_silence_ms - 1e-6:
            return "max_silence", None
        if silence_ms < cfg.turn_pause_ms - 1e-6:
            return self._early_speculation(silence_ms)
        if self._next_check_s is not None and now_s < self._next_check_s - 1e-6:
            return None, None
        text = None
        if self._tail_text is not None:
            if not self._tail_text.done():
                self._text_due_s = now_s if self._text_due_s is None else self._text_due_s
                if (now_s - self._text_due_s) * 1000 < cfg.turn_text_wait_ms - 1e-6:
                    return None, None       # asked again at the next window, not later than turn_text_wait_ms
            else:
                text = self._transcript_or_none()
        self._text_due_s = None
        self._next_check_s = now_s + cfg.turn_recheck_ms / 1000 if cfg.turn_recheck_ms > 0 else float("inf")
        recent = np.concatenate(list(self._recent))
        p_end = self.turn_detector.probability(recent) if text is None else self.turn_detector.probability(recent, text)
        log.debug("turn %d: P(over)=%.2f after %.0f ms of silence", self.turn_id, p_end, silence_ms)
        if p_end >= decision_threshold(self.turn_threshold, silence_ms, cfg.turn_late_ms, cfg.turn_late_threshold):
            return "model", round(p_end, 4)
        if self.speculates and not self._speculating and p_end >= cfg.turn_speculate_threshold:
            return "speculate", round(p_end, 4)
        return None, None

    def _early_speculation(self, silence_ms: float) -> tuple[str | None, float | None]:
        """Before the first decision (`turn_pause_ms`): at `turn_speculate_ms` of silence the model is asked once
        whether to start the answer; it never ends the turn there (the audio alone: no transcript is awaited).
        Not while the session says its server has no cores to spare (`StageContext.may_speculate_early`)."""
        cfg = self.config
        if (not self.speculates or self._speculating or self._asked_early or cfg.turn_speculate_ms <= 0
                or silence_ms < cfg.turn_speculate_ms - 1e-6):
            return None, None
        self._asked_early = True
        affordable = getattr(self.ctx, "may_speculate_early", None)
        if affordable is not None and not affordable():     # a loaded server: no work that may be thrown away
            return None, None
        p_end = self.turn_detector.probability(np.concatenate(list(self._recent)))
        log.debug("turn %d: P(over)=%.2f after %.0f ms of silence (speculation only)", self.turn_id, p_end, silence_ms)
        if p_end >= cfg.turn_speculate_threshold:
            return "speculate", round(p_end, 4)
        return None, None

    def _transcript_or_none(self) -> str | None:
        try:
            return self._tail_text.result()
        except Exception as exc:   # a broken transcript never ends a session: the audio alone decides
            log.warning("turn %d: the transcript of the pause failed (%s: %s)", self.turn_id, type(exc).__name__, exc)
            self._tail_text = None
            return None

    def _drop_transcript(self) -> None:
        if self._tail_text is not None:
            self._tail_text.cancel()
        self._tail_text, self._text_due_s = None, None

    def _barge_in_says(self, speech_ms: float, now_s: float) -> bool:
        """Model mode, while the assistant speaks: is this burst the user taking the turn?"""
        cfg = self.config
        if speech_ms >= cfg.barge_in_max_speech_ms - 1e-6:
            return True
        if speech_ms < cfg.barge_in_check_ms - 1e-6:
            return False
        if self._next_barge_check_s is not None and now_s < self._next_barge_check_s - 1e-6:
            return False
        # asked once when the interval is 0: the next check is never due
        self._next_barge_check_s = now_s + cfg.barge_in_recheck_ms / 1000 if cfg.barge_in_recheck_ms else float("inf")
        n = -(-self.barge_in_detector.context_samples // WINDOW_SAMPLES)
        p = self.barge_in_detector.probability(np.concatenate(list(self._recent)[-n:]))
        log.debug("turn %d: P(barge-in)=%.2f after %.0f ms of speech", self.turn_id, p, speech_ms)
        return p >= (cfg.barge_in_threshold or self.barge_in_detector.threshold)

    async def _confirm(self) -> AsyncIterator[Frame]:
        self.turn_id += 1
        self._confirmed = True
        self._turn_windows = []
        yield SpeechStarted(turn_id=self.turn_id, stream_s=round(self._start_s, 4))
        for i, w in enumerate(self._held):
            yield self._audio(w, self._held_start_s + i * WINDOW_S)
        self._held = []

    async def _resume(self) -> AsyncIterator[Frame]:
        """The user goes on after a speculative end: take the answer back, then send the turn again from its start."""
        log.debug("turn %d: speech again after a speculative end; the answer is taken back", self.turn_id)
        self._speculating = False
        if self.ctx is not None:
            await self.ctx.retract(self.turn_id)
        yield SpeechStarted(turn_id=self.turn_id, stream_s=round(self._start_s, 4), resumed=True)
        for w, t_s in self._turn_windows:
            yield UserAudio(turn_id=self.turn_id, pcm=w, sample_rate_hz=SAMPLE_RATE_HZ, stream_s=round(t_s, 4))

    async def _end_burst(self, speech_end_s: float, reason: str = "silence",
                         end_probability: float | None = None) -> AsyncIterator[Frame]:
        if self._confirmed and self._speculating:
            yield TurnConfirmed(turn_id=self.turn_id, stream_s=round(speech_end_s, 4),
                                speech_start_s=round(self._start_s, 4), reason=reason,
                                end_probability=end_probability)
        elif self._confirmed:
            yield SpeechStopped(turn_id=self.turn_id, stream_s=round(speech_end_s, 4),
                                speech_start_s=round(self._start_s, 4), reason=reason,
                                end_probability=end_probability)
        self._triggered, self._confirmed, self._speculating = False, False, False
        self._turn_windows = []
        self._silence_from_s = None
        self._next_check_s = None
        self._next_barge_check_s = None
        self._drop_transcript()
        self._energy.new_burst()
        self._pre_roll.clear()
        self._held = []

    def _audio(self, window: np.ndarray, t_s: float) -> UserAudio:
        if self.speculates:
            self._turn_windows.append((window, t_s))
        return UserAudio(turn_id=self.turn_id, pcm=window, sample_rate_hz=SAMPLE_RATE_HZ, stream_s=round(t_s, 4))
