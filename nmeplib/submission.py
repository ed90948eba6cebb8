"""Kaggle submissions: predict the test split and write ``submission.csv`` (``Id,Category``)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping

import torch

from . import checkpoint as ckpt
from .config import from_stored
from .data import ImageSplit, build_loader
from .errors import DatasetError, OutputError
from .files import atomic_write

__all__ = ["HEADER", "OutputError", "check_classes", "check_predictions", "load_model", "predict",
           "read_submission", "write_submission"]

HEADER = ("Id", "Category")


def load_model(path: str | Path, overrides: Iterable[str] | Mapping = (), device: torch.device | str | None = None):
    """(model in eval mode, its config with ``overrides`` applied, the checkpoint's state) of a checkpoint."""
    from .models import build_model_from_config
    from .runtime import default_device

    device = torch.device(device) if device is not None else default_device()
    state = ckpt.load_checkpoint(path, map_location=device)
    config = from_stored(state["config"], overrides, f"the config stored in {path}")  # the model as trained
    with torch.device("meta"):   # shapes only: a crafted class count allocates nothing
        ckpt.check_weights(path, state["model"], build_model_from_config(config, state["num_classes"]))
    model = build_model_from_config(config, state["num_classes"], device)
    model.load_state_dict(state["model"])
    return model.eval(), config, state


def check_classes(checkpoint: str | Path, state: dict, data: ImageSplit) -> None:
    """Raise DatasetError unless ``data`` has the classes the checkpoint's model was trained on:
    the same number and, where both sides name them, the same names in the same order."""
    from .data.hdf5 import default_class_names

    trained = list(state.get("class_names") or default_class_names(state["num_classes"]))
    named = [n for n in (trained, list(data.class_names)) if n != default_class_names(len(n))]
    where = f"{data.name} data {data.path}" if data.path else f"the {data.name} data"
    if len(trained) != data.num_classes:
        problem = f"has {len(trained)} classes but {where} has {data.num_classes}"
    elif len(named) == 2 and trained != named[1]:
        i = next(i for i, (a, b) in enumerate(zip(trained, named[1])) if a != b)
        problem = f"calls class {i} {trained[i]!r} but {where} calls it {named[1][i]!r}"
    else:
        return
    raise DatasetError(f"checkpoint {checkpoint} {problem}: its predictions would not be this data's classes; "
                       f"set DATA.ROOT to the data it was trained on, or use a checkpoint trained on this data")


def predict(path: str | Path, overrides: Iterable[str] | Mapping = (), split: str = "test",
            device: torch.device | str | None = None) -> dict:
    """Predictions of a checkpoint's model on ``split``, in the split's order.

    The checkpoint's config says where the data is; ``overrides`` (``DATA.ROOT=...``) change it.
    Data whose classes differ from the checkpoint's raise DatasetError (see ``check_classes``).
    Returns the ``evaluate`` result plus ``num_classes`` (the model's), ``num_images``, the
    ``dataset`` (an ``ImageSplit``, for showing images) and the ``config`` used.
    """
    from .engine import evaluate

    model, config, state = load_model(path, overrides, device)
    device = next(model.parameters()).device
    loader = build_loader(config, split, device=device)
    check_classes(path, state, loader.split)
    result = evaluate(model, loader, device)
    result["num_classes"] = state["num_classes"]
    result["num_images"] = len(loader.split)
    result["dataset"], result["config"] = loader.split, config
    return result


def check_predictions(predictions: torch.Tensor, num_images: int | None, num_classes: int | None) -> None:
    """Raise ValueError unless there is one prediction per test image and every one is a class
    index in range (each checked when its count is given)."""
    if num_images is not None and len(predictions) != num_images:
        raise ValueError(f"{len(predictions)} predictions for {num_images} test images")
    if num_classes is not None and len(predictions) and (int(predictions.min()) < 0
                                                         or int(predictions.max()) >= num_classes):
        raise ValueError(f"predicted classes must lie in 0..{num_classes - 1}, got "
                         f"{int(predictions.min())}..{int(predictions.max())}")


def write_submission(predictions: torch.Tensor, path: str | Path, num_images: int, num_classes: int) -> Path:
    """Check, then write ``Id,Category`` rows (ids 0..N-1 in test-file order) atomically: through a
    temporary file beside ``path``, so a failure leaves any earlier submission as it was.
    A folder at ``path``, a file where a parent folder should be, or a full disk raise OutputError."""
    predictions = torch.as_tensor(predictions).cpu()
    check_predictions(predictions, num_images, num_classes)

    def write(f) -> None:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(enumerate(predictions.tolist()))
    return atomic_write(path, write, "w")


def read_submission(path: str | Path, num_images: int | None = None, num_classes: int | None = None) -> torch.Tensor:
    """Read a submission back, checking header, ids and (each when given) size and class range."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != HEADER:
        raise ValueError(f"{path}: header must be {','.join(HEADER)}, got {','.join(rows[0]) if rows else 'nothing'}")
    ids = [int(r[0]) for r in rows[1:]]
    if ids != list(range(len(ids))):
        raise ValueError(f"{path}: ids must run 0..N-1 in order")
    predictions = torch.tensor([int(r[1]) for r in rows[1:]], dtype=torch.long)
    check_predictions(predictions, num_images, num_classes)
    return predictions
