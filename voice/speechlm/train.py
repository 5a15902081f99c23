"""`voice train lm`: train the speech LM on a corpus's token cache; resumable; one process, or DDP under torchrun."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from voice.speechlm.batch import collate, lm_loss
from voice.speechlm.model import SpeechLM, SpeechLMConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe; stored beside every checkpoint."""

    steps: int = 3000              # total optimizer steps (a resume continues to this number)
    batch_size: int = 8            # examples per step (per process under DDP)
    max_steps_per_example: int = 512   # LM steps an example is cut to
    lr: float = 1e-3               # AdamW learning rate after warm-up (cosine decay to lr / 10)
    warmup_steps: int = 100
    weight_decay: float = 0.01
    text_weight: float = 1.0       # text-stream loss weight (audio loss weight is 1)
    hearing_weight: float = 0.0    # weight of the auxiliary CTC loss of the user's words on their frames
    answer_noise: float = 0.0      # share of the answers' codes the model reads wrong (batch.with_noisy_answers)
    eval_every: int = 250          # validation loss and accuracy every this many steps
    eval_examples: int = 32        # validation examples (fixed)
    save_every: int = 250          # checkpoint every this many steps (and at the end)
    threads: int = 2               # torch threads per process
    seed: int = 0
    max_minutes: float = 0.0       # > 0: stop (and save) after this much wall time, even before `steps`
    data_workers: int = 0          # processes laying out batches (a GPU outruns one Python process)
    typed_batch_size: int = 0      # > 0: also this many new typed dialogues (t2t) per step (voice.speechlm.typed)
    typed_weight: float = 1.0      # weight of their loss
    typed_only: bool = False       # the brain alone: each step learns only from typed_batch_size typed dialogues
    bf16: bool = True              # matrix products in bfloat16 (autocast) on a GPU, and on a CPU with bfloat16
                                   # matrix units (`cpu_bf16_matmul`); False: float32 (TF32 on a GPU)
    length_buckets: int = 8        # > 1: each draw lays out this many batches' examples, sorted by length into
                                   # batches of neighbours (less padding computed); 1: batches as drawn
    schedule: str = "steps"        # "time" (with max_minutes): the cosine decays over the wall time, not the steps


# Model sizes and recipes. `cpu`: what 2 cores train usefully in about 90 minutes; `gpu`: one GPU, 10 minutes.
PRESETS: dict[str, tuple[dict, TrainConfig]] = {
    "tiny": (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2), TrainConfig(steps=20, batch_size=2, max_steps_per_example=256,
                                                      eval_every=10, eval_examples=4, save_every=10)),
    "cpu": (dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
                 num_key_value_heads=2), TrainConfig(steps=3000, batch_size=8, max_steps_per_example=512)),
    "gpu": (dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=6,
                 num_key_value_heads=2), TrainConfig(steps=6000, batch_size=64, max_steps_per_example=768,
                                                     lr=1.5e-3, warmup_steps=300, threads=4, data_workers=8)),
}


def lr_at(step: int, cfg: TrainConfig, elapsed_fraction: float | None = None) -> float:
    """Linear warm-up, then a cosine to lr / 10 over the steps, or over the wall time when the schedule
    is "time" (`elapsed_fraction` of max_minutes): a run whose speed is unknown in advance (a borrowed
    GPU) still ends with its learning rate decayed."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "time" and elapsed_fraction is not None:
        progress = min(1.0, max(0.0, elapsed_fraction))
    else:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def build_model(preset: dict, text, codec, codec_id: str, num_codebooks: int, delays: list[int],
                text_lead: int, base: str | None = None, heard_codebooks: int = 0,
                hearing: "HearingEncoder | None" = None, hearing_input: str = "features",
                text_align: str = "ahead", heard_text: bool = False) -> SpeechLM:
    """A fresh model (from scratch, or from a pretrained Llama-style text LM's weights when `base`);
    `text` is a `voice.speechlm.text.TextIds` (a base model keeps every tokenizer id); `hearing`, a
    trained hearing encoder that the model gets, frozen, as a second reading of the user's frames, or
    an `EarConfig`: the model reads the Whisper ear's features of the user's audio instead, or
    (EarConfig, ear encoder): both the ear's rows and a frozen CTC-trained encoder's features of them. With
    `heard_text` the model also reads the encoder's spelling of the user's words (voice.speechlm.heard)."""
    model = _build_model(preset, text, codec, codec_id, num_codebooks, delays, text_lead, base, heard_codebooks,
                         _hearing_config(hearing, codec_id, heard_codebooks or num_codebooks), hearing_input, text_align,
                         heard_text)
    if model.hearing is not None:
        model.hearing.load_state_dict(hearing.state_dict())
    if model.ear_encoder is not None:
        model.ear_encoder.load_state_dict(hearing[1].state_dict())
    return model


def _hearing_config(hearing, codec_id: str, heard: int) -> dict | None:
    from dataclasses import asdict

    from voice.speechlm.whisper_ear import FEATURE_DIM, EarConfig

    if hearing is None:
        return None
    if isinstance(hearing, tuple):               # (EarConfig, an ear encoder of its features)
        ear, encoder = hearing                   # (the model checks that the encoder reads the ear's width)
        return {**_hearing_config(ear, codec_id, heard), "encoder": asdict(encoder.config)}
    if isinstance(hearing, EarConfig):
        return {"kind": "ear", "dim": FEATURE_DIM, "chunk": hearing.chunk, "context": hearing.context}
    c = hearing.config
    if c.codec_id != codec_id:
        raise ValueError(f"the hearing encoder reads codes of {c.codec_id}, not {codec_id}")
    if c.num_codebooks > heard:
        raise ValueError(f"the hearing encoder reads {c.num_codebooks} codebooks; the model hears only {heard}")
    return asdict(c)


def _build_model(preset: dict, text, codec, codec_id: str, num_codebooks: int, delays: list[int],
                 text_lead: int, base: str | None, heard_codebooks: int, hearing: dict | None,
                 hearing_input: str = "features", text_align: str = "ahead", heard_text: bool = False) -> SpeechLM:
    books = codec.codebook_vectors()[:num_codebooks]                      # [K, N, D]
    if base is not None and text.kept is not None:
        raise ValueError("a model started from a pretrained text LM keeps its whole vocabulary")
    common = dict(text_vocab_size=text.size, text_token_ids=text.kept, num_codebooks=num_codebooks, codebook_size=books.shape[1],
                  codec_dim=books.shape[2], codec_id=codec_id, delays=delays, text_lead=text_lead,
                  heard_codebooks=heard_codebooks, hearing=hearing, hearing_input=hearing_input, text_align=text_align,
                  heard_text=heard_text)
    if base is None:
        return SpeechLM(SpeechLMConfig(**common, **preset), codebooks=books)
    from transformers import AutoModelForCausalLM

    text_lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    c = text_lm.config
    cfg = SpeechLMConfig(**common, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                         num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                         num_key_value_heads=c.num_key_value_heads, rms_norm_eps=c.rms_norm_eps,
                         rope_theta=getattr(c, "rope_theta", None) or (getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0),
                         max_position_embeddings=max(2048, c.max_position_embeddings))
    model = SpeechLM(cfg, codebooks=books)
    state = {k.removeprefix("model."): v for k, v in text_lm.state_dict().items() if k.startswith("model.")}
    embed = state.pop("embed_tokens.weight")
    missing = model.backbone.load_state_dict(state, strict=False)
    assert missing.missing_keys == ["embed_tokens.weight"], missing
    with torch.no_grad():   # AnyGPT's recipe: keep the text rows, new rows for the special tokens
        n = min(embed.shape[0], cfg.text_vocab_size)
        model.backbone.embed_tokens.weight[:n] = embed[:n]
    log.info("started from %s (%d layers, width %d)", base, c.num_hidden_layers, c.hidden_size)
    return model


class _Batches(torch.utils.data.IterableDataset):
    """Endless collated batches from an ExampleStream; each data worker draws with its own seed.

    With `buckets` > 1 each draw takes `buckets` batches' worth of examples, sorts them by length and
    cuts them into batches of neighbours, given out in a random order: a batch is right-padded to its
    longest example, and typed dialogues drawn at random are only 55% real steps at batch 64."""

    def __init__(self, stream, batch_size: int, seed: int, buckets: int = 1) -> None:
        super().__init__()
        self.stream, self.batch_size, self.seed, self.buckets = stream, batch_size, seed, max(1, buckets)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            self.stream.rng = np.random.default_rng([self.seed, info.id])
        while True:
            drawn = [self.stream.sample()[1] for _ in range(self.batch_size * self.buckets)]
            if self.buckets > 1:
                drawn.sort(key=len)
            groups = [drawn[i:i + self.batch_size] for i in range(0, len(drawn), self.batch_size)]
            for i in self.stream.rng.permutation(len(groups)):     # (one group draws nothing)
                yield collate(groups[i], self.stream.vocab)


def batches(stream, batch_size: int, workers: int, seed: int = 0, buckets: int = 1):
    """Collated batches, laid out in this process or in `workers` background processes."""
    source = _Batches(stream, batch_size, seed, buckets)
    if workers <= 0:
        return iter(source)
    return iter(torch.utils.data.DataLoader(source, batch_size=None, num_workers=workers, collate_fn=_same,
                                            prefetch_factor=4, persistent_workers=True))


def _same(x):
    return x


def cpu_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX: the `amx_bf16` flag on Linux).
    There bfloat16 autocast trains the speech LM about 1.7 times as fast (a 2-core Xeon with AMX, docs/speechlm.md);
    elsewhere oneDNN emulates bfloat16 and float32 is the faster."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


class _MixedPrecision:
    """`with` around each forward pass: bfloat16 autocast on a GPU, or on a CPU with bfloat16 matrix units
    (the weights and the optimizer stay float32); nothing otherwise. On the CPU attention runs in plain matrix
    products meanwhile: PyTorch's fused CPU attention is slower in bfloat16 (its backward took 4 times as
    long as in float32)."""

    def __init__(self, model, device, bf16: bool) -> None:
        cuda = str(device).startswith("cuda")
        self.autocast = (torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16)
                         if bf16 and (cuda or cpu_bf16_matmul()) else None)
        if cuda:        # float32 products (--fp32, and what autocast leaves in float32) in TF32
            torch.backends.cuda.matmul.allow_tf32 = True
        self.config = model.backbone.config if self.autocast is not None and not cuda else None
        self.attention = None

    @property
    def enabled(self) -> bool:
        return self.autocast is not None

    def __enter__(self):
        if self.config is not None:
            self.attention, self.config._attn_implementation = self.config._attn_implementation, "eager"
        if self.autocast is not None:
            self.autocast.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.autocast is not None:
            self.autocast.__exit__(*exc)
        if self.config is not None:
            self.config._attn_implementation = self.attention


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _evaluate(model, batches, device) -> dict:
    model.eval()
    parts = [lm_loss(model, b.to(device)) for b in batches]
    model.train()
    mean = lambda xs: float(np.nanmean(xs))  # noqa: E731
    return {"val_loss": mean([float(p.loss.detach()) for p in parts]), "val_text_acc": mean([p.text_acc for p in parts]),
            "val_audio_acc": mean([p.audio_acc for p in parts]),
            "val_audio_acc_first": mean([p.audio_acc_first for p in parts])}


def save(out: Path, model, tokenizer, optimizer, step: int, cfg: TrainConfig, history: list[dict]) -> None:
    """checkpoint/ (save_pretrained + tokenizer) and trainer.pt (optimizer, step), replaced atomically."""
    tmp = out / "checkpoint.tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "train_config": asdict(cfg)}, tmp / "trainer.pt")
    (tmp / "history.json").write_text(json.dumps(history, indent=1))
    final = out / "checkpoint"
    if final.exists():
        old = out / "checkpoint.old"
        final.replace(old)
        tmp.replace(final)
        import shutil

        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.replace(final)


def train(out: Path, model: SpeechLM, tokenizer, stream, val_batches, cfg: TrainConfig, device: str = "cpu",
          typed_stream=None) -> dict:
    """Train to cfg.steps, resuming from out/checkpoint when it is there. Returns the last metrics.

    With `typed_stream` (a `TypedDialogueStream`) and `cfg.typed_batch_size`, each step also learns
    from a batch of new typed dialogues (its gradient added to the corpus batch's); with `cfg.typed_only`,
    from them alone (`stream` is not read: text steps only)."""
    from tqdm import tqdm

    rank, world = _distributed()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    out.mkdir(parents=True, exist_ok=True)
    start, history = 0, []
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    state_path = out / "checkpoint" / "trainer.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        history = json.loads((out / "checkpoint" / "history.json").read_text())
        log.info("resumed at step %d from %s", start, out / "checkpoint")
    model.to(device).train()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    metrics: dict = history[-1] if history else {}
    autocast = _MixedPrecision(model, device, cfg.bf16)
    if autocast.enabled and rank == 0:
        print(f"[lm] matrix products in bfloat16 (autocast on {device}; --fp32: float32)", flush=True)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train lm", disable=rank != 0)
    typed_workers = min(2, cfg.data_workers)     # each reseeds from (seed, worker); in-process, the rng below
    typed = (batches(typed_stream, cfg.typed_batch_size, typed_workers, seed=cfg.seed * 1000 + rank * 100 + start + 7,
                     buckets=cfg.length_buckets)
             if typed_stream is not None and cfg.typed_batch_size > 0 else None)
    if typed is not None:
        typed_stream.rng = np.random.default_rng([cfg.seed, rank, start])    # a resumed run draws new dialogues
    if cfg.typed_only:
        if typed is None:
            raise ValueError("typed_only trains on typed dialogues: give a typed stream and typed_batch_size")
        source, typed = typed, None
    else:
        source = batches(stream, cfg.batch_size, cfg.data_workers, seed=cfg.seed * 1000 + rank * 100 + start,
                         buckets=cfg.length_buckets)
    tokens, t0 = 0, time.monotonic()
    deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes > 0 else None
    for step in bar:
        batch = next(source).to(device, non_blocking=True)
        elapsed = (time.monotonic() - t0) / (cfg.max_minutes * 60) if cfg.max_minutes > 0 else None
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg, elapsed)
        optimizer.zero_grad(set_to_none=True)
        typed_loss = None
        if typed is not None:           # its own backward; under DDP the corpus batch's backward syncs both
            with net.no_sync() if world > 1 else contextlib.nullcontext():
                with autocast:
                    typed_parts = lm_loss(net, next(typed).to(device), cfg.text_weight)
                (cfg.typed_weight * typed_parts.loss).backward()
            typed_loss = typed_parts.text_loss
        with autocast:
            parts = lm_loss(net, batch, cfg.text_weight, cfg.hearing_weight, cfg.answer_noise)
        parts.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens += int(batch.text.numel()) * world
        rate = tokens / max(1e-6, time.monotonic() - t0)
        bar.set_postfix(loss=f"{float(parts.loss.detach()):.3f}", text=f"{parts.text_loss:.2f}", audio=f"{parts.audio_loss:.2f}",
                        **({"hear": f"{parts.hearing_loss:.2f}"} if cfg.hearing_weight else {}),
                        **({"typed": f"{typed_loss:.2f}"} if typed_loss is not None else {}), steps_per_s=f"{rate:.0f}")
        done = step + 1
        out_of_time = deadline is not None and time.monotonic() > deadline
        if world > 1 and deadline is not None:     # every rank stops at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if rank == 0 and (done % cfg.eval_every == 0 or done == cfg.steps or out_of_time):
            metrics = {"step": done, "loss": float(parts.loss.detach()), "lm_steps_per_s": round(rate, 1),
                       **({"typed_loss": round(typed_loss, 4)} if typed_loss is not None else {}),
                       **_evaluate(model, val_batches, device), **({"stopped": "max_minutes"} if out_of_time else {})}
            history.append(metrics)
            bar.write(json.dumps(metrics))
        if rank == 0 and (done % cfg.save_every == 0 or done == cfg.steps or out_of_time):
            save(out, model, tokenizer, optimizer, done, cfg, history)
        if out_of_time:
            break
    if world > 1:
        torch.distributed.barrier()
    return metrics


def config_with(preset: TrainConfig, **overrides) -> TrainConfig:
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})
