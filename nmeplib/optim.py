"""Optimizers and learning-rate schedules from ``TRAIN.*``."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from .config import Config

PLATEAU_PATIENCE = 2  # plateau: epochs without improvement before the rate decays


def build_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``TRAIN.OPTIMIZER`` over ``model``; no weight decay on biases and norm weights.

    Adam, AdamW and SGD use PyTorch's fused kernels, on the CPU too: for AlexNet's 57M
    parameters the fused AdamW step is over ten times faster than the default one.
    """
    t = config.TRAIN
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return OPTIMIZERS[t.OPTIMIZER](groups, t)


# TRAIN.OPTIMIZER -> the optimizer over parameter groups, from TRAIN.*
OPTIMIZERS: dict[str, Callable[[list, Config], torch.optim.Optimizer]] = {
    "adamw": lambda groups, t: torch.optim.AdamW(groups, lr=t.LR, fused=True),
    "adam": lambda groups, t: torch.optim.Adam(groups, lr=t.LR, fused=True),
    "sgd": lambda groups, t: torch.optim.SGD(groups, lr=t.LR, momentum=t.MOMENTUM, nesterov=t.MOMENTUM > 0,
                                             fused=True),
    "rmsprop": lambda groups, t: torch.optim.RMSprop(groups, lr=t.LR, momentum=t.MOMENTUM),
}
SCHEDULERS = ("cosine", "constant", "step", "plateau")  # TRAIN.SCHEDULER, see Schedule


class Schedule:
    """The learning rate of every optimizer step, as one function of the step.

    A linear warm-up over ``TRAIN.WARMUP_EPOCHS`` rises from ``TRAIN.WARMUP_LR`` to the rate of:
    ``cosine`` decays from ``TRAIN.LR`` to ``TRAIN.MIN_LR`` over the steps after the warm-up;
    ``constant`` keeps ``TRAIN.LR``; ``step`` multiplies it by ``TRAIN.DECAY_RATE`` every
    ``TRAIN.DECAY_EPOCHS`` epochs; ``plateau`` does so when the validation loss has not fallen
    for ``PLATEAU_PATIENCE`` epochs (never below ``TRAIN.MIN_LR``). Call ``step_batch`` after
    each optimizer step and ``step_epoch`` after each validation. The rate depends only on the
    step, the config and (plateau) the validation losses seen, so a resumed run uses the same
    rates, and a run extended to more epochs follows the longer run's schedule.
    """

    def __init__(self, config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        t = config.TRAIN
        self.optimizer, self.kind, self.steps_per_epoch = optimizer, t.SCHEDULER, steps_per_epoch
        self.base, self.min_lr = t.LR, t.MIN_LR
        self.warmup, self.total = t.WARMUP_EPOCHS * steps_per_epoch, t.EPOCHS * steps_per_epoch
        self.warmup_lr = t.WARMUP_LR
        self.decay_epochs, self.decay_rate = t.DECAY_EPOCHS, t.DECAY_RATE
        self.step = 0
        self.plateau = {"scale": 1.0, "best": math.inf, "bad_epochs": 0}
        self._apply()

    def rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        target = self._scheduled(step)
        if step >= self.warmup:
            return target
        return self.warmup_lr + (target - self.warmup_lr) * (step + 1) / self.warmup

    def _scheduled(self, step: int) -> float:
        if self.kind == "cosine":
            progress = min(1.0, max(0, step - self.warmup) / max(1, self.total - self.warmup))
            return self.min_lr + (self.base - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.base * self.decay_rate ** (step // self.steps_per_epoch // self.decay_epochs)
        if self.kind == "plateau":
            return max(self.base * self.plateau["scale"], self.min_lr)
        return self.base

    @property
    def lr(self) -> float:
        """The rate the next optimizer step uses."""
        return self.optimizer.param_groups[0]["lr"]

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate(self.step)

    def step_batch(self) -> None:
        self.step += 1
        self._apply()

    def step_epoch(self, val_loss: float) -> None:
        """``plateau``: count an epoch whose validation loss did not improve by 0.01%."""
        if self.kind != "plateau":
            return
        state = self.plateau
        if val_loss < state["best"] * (1 - 1e-4):
            state["best"], state["bad_epochs"] = val_loss, 0
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] > PLATEAU_PATIENCE:
                state["scale"] *= self.decay_rate
                state["bad_epochs"] = 0
        self._apply()

    def state_dict(self) -> dict:
        return {"step": self.step, "plateau": dict(self.plateau)}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.plateau = state["step"], dict(state["plateau"])
        self._apply()
