"""Augmentation and normalisation of whole uint8 batches on the training device.

``DATA.AUGMENT`` names a scheme: ``none``, ``course`` (the course's colour jitter + flip),
``standard`` (pad-crop + flip), or components joined by ``+`` such as ``crop+flip+erase``.
Components ``flip``, ``crop``, ``jitter`` and ``erase`` run batched with per-image random
parameters (no per-image Python); ``autoaugment``, ``randaugment`` and ``trivialaugment``
are torchvision's policies, applied image by image because each image draws its own ops.
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

BATCHED = ("crop", "flip", "jitter", "erase")
# torchvision's per-image policies, built on first use (importing torchvision takes seconds)
POLICIES = {
    "autoaugment": lambda v2: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
    "randaugment": lambda v2: v2.RandAugment(),
    "trivialaugment": lambda v2: v2.TrivialAugmentWide(),
}
ALIASES = {"none": (), "course": ("jitter", "flip"), "standard": ("crop", "flip")}
JITTER = 0.4          # brightness, contrast and saturation factors drawn from [1-J, 1+J]
ERASE_P = 0.5         # probability that an image gets one erased rectangle
ERASE_AREA = (0.02, 0.25)


def parse_augment(spec: str) -> tuple[str, ...]:
    """``"crop+flip"`` -> ``("crop", "flip")``; raises ValueError for unknown parts."""
    spec = spec.strip().lower()
    if spec in ALIASES:
        return ALIASES[spec]
    parts = tuple(p.strip() for p in spec.split("+") if p.strip())
    valid = BATCHED + tuple(POLICIES)
    unknown = [p for p in parts if p not in valid]
    if unknown or not parts:
        raise ValueError(f"unknown augmentation {', '.join(unknown) or repr(spec)}; use one of "
                         f"{', '.join(ALIASES)} or components {', '.join(valid)} joined by '+'")
    if sum(p in POLICIES for p in parts) > 1:
        raise ValueError(f"{spec!r} names more than one of {', '.join(POLICIES)}")
    return parts


def _uniform(n: int, low: float, high: float, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, device=like.device, generator=gen) * (high - low) + low


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Positions past either edge mirrored back inside, as reflect padding does."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator, flip: bool = False) -> torch.Tensor:
    """Reflect-pad by ``pad`` and cut each image at its own random offset.

    One gather with reflected indices (no padded copy; any dtype). ``flip=True`` also mirrors
    about half of the crops, drawn as ``random_flip`` draws them, at no extra cost.
    """
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=gen)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip:
        mirrored = torch.rand(n, device=x.device, generator=gen) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    rows = _reflect(dy - pad + torch.arange(h, device=x.device), h)   # n,h
    cols = _reflect(dx - pad + cols, w)                                # n,w
    index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror about half of the images left to right."""
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    both = torch.cat((x, x.flip(3)))   # row n + i is image i mirrored; a row gather beats torch.where
    return both.index_select(0, torch.arange(len(x), device=x.device) + len(x) * flip)


def colour_jitter(x: torch.Tensor, gen: torch.Generator, strength: float = JITTER) -> torch.Tensor:
    """Brightness, contrast and saturation, each image its own factors (x in [0, 1]).

    The three steps in turn are one affine map per image, applied in a single pass:
    ``b*c*s*x + b*c*(1-s)*grey(x) + b*(1-c)*mean(grey(x))``.
    """
    n = x.shape[0]
    b, c, s = (_uniform(n, 1 - strength, 1 + strength, x, gen).view(n, 1, 1, 1) for _ in range(3))
    grey = (x[:, :1] * 0.299).add_(x[:, 1:2], alpha=0.587).add_(x[:, 2:3], alpha=0.114)
    mean = grey.mean(dim=(2, 3), keepdim=True)
    offset = grey.mul_(b * c * (1 - s)).add_(b * (1 - c) * mean)
    return torch.addcmul(offset, x, b * c * s).clamp_(0, 1)


def random_erase(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Zero one random rectangle in about half of the images (after normalisation: the mean)."""
    n, _, h, w = x.shape
    area = _uniform(n, *ERASE_AREA, x, gen) * h * w
    ratio = torch.exp(_uniform(n, -1.2, 1.2, x, gen))
    eh = (area * ratio).sqrt().clamp(1, h).long()
    ew = (area / ratio).sqrt().clamp(1, w).long()
    top = (torch.rand(n, device=x.device, generator=gen) * (h - eh + 1)).long()
    left = (torch.rand(n, device=x.device, generator=gen) * (w - ew + 1)).long()
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    box = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
           & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None]))
    apply = torch.rand(n, device=x.device, generator=gen) < ERASE_P
    return x.masked_fill((box & apply[:, None, None])[:, None], 0.0)


class Augment:
    """Turns a uint8 N×3×H×W batch into a normalised float batch at ``img_size``.

    With ``train=False`` only resizing and normalisation run, so validation, test and
    prediction see the images as they are.
    """

    def __init__(self, spec: str, mean: tuple[float, ...], std: tuple[float, ...], img_size: int,
                 train: bool = True) -> None:
        self.parts = parse_augment(spec) if train else ()
        self.img_size = img_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        policy = next((p for p in self.parts if p in POLICIES), None)
        self.policy = POLICIES[policy](importlib.import_module("torchvision.transforms.v2")) if policy else None
        self._on_device: dict = {}

    def _normalise(self, x: torch.Tensor, top: float) -> torch.Tensor:
        """``(x / top - mean) / std`` in place, as one multiply-add with constants cached per device."""
        if (x.device, top) not in self._on_device:
            scale, shift = 1 / (top * self.std), -self.mean / self.std
            self._on_device[x.device, top] = scale.to(x.device), shift.to(x.device)
        scale, shift = self._on_device[x.device, top]
        return x.mul_(scale).add_(shift)

    def __call__(self, images: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.policy is not None:  # torchvision draws its own ops per image
            images = torch.stack([self.policy(img) for img in images])
        # Cropping and flipping move pixels, so they run on the uint8 images; flipping before
        # the resize equals flipping after it.
        if "crop" in self.parts:
            images = random_crop(images, max(1, images.shape[-1] // 8), gen, flip="flip" in self.parts)
        elif "flip" in self.parts:
            images = random_flip(images, gen)
        x = images.to(torch.float32, copy=True)   # then in place; uint8.div(255) is slow on the CPU
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear",
                              antialias=x.shape[-1] > self.img_size, align_corners=False)
        top = 255.0   # the pixel range; jitter works in [0, 1], otherwise 1/255 joins the normalisation
        if "jitter" in self.parts:
            x, top = colour_jitter(x.div_(255), gen), 1.0
        x = self._normalise(x, top)
        if "erase" in self.parts:
            x = random_erase(x, gen)
        return x
