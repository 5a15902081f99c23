"""`load_codec(source)`: one place that turns a codec reference into a ready `StreamingCodec`."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import torch

from voice.codec.codec import StreamingCodec
from voice.codec.streaming import pack_fp16_weights

logger = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parents[2] / "models" / "codec"
DEFAULT_COMPACT = MODELS_DIR / "compact_codec.pt"
ENCODEC_24KHZ_FILE = "encodec_24khz-d7cc33bc.th"  # the name (and sha256 prefix) the `encodec` package downloads
ENCODEC_DEFAULT_KBPS = 1.5  # 2 codebooks at 75 Hz


def split_source(source: str) -> tuple[str, float | None]:
    """'encodec_24khz:3' -> ('encodec_24khz', 3.0); a suffix that is not a number stays part of the name."""
    name, _, suffix = source.rpartition(":")
    if name:
        try:
            return name, float(suffix)
        except ValueError:
            pass
    return source, None


def strip_weight_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Fold weight-norm reparametrisations into plain weights (faster inference, same outputs)."""
    for sub in module.modules():
        if hasattr(sub, "weight_g"):
            torch.nn.utils.remove_weight_norm(sub)
    return module


def _encodec_codec(model, kbps: float | None, name: str) -> StreamingCodec:
    kbps = ENCODEC_DEFAULT_KBPS if kbps is None else kbps
    if kbps not in model.target_bandwidths:
        raise ValueError(f"EnCodec 24 kHz supports {model.target_bandwidths} kbps, not {kbps}")
    model.set_target_bandwidth(kbps)
    num_codebooks = model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, kbps)
    strip_weight_norm(model.eval())
    hop = int(math.prod(model.encoder.ratios))
    # reflect padding at the start: the deepest reflect-padded conv (kernel 7 at the frame rate) waits for 7 frames
    return StreamingCodec(model.encoder, model.quantizer, model.decoder, sample_rate_hz=model.sample_rate,
                          hop_length=hop, num_codebooks=num_codebooks, name=f"{name}:{kbps:g}",
                          start_delay_frames=6)


def load_encodec_24khz(kbps: float | None = None, path: Path | None = None) -> StreamingCodec:
    """Pretrained EnCodec 24 kHz from a local state-dict file, the torch hub cache, or a download."""
    from encodec import EncodecModel

    model = EncodecModel.encodec_model_24khz(pretrained=False)
    if path is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / ENCODEC_24KHZ_FILE
        if cached.exists():
            path = cached
        else:
            try:  # the package's own download into the torch hub cache (needs internet)
                state = EncodecModel._get_pretrained(ENCODEC_24KHZ_FILE, None)
            except Exception as exc:  # noqa: BLE001 - any network failure gets the same advice
                raise RuntimeError(f"EnCodec 24 kHz weights are not in {cached} and could not be downloaded "
                                   f"({exc}); copy {ENCODEC_24KHZ_FILE} there or pass its path") from exc
            model.load_state_dict(state)
            return _encodec_codec(model, kbps, "encodec_24khz")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    codec = _encodec_codec(model, kbps, "encodec_24khz")
    codec.cache_id = f"encodec_24khz-{sha256_of(Path(path))[:10]}-{kbps or ENCODEC_DEFAULT_KBPS:g}kbps"
    return codec


def load_compact(path: Path, num_codebooks: int | None = None, fp16_weights: bool = True) -> StreamingCodec:
    """The project's compact codec from an exported checkpoint file or a training run folder; `fp16_weights`:
    its streaming GEMMs read float16 copies of the weights that float16 holds exactly (`pack_fp16_weights`:
    the same results up to the order of sums, about twice as fast a step)."""
    from voice.codec.compact import CompactCodec

    model = CompactCodec.from_checkpoint(_read_compact(path)).float().eval()
    if fp16_weights:
        pack_fp16_weights(model)  # before weight norm is folded: its direction v is what float16 holds
    strip_weight_norm(model)
    default_k = (model_meta(path) or {}).get("default_num_codebooks")
    codec = model.streaming(num_codebooks or default_k, name=f"compact:{Path(path).name}")
    codec.fp16_weights = fp16_weights
    if Path(path).is_file():
        codec.cache_id = f"compact-{sha256_of(Path(path))[:10]}"
    return codec


def model_meta(path: Path) -> dict | None:
    path = Path(path)
    if path.is_dir():
        return None
    return torch.load(path, map_location="cpu", weights_only=True).get("meta")


def _read_compact(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():  # a training run: ckpt.json + shards
        from voice.codec.train import _unprefixed, load_checkpoint

        loaded = load_checkpoint(path)
        if loaded is None:
            raise FileNotFoundError(f"{path} holds no codec checkpoint (ckpt.json)")
        payload, tensors = loaded
        return {"format": "voice-compact-codec", "version": 1, "config": payload["model_config"],
                "state_dict": _unprefixed("model.", tensors), "meta": {"step": payload["step"]}}
    return torch.load(path, map_location="cpu", weights_only=True)


def load_codec(source: str = "compact", num_codebooks: int | None = None) -> StreamingCodec:
    """'compact' (shipped in models/codec), 'encodec_24khz[:kbps]', a checkpoint file[:kbps] or a run folder."""
    name, kbps = split_source(source)
    if name in ("", "compact"):
        if not DEFAULT_COMPACT.exists():
            raise FileNotFoundError(f"the shipped compact codec is missing: {DEFAULT_COMPACT}")
        return load_compact(DEFAULT_COMPACT, num_codebooks)
    if name == "encodec_24khz":
        return load_encodec_24khz(kbps)
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"unknown codec source {source!r}: not 'compact', 'encodec_24khz[:kbps]' or a path")
    if path.is_dir():
        return load_compact(path, num_codebooks)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and checkpoint.get("format") == "voice-compact-codec":
        return load_compact(path, num_codebooks)
    return load_encodec_24khz(kbps, path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_run(run_dir: Path, out: Path, default_num_codebooks: int | None = None, meta: dict | None = None) -> dict:
    """Training run -> inference checkpoint (float16 weights, no optimizer or VQ EMA state) + its sha256."""
    from voice.codec.compact import CompactCodec

    raw = _read_compact(run_dir)
    model = CompactCodec.from_checkpoint(raw)
    info = {"step": raw["meta"].get("step"), "default_num_codebooks": default_num_codebooks or
            model.config.num_codebooks, **(meta or {})}
    checkpoint = model.checkpoint(meta=info, for_inference=True)
    checkpoint["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return {"path": str(out), "bytes": out.stat().st_size, "sha256": sha256_of(out), "meta": info,
            "config": json.loads(json.dumps(checkpoint["config"]))}
