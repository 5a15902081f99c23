"""`voice data build`: synthesise the dialogue corpus in resumable shards on all cores."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from voice.data import manifest as mf
from voice.data.augment import AugmentConfig, augment
from voice.data.dialogues import Dialogue, generate_dialogues, phrasing_splits
from voice.data.voices import ASSISTANT_VOICE, FAMILY_WEIGHTS, VOICES, VoiceError, VoiceSpec, get_voice, kokoro_voices

log = logging.getLogger(__name__)

DEFAULT_DIALOGUES = {"train": 5100, "validation": 320, "test": 580}  # about 11 h of speech (measured in docs/corpus.md)
SMALL_DIALOGUES = {"train": 24, "validation": 6, "test": 6}
# User speaking rate and pitch: faster and higher than this made diphone voices much harder to understand
# (Whisper WER 11% at 1.15x/+2.5 semitones against 5% neutral and 6% at 0.88x/-2.5, docs/corpus.md).
SPEED_RANGE = (0.85, 1.08)
PITCH_RANGE_SEMITONES = (-2.5, 1.5)


@dataclass(frozen=True)
class BuildConfig:
    out_dir: str = "data/corpus/v2"
    seed: int = 0
    dialogues: dict = field(default_factory=lambda: dict(DEFAULT_DIALOGUES))  # per split
    sample_rate_hz: int = 16000
    augment_probability: float = 0.25  # share of user utterances with noise/gain/reverb
    shard_size: int = 25  # dialogues per shard (the unit of resumption)
    workers: int = 0  # 0: one per CPU core
    user_voices: tuple[str, ...] = ()  # restrict user voices (empty: all registered)
    kokoro: bool = False  # add Kokoro styles as user voices (slow)
    speed_range: tuple[float, float] = SPEED_RANGE  # user speaking rate factor
    pitch_range_semitones: tuple[float, float] = PITCH_RANGE_SEMITONES

    def identity(self) -> dict:
        """The settings that decide the corpus content; a resumed build must match them."""
        d = dataclasses.asdict(self)
        for key in ("out_dir", "workers"):
            d.pop(key)
        for key in ("user_voices", "speed_range", "pitch_range_semitones"):
            d[key] = list(d[key])  # as JSON reads them back
        return d


def user_voice_pools(config: BuildConfig) -> dict[str, list[VoiceSpec]]:
    """User voices per split: train and validation share the training voices; test has its own."""
    voices = [v for v in VOICES.values() if v.name != ASSISTANT_VOICE]
    if config.kokoro:
        extra = kokoro_voices()
        if not extra:
            get_voice("kokoro:missing")  # raises the install hint
        voices += extra                                        # jm_kumo is held out for test (KOKORO_TEST_STYLES)
    if config.user_voices:
        wanted = {get_voice(name).name for name in config.user_voices}  # unknown names raise here
        voices = [v for v in voices if v.name in wanted]
    pools = {"train": [v for v in voices if v.split == "train"], "test": [v for v in voices if v.split == "test"]}
    pools["validation"] = pools["train"]
    for split, n in config.dialogues.items():
        if n and not pools[split]:
            raise VoiceError(f"no user voice left for the {split} split (voices chosen: {', '.join(config.user_voices)})")
    return pools


def _weights(pool: list[VoiceSpec]) -> list[float]:
    families = {v.backend for v in pool}
    return [FAMILY_WEIGHTS.get(v.backend, 0.3) / sum(1 for u in pool if u.backend == v.backend) / len(families) for v in pool]


def plan(config: BuildConfig) -> list[dict]:
    """Every dialogue with its user voice, speed and pitch: deterministic for the config's seed."""
    dialogues = generate_dialogues(config.seed, config.dialogues)
    pools = user_voice_pools(config)
    rng = random.Random(config.seed * 1000003 + 7)
    jobs = []
    for d in dialogues:
        pool = pools[d.split]
        voice = rng.choices(pool, weights=_weights(pool))[0]
        speed = round(rng.uniform(*config.speed_range), 3)
        pitch = round(rng.uniform(*config.pitch_range_semitones), 2)
        jobs.append({"dialogue": d, "voice": voice, "speed": speed, "pitch_semitones": pitch})
    return jobs


def _utterance_seed(seed: int, uid: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{uid}".encode()).digest()[:8], "little")


# ---- worker side ------------------------------------------------------------------------------------

_SYNTH = None


def _init_worker() -> None:
    global _SYNTH
    from voice.data.voices import Synthesizer

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _SYNTH = Synthesizer()


def _synthesize_shard(task: tuple) -> list[dict]:
    """Write the WAVs of one shard and return its manifest records (runs in a worker process)."""
    import soundfile as sf

    shard, jobs, out_dir, config = task
    wav_dir = Path(out_dir) / "wav" / f"{shard:05d}"
    wav_dir.mkdir(parents=True, exist_ok=True)
    aug = AugmentConfig(probability=config.augment_probability)
    records = []
    for job in jobs:
        d: Dialogue = job["dialogue"]
        for i, turn in enumerate(d.turns):
            uid = f"{d.dialogue_id}_{i:02d}"
            user = turn.role == "user"
            voice = job["voice"] if user else VOICES[ASSISTANT_VOICE]
            speed, pitch = (job["speed"], job["pitch_semitones"]) if user else (1.0, 0.0)
            audio = _SYNTH.synthesize(turn.text, voice, config.sample_rate_hz, speed, pitch)
            info: dict = {}
            if user:
                audio, info = augment(audio, config.sample_rate_hz, _utterance_seed(config.seed, uid), aug)
            rel = f"wav/{shard:05d}/{uid}.wav"
            tmp = Path(out_dir) / f"{rel}.tmp"
            sf.write(str(tmp), audio, config.sample_rate_hz, subtype="PCM_16", format="WAV")
            os.replace(tmp, Path(out_dir) / rel)  # readers of a partial build never see half a file
            records.append({
                "id": uid, "dialogue_id": d.dialogue_id, "turn_index": i, "role": turn.role, "text": turn.text,
                "intent": turn.intent, "expected": turn.expected, "phrasing": turn.phrasing, "voice": voice.name,
                "speaker": voice.speaker, "speed": speed, "pitch_semitones": pitch, "augment": info, "split": d.split,
                "wav": rel, "duration_s": round(len(audio) / config.sample_rate_hz, 4),
                "sample_rate_hz": config.sample_rate_hz, "context": d.context, "tokens": None, "source": "synthetic",
            })
    return records


# ---- main side --------------------------------------------------------------------------------------

def _prepare_out_dir(out: Path, config: BuildConfig, n_shards: int) -> set[int]:
    """Create or check the corpus folder; return the shards already finished by an earlier run."""
    try:
        (out / "manifests").mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"cannot write the corpus folder {out}: {exc.strerror or exc}") from exc
    info_path = out / mf.BUILD_INFO
    if info_path.exists():
        old = json.loads(info_path.read_text())
        old_config, new_config = old.get("config") or {}, config.identity()
        if old_config != new_config:
            keys = sorted(k for k in set(old_config) | set(new_config) if old_config.get(k) != new_config.get(k))
            raise ValueError(f"{out} holds a corpus built with other settings (differing: {', '.join(keys)}); "
                             "use another --out folder or delete it")
    done = {int(p.stem.split("_")[1]) for p in (out / "manifests").glob("shard_*.jsonl")}
    return {s for s in done if s < n_shards}


def _write_info(out: Path, config: BuildConfig, status: str, n_shards: int, done: int, pools: dict) -> None:
    info = {"format": mf.FORMAT_NAME, "format_version": mf.FORMAT_VERSION, "status": status,
            "config": config.identity(), "shards_total": n_shards, "shards_done": done,
            "assistant_voice": ASSISTANT_VOICE,
            "user_voices": {s: [v.name for v in p] for s, p in pools.items()},
            "phrasing_splits": phrasing_splits(), "updated_unix": int(time.time())}
    mf.write_atomic(out / mf.BUILD_INFO, json.dumps(info, indent=1, sort_keys=True) + "\n")


def build(config: BuildConfig, progress: bool = True) -> dict:
    """Build (or resume) the corpus in `config.out_dir`; returns the summary."""
    from tqdm import tqdm

    jobs = plan(config)
    pools = user_voice_pools(config)
    shards = [jobs[i:i + config.shard_size] for i in range(0, len(jobs), config.shard_size)]
    out = Path(config.out_dir)
    done = _prepare_out_dir(out, config, len(shards))
    manifest_path = out / mf.MANIFEST
    # Rebuild the manifest from finished shards (drops a line torn by a killed run), in shard order.
    mf.write_atomic(manifest_path, "".join((out / "manifests" / f"shard_{s:05d}.jsonl").read_text() for s in sorted(done)))
    _write_info(out, config, "building", len(shards), len(done), pools)
    todo = [(s, shards[s], str(out), config) for s in range(len(shards)) if s not in done]
    workers = config.workers or os.cpu_count() or 1
    log.info("corpus %s: %d dialogues in %d shards, %d already done, %d workers", out, len(jobs), len(shards), len(done), workers)
    bar = tqdm(total=len(jobs), initial=sum(len(shards[s]) for s in done), unit="dlg", desc="build", disable=not progress)
    seconds = 0.0
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker) as pool, open(manifest_path, "a", encoding="utf-8") as manifest:
        for (shard, shard_jobs, _, _), records in zip(todo, pool.imap(_synthesize_shard, todo)):
            text = mf.dumps(records)
            mf.write_atomic(out / "manifests" / f"shard_{shard:05d}.jsonl", text)
            manifest.write(text)
            manifest.flush()
            done.add(shard)
            seconds += sum(r["duration_s"] for r in records)
            bar.update(len(shard_jobs))
            bar.set_postfix(hours=f"{seconds / 3600:.2f}")
            if len(done) % 20 == 0:
                _write_info(out, config, "building", len(shards), len(done), pools)
    bar.close()
    return finish(out, config, len(shards), pools)


def finish(out: Path, config: BuildConfig, n_shards: int, pools: dict) -> dict:
    """Rewrite the manifest in shard order, write the summary and mark the build complete."""
    text = "".join((out / "manifests" / f"shard_{s:05d}.jsonl").read_text() for s in range(n_shards))
    mf.write_atomic(out / mf.MANIFEST, text)
    summary = mf.summarize(mf.read_manifest(out))
    mf.write_atomic(out / mf.SUMMARY, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    _write_info(out, config, "complete", n_shards, n_shards, pools)
    return summary
