"""Kaggle submissions: predict the test split and write ``submission.csv`` (``Id,Category``)."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Mapping

import torch

from . import checkpoint as ckpt
from .config import from_dict
from .data import build_loader

HEADER = ("Id", "Category")


def load_model(path: str | Path, overrides: Iterable[str] | Mapping = (), device: torch.device | str | None = None):
    """The model of a checkpoint, in eval mode, and its config (with ``overrides`` applied)."""
    from .engine import prepare_model
    from .runtime import default_device

    device = torch.device(device) if device is not None else default_device()
    state = ckpt.load_checkpoint(path, map_location=device)
    config = from_dict(state["config"], overrides)
    model = prepare_model(config, state["num_classes"], device)
    model.load_state_dict(state["model"])
    return model.eval(), config


def predict(path: str | Path, overrides: Iterable[str] | Mapping = (), split: str = "test",
            device: torch.device | str | None = None) -> dict:
    """Predictions of a checkpoint's model on ``split``, in the split's order.

    The checkpoint's config says where the data is; ``overrides`` (``DATA.ROOT=...``) change it.
    Returns the ``evaluate`` result plus ``num_classes``, ``num_images``, the ``dataset``
    (an ``ImageSplit``, for showing images) and the ``config`` used.
    """
    from .engine import evaluate

    model, config = load_model(path, overrides, device)
    device = next(model.parameters()).device
    loader = build_loader(config, split, device=device)
    result = evaluate(model, loader, device)
    result["num_classes"] = model_num_classes(model)
    result["num_images"] = len(loader.dataset_info)
    result["dataset"], result["config"] = loader.dataset_info, config
    return result


def model_num_classes(model: torch.nn.Module) -> int:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features


def check_predictions(predictions: torch.Tensor, num_images: int, num_classes: int) -> None:
    """Raise ValueError unless there is one class index in range per test image."""
    if len(predictions) != num_images:
        raise ValueError(f"{len(predictions)} predictions for {num_images} test images")
    if len(predictions) and (int(predictions.min()) < 0 or int(predictions.max()) >= num_classes):
        raise ValueError(f"predicted classes must lie in 0..{num_classes - 1}, got "
                         f"{int(predictions.min())}..{int(predictions.max())}")


def write_submission(predictions: torch.Tensor, path: str | Path, num_images: int, num_classes: int) -> Path:
    """Check, then write ``Id,Category`` rows (ids 0..N-1 in test-file order) atomically."""
    predictions = torch.as_tensor(predictions).cpu()
    check_predictions(predictions, num_images, num_classes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(enumerate(predictions.tolist()))
    os.replace(tmp, path)
    return path


def read_submission(path: str | Path, num_images: int | None = None, num_classes: int | None = None) -> torch.Tensor:
    """Read a submission back, checking header, ids and (when given) size and class range."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != HEADER:
        raise ValueError(f"{path}: header must be {','.join(HEADER)}, got {','.join(rows[0]) if rows else 'nothing'}")
    ids = [int(r[0]) for r in rows[1:]]
    if ids != list(range(len(ids))):
        raise ValueError(f"{path}: ids must run 0..N-1 in order")
    predictions = torch.tensor([int(r[1]) for r in rows[1:]], dtype=torch.long)
    if num_images is not None and num_classes is not None:
        check_predictions(predictions, num_images, num_classes)
    return predictions
