"""Configs of the old course code (yacs style, ``python main.py --cfg ... --opts KEY VALUE``).

The old repository's ``config.py`` (after Swin-Transformer's) nested some settings differently
(``TRAIN.OPTIMIZER.NAME``, ``TRAIN.LR_SCHEDULER.NAME``), named others differently
(``DATA.DATA_PATH``, ``MODEL.DROP_RATE``) and had keys this project does not need
(``PRINT_FREQ``, ``DATA.PIN_MEMORY``). :class:`Translator` turns such keys into this project's:
each old key is either *renamed* (:data:`RENAMED`), folded into ``DATA.AUGMENT`` (the ``AUG.*``
keys, :data:`AUGMENT_KEYS`), or *dropped* with the reason (:data:`DROPPED`), and the dropped
ones are named once, in one :class:`OldConfigWarning` line, after the config is loaded.

``config.load_config`` uses it for a file that holds any old-only key (see :func:`is_old_style`),
for its ``BASE`` files, and for old key names given as overrides (``--opts``, ``--set``); a file
with only current keys stays strict (an unknown key is an error naming the closest ones).
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable

from .errors import ConfigError

# Old key -> this project's key; the value carries over (names are lower-cased where noted).
RENAMED: dict[str, str] = {
    "DATA.DATA_PATH": "DATA.ROOT",
    "MODEL.DROP_RATE": "MODEL.DROPOUT",
    "MODEL.LABEL_SMOOTHING": "TRAIN.LABEL_SMOOTHING",
    "TRAIN.BASE_LR": "TRAIN.LR",
    "TRAIN.OPTIMIZER.NAME": "TRAIN.OPTIMIZER",
    "TRAIN.OPTIMIZER.MOMENTUM": "TRAIN.MOMENTUM",
    "TRAIN.LR_SCHEDULER.NAME": "TRAIN.SCHEDULER",
    "TRAIN.LR_SCHEDULER.DECAY_EPOCHS": "TRAIN.DECAY_EPOCHS",
    "TRAIN.LR_SCHEDULER.DECAY_RATE": "TRAIN.DECAY_RATE",
}
LOWER_CASE = ("TRAIN.OPTIMIZER.NAME", "TRAIN.LR_SCHEDULER.NAME")

# The old augmentation keys: together they give one DATA.AUGMENT (see Translator.augment).
# The old training transforms always flipped; a jitter strength > 0 adds colour jitter
# (0.4 + flip is this project's "course" scheme), an erasing probability > 0 adds erasing,
# and an AutoAugment / RandAugment / TrivialAugment policy name adds that policy.
AUGMENT_KEYS = ("AUG.COLOR_JITTER", "AUG.RAND_AUGMENT", "AUG.AUTO_AUGMENT", "AUG.REPROB")

# Old keys with no counterpart here, and why.
DROPPED: dict[str, str] = {
    "DATA.PIN_MEMORY": "batches are pinned automatically when training on CUDA",
    "DATA.INTERPOLATION": "images are resized on the device, always bilinear",
    "DATA.ZIP_MODE": "no zip datasets; DATA.PRELOAD reads HDF5 splits into memory",
    "DATA.CACHE_MODE": "no zip datasets; DATA.PRELOAD reads HDF5 splits into memory",
    "MODEL.TYPE": "MODEL.NAME alone picks the model",
    "MODEL.RESUME": "resuming is a command-line choice here: train --resume PATH",
    "MODEL.PRETRAINED": "no pretrained weights",
    "MODEL.DROP_PATH_RATE": "no stochastic depth",
    "TRAIN.START_EPOCH": "--resume continues from the checkpoint's epoch",
    "TRAIN.ACCUMULATION_STEPS": "no gradient accumulation; raise DATA.BATCH_SIZE or use more GPUs",
    "TRAIN.CLIP_GRAD": "no gradient clipping",
    "TRAIN.AUTO_RESUME": "resuming is a command-line choice here: train --resume",
    "TRAIN.USE_CHECKPOINT": "no activation checkpointing",
    "TRAIN.OPTIMIZER.EPS": "fixed at PyTorch's default 1e-8",
    "TRAIN.OPTIMIZER.BETAS": "fixed at PyTorch's default (0.9, 0.999)",
    "TRAIN.LR_SCHEDULER.WARMUP_PREFIX": "the warm-up is always linear from the first step",
    "TRAIN.LR_SCHEDULER.GAMMA": "no multi-step schedule; use TRAIN.SCHEDULER=step",
    "TRAIN.LR_SCHEDULER.MULTISTEPS": "no multi-step schedule; use TRAIN.SCHEDULER=step",
    "AUG.MIXUP": "no mixup or cutmix",
    "AUG.CUTMIX": "no mixup or cutmix",
    "AUG.CUTMIX_MINMAX": "no mixup or cutmix",
    "AUG.MIXUP_PROB": "no mixup or cutmix",
    "AUG.MIXUP_SWITCH_PROB": "no mixup or cutmix",
    "AUG.MIXUP_MODE": "no mixup or cutmix",
    "AUG.REMODE": "random erasing has fixed settings (data/augment.py)",
    "AUG.RECOUNT": "random erasing has fixed settings (data/augment.py)",
    "AUG.RESPLIT": "random erasing has fixed settings (data/augment.py)",
    "TEST.CROP": "validation images are resized whole, never cropped",
    "TEST.SEQUENTIAL": "validation always runs in dataset order",
    "TEST.SHUFFLE": "validation always runs in dataset order",
    "SAVE_FREQ": "checkpoint_last.pt is written every epoch, checkpoint_best.pt at each new best",
    "PRINT_FREQ": "progress is one line per epoch, a progress bar in JupyterLab",
    "EVAL_MODE": "evaluation is a command-line choice here: train --eval",
    "THROUGHPUT_MODE": "throughput is a command-line choice here: train --throughput",
    "TAG": "OUTPUT names the whole run folder",
    "LOCAL_RANK": "torchrun sets each process's rank",
    "AMP_ENABLE": "bf16 autocast is always on under CUDA",
    "AMP_OPT_LEVEL": "bf16 autocast is always on under CUDA",
    "ENABLE_AMP": "bf16 autocast is always on under CUDA",
    "FUSED_WINDOW_PROCESS": "Swin-only kernels",
    "FUSED_LAYERNORM": "Swin-only kernels",
}
# Model-specific nodes of the old config (``MODEL.RESNET: {}``): dropped whole.
DROPPED_NODES = {"MODEL.RESNET.": "this project's models have fixed architectures",
                 "MODEL.SWIN.": "this project's models have fixed architectures"}

OLD_KEYS = (*RENAMED, *AUGMENT_KEYS, *DROPPED)

POLICIES = {"rand": "randaugment", "v0": "autoaugment", "original": "autoaugment", "autoaugment": "autoaugment",
            "randaugment": "randaugment", "trivialaugment": "trivialaugment", "ta_wide": "trivialaugment"}


class OldConfigWarning(UserWarning):
    """Old-style config keys that have no counterpart here and were left out."""


def is_old_key(key: str) -> bool:
    """Whether ``key`` is a key of the old course config that this project does not have."""
    return key in OLD_KEYS or key.startswith(tuple(DROPPED_NODES))


def is_old_style(keys: Iterable[str], valid: Iterable[str]) -> bool:
    """Whether a file's (flattened) ``keys`` make it an old-style config: any old-only key."""
    valid = set(valid)
    return any(is_old_key(key) and key not in valid for key in keys)


def _policy(value: Any) -> str | None:
    """``"rand-m9-mstd0.5-inc1"`` -> ``"randaugment"``; empty or none -> None."""
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "none", "null", "false"):
        return None
    name = text.split("-", 1)[0]
    if name not in POLICIES:
        raise ConfigError(f"AUG.RAND_AUGMENT {value!r} has no counterpart; this project has "
                          f"{', '.join(sorted(set(POLICIES.values())))} (DATA.AUGMENT)")
    return POLICIES[name]


def _positive(key: str, value: Any) -> bool:
    if value is None:
        return False
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None


class Translator:
    """Turns old keys into this project's, one load (a file, its BASE files, the overrides) at a time.

    :meth:`translate` gives the ``(key, value)`` pairs to set for one old key; ``translated``
    maps each old key seen to its new key, ``dropped`` each dropped key to its reason, in the
    order first seen. :meth:`warn` emits the one-line notice.
    """

    def __init__(self) -> None:
        self.translated: dict[str, str] = {}
        self.dropped: dict[str, str] = {}
        self.aug: dict[str, Any] = {}

    def translate(self, key: str, value: Any) -> list[tuple[str, Any]]:
        if key in RENAMED:
            self.translated[key] = RENAMED[key]
            if key in LOWER_CASE and isinstance(value, str):
                value = value.strip().lower()
            return [(RENAMED[key], value)]
        if key in AUGMENT_KEYS:
            self.translated[key] = "DATA.AUGMENT"
            self.aug["AUG.RAND_AUGMENT" if key == "AUG.AUTO_AUGMENT" else key] = value
            return [("DATA.AUGMENT", self.augment())]
        reason = DROPPED.get(key) or next(why for prefix, why in DROPPED_NODES.items() if key.startswith(prefix))
        self.dropped.setdefault(key, reason)
        return []

    def augment(self) -> str:
        """DATA.AUGMENT for the AUG.* values seen so far (later files and overrides win)."""
        parts = []
        if _positive("AUG.COLOR_JITTER", self.aug.get("AUG.COLOR_JITTER")):
            parts.append("jitter")
        parts.append("flip")
        if _positive("AUG.REPROB", self.aug.get("AUG.REPROB")):
            parts.append("erase")
        policy = _policy(self.aug.get("AUG.RAND_AUGMENT"))
        if policy:
            parts.append(policy)
        return "course" if parts == ["jitter", "flip"] else "+".join(parts)

    def notice(self) -> str | None:
        """One line naming every dropped key and why, or None."""
        if not self.dropped:
            return None
        items = "; ".join(f"{key} ({why})" for key, why in self.dropped.items())
        return f"old-style config keys without a counterpart here, left out: {items}"

    def warn(self) -> None:
        text = self.notice()
        if text:
            warnings.warn(text, OldConfigWarning, stacklevel=4)  # at load_config's caller
