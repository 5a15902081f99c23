"""Codec training losses: multi-scale log-mel, waveform L1, and the MS-STFT discriminator's adversarial terms."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MultiScaleMelLoss(nn.Module):
    """Mean L1 distance of log-mel spectrograms at several window sizes (16 kHz: 256 .. 2048 samples)."""

    def __init__(self, sample_rate_hz: int, n_ffts: tuple[int, ...] = (256, 512, 1024, 2048)):
        super().__init__()
        import torchaudio

        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(sample_rate_hz, n_fft=n, hop_length=n // 4, n_mels=min(80, n // 8 + 16),
                                                 power=1.0, center=False, f_min=0.0, norm="slaney", mel_scale="slaney")
            for n in n_ffts)

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # [B, T] each
        total = predicted.new_zeros(())
        for mel in self.mels:
            p, t = mel(predicted), mel(target)
            total = total + F.l1_loss(torch.log(p.clamp_min(1e-5)), torch.log(t.clamp_min(1e-5)))
        return total / len(self.mels)


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss for the discriminator."""
    loss = real_logits[0].new_zeros(())
    for real, fake in zip(real_logits, fake_logits):
        loss = loss + F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return loss / len(real_logits)


def generator_adversarial_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - fake).mean() for fake in fake_logits) / len(fake_logits)


def feature_matching_loss(real_maps: list[list[torch.Tensor]], fake_maps: list[list[torch.Tensor]]) -> torch.Tensor:
    """Relative L1 between the discriminator's feature maps on real and decoded audio (EnCodec's form)."""
    loss, count = real_maps[0][0].new_zeros(()), 0
    for real_layers, fake_layers in zip(real_maps, fake_maps):
        for real, fake in zip(real_layers, fake_layers):
            loss = loss + F.l1_loss(fake, real.detach()) / (real.detach().abs().mean() + 1e-5)
            count += 1
    return loss / max(count, 1)
