"""Shared fixtures: W&B kept offline and a fast digits config."""
from __future__ import annotations

import pytest

from nmeplib.config import load_config


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch, tmp_path):
    """No test reaches W&B; offline files land in the test's own folder."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture
def digits_config(tmp_path):
    """LeNet on digits, small enough for a few seconds per run."""
    def make(*overrides: str):
        return load_config("digits_lenet", [f"OUTPUT={tmp_path / 'run'}", "TRAIN.EPOCHS=3", *overrides])
    return make
