"""`voice data ear`: cache the Whisper ear's features of a corpus's utterances, like the codec's token cache.

`<corpus>/ear/<ear id>/<shard>/<utterance id>.npy` holds float16 [frames, 384] (one row per 20 ms,
computed chunk by chunk exactly as `EarStream` does while a user speaks), with an `index.jsonl`.
Resumable: utterances already cached are skipped, and the index is written even when interrupted.

`--speed-variants N` also caches N speed-perturbed copies of every train-split turn (Kaldi's speed
perturbation: the audio played 0.85-1.15x as fast, so its tempo, pitch and formants move together,
a factor drawn per utterance and variant from a fixed seed), each in its own folder
`<ear id>~speed<v>`. An ear encoder trained on them hears 13 training voices as many more
(`voice train hearing --ear --ear-speed-variants N`). Validation and test turns are never perturbed.

`--extra-voices NAME,...` also caches every train-split user turn re-spoken in each named voice of
`voice.data.voices.EXTRA_VOICES` (voices never in the corpus, none near a test voice), with the turn's
own speaking rate and pitch and the corpus's seeded augmentation, each in `<ear id>~voice-<name>`
(`voice train hearing --ear --ear-extra-voices NAME,...`).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from voice.audio import speed_perturb  # noqa: F401  (the copies' perturbation; tests reach it here)
from voice.codec.tokenize import _read_index     # the ear's index.jsonl has the token cache's format
from voice.data.voices import extra_voices
from voice.speechlm.whisper_ear import EarConfig


def ear_id(config: EarConfig) -> str:
    """A folder name that changes whenever the features would."""
    return f"whisper-tiny.en-int8-c{config.chunk}x{config.context}"


SPEED_RANGE = (0.85, 1.15)


def variant_id(ear: str, variant: int) -> str:
    """The folder of speed variant `variant` (1, 2, ...) of the cache `ear` (an `ear_id`)."""
    return f"{ear}~speed{variant}"


def speed_factor(utterance_id: str, variant: int) -> float:
    """How much faster variant `variant` of an utterance plays: uniform in SPEED_RANGE, rounded to 0.01,
    the same on every machine (seeded by the utterance id and the variant)."""
    rng = np.random.default_rng(zlib.crc32(f"{utterance_id}/{variant}".encode()))
    return round(float(rng.uniform(*SPEED_RANGE)), 2)


def extra_voice_id(ear: str, voice: str) -> str:
    """The folder of the train turns re-spoken in extra voice `voice` (an EXTRA_VOICES name) of the cache `ear`."""
    return f"{ear}~voice-{voice.replace(':', '-')}"


def respoken(record: dict, voice: str, synth) -> np.ndarray:
    """A user turn's text said in extra voice `voice` at the turn's own rate and pitch, then augmented as the
    corpus augments user turns (seeded by the turn and the voice): float32 at 16 kHz."""
    from voice.data.augment import AugmentConfig, augment
    from voice.data.voices import get_voice
    from voice.speechlm.whisper_ear import SAMPLE_RATE_HZ

    audio = synth.synthesize(record["text"], get_voice(voice), SAMPLE_RATE_HZ, record.get("speed", 1.0),
                             record.get("pitch_semitones", 0.0))
    audio, _ = augment(audio, SAMPLE_RATE_HZ, zlib.crc32(f"{record['id']}/{voice}".encode()), AugmentConfig())
    return audio.astype(np.float32) / 32768.0


def load_ear_index(corpus: Path, config: EarConfig) -> dict:
    return _read_index(Path(corpus) / "ear" / ear_id(config))


def load_features(corpus: Path, row: dict) -> np.ndarray:
    return np.load(Path(corpus) / row["path"]).astype(np.float32)


def cache_ear_features(corpus: Path, config: EarConfig = EarConfig(), splits: tuple[str, ...] = ("train", "validation", "test"),
                       roles: tuple[str, ...] = ("user",), threads: int = 2, limit: int | None = None,
                       speed_variants: int = 0, voices: list[str] | tuple[str, ...] = ()) -> dict:
    """Encode every utterance of `splits` and `roles` once (and `speed_variants` perturbed copies of the
    train split's, and the train split's re-spoken in each extra voice of `voices`); later calls only add
    what is missing."""
    from voice.data.manifest import read_manifest
    from voice.speechlm.whisper_ear import WhisperEar

    corpus = Path(corpus)
    records = [r for r in read_manifest(corpus) if r["split"] in splits and r["role"] in roles][:limit]
    ear = WhisperEar(threads=threads, config=config)
    name = ear_id(config)
    index, encoded = _cache(corpus, name, records, ear, config, lambda audio, record: audio)
    result = {"ear_id": name, "folder": str(corpus / "ear" / name), "utterances": len(index), "encoded_now": encoded}
    train = [r for r in records if r["split"] == "train"]
    for v in range(1, speed_variants + 1):
        index, encoded = _cache(corpus, variant_id(name, v), train, ear, config,
                                lambda audio, record, v=v: speed_perturb(audio, speed_factor(record["id"], v)))
        result.setdefault("speed_variants", []).append({"ear_id": variant_id(name, v), "utterances": len(index),
                                                         "encoded_now": encoded})
    if voices:
        from voice.data.voices import Synthesizer

        synth = Synthesizer()
        try:
            for voice in extra_voices(voices):
                index, encoded = _cache(corpus, extra_voice_id(name, voice), train, ear, config,
                                        lambda audio, record, voice=voice: respoken(record, voice, synth), read=False)
                result.setdefault("extra_voices", []).append({"ear_id": extra_voice_id(name, voice),
                                                              "utterances": len(index), "encoded_now": encoded})
        finally:
            synth.close()
    return result


def _cache(corpus: Path, name: str, records: list[dict], ear, config: EarConfig, transform,
           read: bool = True) -> tuple[dict, int]:
    """Encode `transform(audio, record)` of every record not yet in the cache `name` (audio None unless `read`);
    -> (its index, how many now)."""
    import soundfile as sf
    from tqdm import tqdm

    from voice.speechlm.whisper_ear import SAMPLE_RATE_HZ

    folder = corpus / "ear" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ear.json").write_text(json.dumps({"model": "whisper tiny.en (CTranslate2, int8)", "chunk": config.chunk,
                                                 "context": config.context, "name": name}, indent=1))
    index = _read_index(folder)
    encoded = 0
    try:
        for record in tqdm(records, desc=f"ear {name}"):
            if record["id"] in index and (corpus / index[record["id"]]["path"]).exists():
                continue
            audio = None
            if read:
                audio, rate = sf.read(str(corpus / record["wav"]), dtype="float32")
                if rate != SAMPLE_RATE_HZ:
                    raise ValueError(f"{record['wav']}: {rate} Hz, the ear reads {SAMPLE_RATE_HZ} Hz")
                if audio.ndim > 1:
                    audio = audio.mean(1)
            feats = ear.encode_turn(transform(audio, record))
            relative = f"ear/{name}/{Path(record['wav']).parent.name}/{record['id']}.npy"
            (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
            np.save(corpus / relative, feats.astype(np.float16))
            index[record["id"]] = {"id": record["id"], "path": relative, "frames": int(len(feats))}
            encoded += 1
    finally:
        tmp = folder / "index.jsonl.tmp"
        tmp.write_text("".join(json.dumps(row) + "\n" for row in index.values()))
        tmp.replace(folder / "index.jsonl")
    return index, encoded


def _run(args) -> int:
    config = EarConfig(chunk=args.chunk, context=args.context)
    roles = ("user", "assistant") if args.roles == "both" else (args.roles,)
    try:
        voices = extra_voices(args.extra_voices)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    result = cache_ear_features(Path(args.corpus), config, tuple(args.splits.split(",")), roles, args.threads, args.limit,
                                args.speed_variants, voices)
    print(json.dumps(result))
    return 0


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    data = command_group(subparsers, registered, "data", "build and check the corpus")
    p = data.add_parser("ear", help="cache the Whisper ear's features of a corpus's user turns (resumable)")
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--splits", default="train,validation,test", help="comma-separated splits")
    p.add_argument("--roles", default="user", choices=["user", "assistant", "both"])
    p.add_argument("--chunk", type=int, default=EarConfig.chunk, help="frames (20 ms) per encoder chunk")
    p.add_argument("--context", type=int, default=EarConfig.context, help="frames of earlier audio each chunk's window sees")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="at most this many utterances (a first look)")
    p.add_argument("--speed-variants", type=int, default=0,
                   help="also cache this many speed-perturbed copies (0.85-1.15x) of every train-split turn")
    p.add_argument("--extra-voices", default="",
                   help="also cache every train-split turn re-spoken in these voices (comma-separated names of "
                        "voice.data.voices.EXTRA_VOICES, or 'all')")
    p.set_defaults(func=_run)
