"""The speech LM's learning-rate schedule: warm-up, then a cosine over the steps or over the wall time."""

from __future__ import annotations

import math

import pytest

from voice.speechlm.train import TrainConfig, lr_at


def test_the_step_schedule_warms_up_then_decays_to_a_tenth() -> None:
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100)
    assert lr_at(0, cfg) == pytest.approx(1e-5)
    assert lr_at(99, cfg) == pytest.approx(1e-3)
    assert lr_at(550, cfg) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert lr_at(1000, cfg) == pytest.approx(1e-4)
    assert lr_at(550, cfg, elapsed_fraction=0.99) == lr_at(550, cfg)       # the time is ignored


def test_the_time_schedule_follows_the_wall_clock_whatever_the_steps() -> None:
    cfg = TrainConfig(steps=1_000_000, lr=1e-3, warmup_steps=100, schedule="time", max_minutes=8)
    assert lr_at(50, cfg, elapsed_fraction=0.5) == pytest.approx(0.51e-3)  # warm-up still counts steps
    assert lr_at(5000, cfg, elapsed_fraction=0.0) == pytest.approx(1e-3)
    assert lr_at(5000, cfg, elapsed_fraction=0.5) == pytest.approx(0.55e-3)
    assert lr_at(5000, cfg, elapsed_fraction=1.0) == pytest.approx(1e-4)
    assert lr_at(5000, cfg, elapsed_fraction=1.7) == pytest.approx(1e-4)   # past the deadline: the floor
