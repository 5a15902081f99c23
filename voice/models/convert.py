"""Convert a GGUF causal LM once into a cached safetensors copy (with its tokenizer) for fast loading."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)
MARKER = "voice_conversion.json"   # written last: its presence means the conversion is complete


def converted_dir(gguf_path: Path, cache_root: Path) -> Path:
    """Cache location of a GGUF file's conversion, keyed by file name and size."""
    gguf_path = Path(gguf_path)
    return cache_root / "models" / f"{gguf_path.stem}-{gguf_path.stat().st_size}"


def is_converted(out_dir: Path) -> bool:
    return (Path(out_dir) / MARKER).is_file() and (Path(out_dir) / "model.safetensors").is_file()


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Load `gguf_path` with transformers (dequantised to float32) and save safetensors + tokenizer.

    The recipe (OFFLINE_MODELS.md): load the GGUF, drop `quantization_config` (a GGUF-quantised
    config cannot be saved), rebuild the model `from_config`, `load_state_dict`, `save_pretrained`.
    Written to a temporary directory and renamed, so an interrupted conversion leaves nothing
    half-done behind. Takes ~35 s for SmolLM2-135M; reloading the result takes 0.5-3 s.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if is_converted(out_dir):
        return out_dir
    start_s = time.monotonic()
    log.info("converting %s to safetensors in %s (once; ~35 s)", gguf_path.name, out_dir)
    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    if missing:  # tied embeddings: lm_head shares the input embedding
        clean.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    clean.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({
        "source": str(gguf_path), "source_bytes": gguf_path.stat().st_size, "source_sha256": sha256_file(gguf_path),
        "dtype": "float32", "seconds": round(time.monotonic() - start_s, 1)}, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("converted %s in %.1f s", gguf_path.name, time.monotonic() - start_s)
    return out_dir


def verify_conversion(out_dir: Path, gguf_path: Path) -> str | None:
    """None when `out_dir` holds a complete conversion of exactly `gguf_path`, else what is wrong."""
    if not is_converted(out_dir):
        return "not converted"
    info = json.loads((Path(out_dir) / MARKER).read_text())
    if info.get("source_bytes") != Path(gguf_path).stat().st_size:
        return "converted from a different file (size differs)"
    if info.get("source_sha256") != sha256_file(Path(gguf_path)):
        return "converted from a different file (sha256 differs)"
    return None
