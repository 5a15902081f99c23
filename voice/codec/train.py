"""Train the compact codec: reconstruction + commitment losses, an optional adversarial stage, resumable."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SHARD_BYTES = 15 * 1024 * 1024  # each checkpoint file stays under 16 MB (the device returns files up to 16 MB)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe; stored in every training checkpoint."""

    steps: int = 20000  # total optimizer steps (resuming continues to this number)
    batch_size: int = 16  # crops per step
    segment_frames: int = 50  # crop length in codec frames (50 = 1 s at 50 Hz)
    lr: float = 5e-4  # AdamW learning rate after warm-up
    warmup_steps: int = 300  # linear warm-up (also after a resume without optimizer state)
    lr_decay: float = 0.99998  # multiplicative decay per step after warm-up
    mel_weight: float = 1.0  # multi-scale log-mel L1
    wave_weight: float = 0.1  # waveform L1
    commit_weight: float = 1.0  # VQ commitment loss
    quantizer_dropout: float = 0.5  # chance a step uses a random number of codebooks (1..K), so any prefix works
    assistant_share: float = 0.5  # fraction of crops from the assistant's voice
    speed_low: float = 1.0  # speed augmentation: crops played at n/16 within [speed_low, speed_high] ...
    speed_high: float = 1.0
    speed_prob: float = 0.0  # ... for this fraction of the crops (0: off)
    adversarial_from_step: int = -1  # start the MS-STFT discriminator at this step (-1: never)
    adversarial_weight: float = 0.05  # generator adversarial loss weight
    feature_weight: float = 0.1  # feature-matching loss weight
    disc_filters: int = 32  # MS-STFT discriminator width
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


# ---- checkpoints in shards ----------------------------------------------------------------------
def save_checkpoint(run_dir: Path, payload: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write `payload` (json-able) + `tensors` as ckpt.json and ckpt-NN.pt shards, replacing the previous ones."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shards, current, size = [], {}, 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size()
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[key] = value.detach().cpu().contiguous()
        size += nbytes
    shards.append(current)
    names = []
    for index, shard in enumerate(shards):
        name = f"ckpt-{index:02d}.pt"
        torch.save(shard, run_dir / f"{name}.tmp")
        names.append(name)
    for name in names:
        (run_dir / f"{name}.tmp").replace(run_dir / name)
    for stale in run_dir.glob("ckpt-*.pt"):
        if stale.name not in names:
            stale.unlink()
    tmp = run_dir / "ckpt.json.tmp"
    tmp.write_text(json.dumps({**payload, "shards": names}, indent=1))
    tmp.replace(run_dir / "ckpt.json")


def load_checkpoint(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    meta_path = Path(run_dir) / "ckpt.json"
    if not meta_path.exists():
        return None
    payload = json.loads(meta_path.read_text())
    tensors: dict[str, torch.Tensor] = {}
    for name in payload["shards"]:
        tensors.update(torch.load(Path(run_dir) / name, map_location="cpu", weights_only=True))
    return payload, tensors


def _prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict:
    """Adam moments as bf16 tensors (half the bytes; plenty of precision for moments)."""
    out = {}
    for index, slot in optimizer.state_dict()["state"].items():
        for name, value in slot.items():
            if torch.is_tensor(value) and value.dim() > 0:
                out[f"{prefix}{index}.{name}"] = value.to(torch.bfloat16)
            else:
                out[f"{prefix}{index}.{name}"] = torch.as_tensor(value, dtype=torch.float32).reshape(1)
    return out


def _load_optimizer(optimizer: torch.optim.Optimizer, prefix: str, tensors: dict) -> bool:
    flat = _unprefixed(prefix, tensors)
    if not flat:
        return False
    state: dict = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value.float() if name != "step" else value.reshape(())
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)
    return True
