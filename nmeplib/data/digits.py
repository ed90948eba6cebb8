"""scikit-learn's bundled handwritten digits as a small RGB image dataset (no download).

1,797 images of 8×8 pixels, upscaled once to ``img_size`` and split 70/15/15 into
train/val/test with a fixed permutation, so the splits never depend on ``SEED``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

CLASS_NAMES = [str(i) for i in range(10)]
FRACTIONS = (0.70, 0.15)  # train, val; the rest is test


@lru_cache(maxsize=8)
def load_split(split: str, img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]   # N,1,8,8 in [0,1]
    images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))
    n_train = int(FRACTIONS[0] * len(labels))
    n_val = int(FRACTIONS[1] * len(labels))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(labels))}
    lo, hi = bounds[split]
    return images[order[lo:hi]], labels[order[lo:hi]]


@lru_cache(maxsize=8)
def mean_std(img_size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training split (computed, it is tiny)."""
    images = load_split("train", img_size)[0].float() / 255
    return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(images.std(dim=(0, 2, 3)).tolist())
