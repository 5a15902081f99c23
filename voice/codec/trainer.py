"""The codec training loop: one `Trainer` per run folder, resumable from its sharded checkpoint."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from voice.codec.compact import CompactCodec, CompactCodecConfig
from voice.codec.losses import (MultiScaleMelLoss, discriminator_loss, feature_matching_loss,
                                generator_adversarial_loss)
from voice.codec.train import (TrainConfig, _load_optimizer, _optimizer_tensors, _prefixed, _unprefixed,
                               load_checkpoint, save_checkpoint)

logger = logging.getLogger(__name__)


class Trainer:
    """Owns the model, the optional discriminator, their optimizers and the step counter of one run folder."""

    def __init__(self, run_dir: Path, model_config: CompactCodecConfig, config: TrainConfig, device: str = "cpu",
                 save_optimizer: bool = True):
        self.run_dir, self.device, self.save_optimizer = Path(run_dir), torch.device(device), save_optimizer
        self.step, self.history, self.warmup_from = 0, [], 0
        loaded = load_checkpoint(self.run_dir)
        if loaded:  # a resumed run keeps its architecture; the recipe may change (e.g. more steps)
            payload, tensors = loaded
            model_config = CompactCodecConfig.from_dict(payload["model_config"])
            self.step = int(payload["step"])
        self.model_config, self.config = model_config, config
        torch.manual_seed(config.seed + self.step)
        self.model = CompactCodec(model_config).to(self.device)
        self.mel_loss = MultiScaleMelLoss(model_config.sample_rate_hz).to(self.device)
        self.opt_g = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=(0.8, 0.99), weight_decay=0.01)
        self.disc, self.opt_d = None, None
        if config.adversarial_from_step >= 0:
            from encodec.msstftd import MultiScaleSTFTDiscriminator

            self.disc = MultiScaleSTFTDiscriminator(filters=config.disc_filters).to(self.device)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=config.lr * 0.5, betas=(0.8, 0.99))
        self.restored_optimizer = False
        if loaded:
            self._restore(tensors)
        self.rng = np.random.default_rng(config.seed + 7919 * self.step)

    def _restore(self, tensors: dict) -> None:
        self.model.load_state_dict({k: v.to(self.device) for k, v in _unprefixed("model.", tensors).items()})
        self.restored_optimizer = _load_optimizer(self.opt_g, "opt_g.", tensors)
        if self.disc is not None and _unprefixed("disc.", tensors):
            self.disc.load_state_dict(_unprefixed("disc.", tensors))
            _load_optimizer(self.opt_d, "opt_d.", tensors)
        logger.info("resumed %s at step %d (optimizer state %s)", self.run_dir, self.step,
                    "restored" if self.restored_optimizer else "fresh")
        self.warmup_from = 0 if self.restored_optimizer else self.step

    def lr_at(self, step: int) -> float:
        c = self.config
        warm = min(1.0, (step - self.warmup_from + 1) / max(1, c.warmup_steps))
        return c.lr * warm * c.lr_decay ** max(0, step - c.warmup_steps)

    def save(self) -> None:
        tensors = _prefixed("model.", self.model.state_dict())
        if self.disc is not None:
            tensors.update(_prefixed("disc.", self.disc.state_dict()))
        if self.save_optimizer:
            tensors.update(_optimizer_tensors("opt_g.", self.opt_g))
            if self.opt_d is not None:
                tensors.update(_optimizer_tensors("opt_d.", self.opt_d))
        model_config = asdict(self.model_config)
        model_config["ratios"] = list(model_config["ratios"])
        payload = {"step": self.step, "model_config": model_config, "train_config": asdict(self.config),
                   "last": self.history[-1] if self.history else None}
        save_checkpoint(self.run_dir, payload, tensors)
        with open(self.run_dir / "log.jsonl", "a") as f:
            for row in self.history:
                f.write(json.dumps(row) + "\n")
        self.history = []

    def train_step(self, batch: np.ndarray) -> dict:
        c, hop = self.config, self.model_config.hop_length
        for group in self.opt_g.param_groups:
            group["lr"] = self.lr_at(self.step)
        x = torch.from_numpy(batch).to(self.device)  # [B, 1, T]
        k = self.model_config.num_codebooks
        n_q = int(self.rng.integers(1, k + 1)) if self.rng.random() < c.quantizer_dropout else k
        decoded, commit = self.model(x, n_q)
        delay = self.model_config.decoder_delay_frames * hop
        predicted, target = decoded[:, 0, delay:], x[:, 0, : x.shape[-1] - delay]  # [B, T - delay] each
        mel = self.mel_loss(predicted, target)
        wave = torch.nn.functional.l1_loss(predicted, target)
        loss = c.mel_weight * mel + c.wave_weight * wave + c.commit_weight * commit
        stats = {"mel": mel.item(), "wave": wave.item(), "commit": commit.item(), "n_q": n_q}
        adversarial = self.disc is not None and self.step >= c.adversarial_from_step
        if adversarial:
            fake_logits, fake_maps = self.disc(predicted[:, None])
            real_logits, real_maps = self.disc(target[:, None])
            g_adv, feat = generator_adversarial_loss(fake_logits), feature_matching_loss(real_maps, fake_maps)
            loss = loss + c.adversarial_weight * g_adv + c.feature_weight * feat
            stats.update(g_adv=g_adv.item(), feat=feat.item())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt_g.step()
        if adversarial:
            stats["disc"] = self._disc_step(predicted.detach(), target)
        self.step += 1
        stats.update(step=self.step, loss=loss.item(), lr=self.lr_at(self.step - 1))
        return stats

    def _disc_step(self, predicted: torch.Tensor, target: torch.Tensor) -> float:
        for group in self.opt_d.param_groups:
            group["lr"] = self.lr_at(self.step) * 0.5
        real_logits, _ = self.disc(target[:, None])
        fake_logits, _ = self.disc(predicted[:, None])
        loss = discriminator_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return loss.item()

    def run(self, sampler, max_minutes: float | None = None, save_every_s: float = 300.0,
            progress: bool = True) -> dict:
        """Train until `config.steps` (or `max_minutes`), saving every `save_every_s` and at the end."""
        from tqdm import tqdm

        self.model.train()
        start = last_save = time.monotonic()
        bar = tqdm(total=self.config.steps, initial=self.step, desc="codec", disable=not progress, smoothing=0.05)
        stats: dict = {}
        while self.step < self.config.steps:
            stats = self.train_step(sampler.batch(self.config.batch_size))
            if not all(math.isfinite(v) for v in stats.values()):
                raise FloatingPointError(f"non-finite loss at step {self.step}: {stats}")
            bar.update(1)
            if self.step % 25 == 0:
                self.history.append({**stats, "elapsed_s": round(time.monotonic() - start, 1)})
            if self.step % 500 == 0:
                logger.info("step %d: %s", self.step, {k: round(v, 4) for k, v in stats.items()})
                bar.set_postfix(mel=f"{stats['mel']:.3f}", wave=f"{stats['wave']:.4f}",
                                commit=f"{stats['commit']:.3f}")
            now = time.monotonic()
            if max_minutes is not None and now - start > max_minutes * 60:
                logger.info("time budget of %.1f min reached at step %d", max_minutes, self.step)
                break
            if now - last_save > save_every_s:
                self.save()
                last_save = now
        bar.close()
        self.save()
        return stats
