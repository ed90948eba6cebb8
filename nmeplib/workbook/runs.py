"""Results tables of finished runs and a grid of a checkpoint's predictions."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .. import checkpoint as ckpt
from ..files import read_json


def read_summary(folder: str | os.PathLike) -> dict | None:
    """A run folder's ``summary.json`` (written by ``fit`` at the end), or None if there is none."""
    return read_json(Path(folder) / ckpt.SUMMARY)


def run_row(name: str, history: Sequence[Mapping[str, Any]]) -> dict:
    """One results row for a finished run (column ``run``), see ``checkpoint.run_row``."""
    return {"run": name, **ckpt.run_row(history)}


def summary_row(name: str, summary: Mapping[str, Any]) -> dict:
    """A results row like :func:`run_row` from a ``summary.json``."""
    return {"run": name, **ckpt.run_row(summary)}


def with_speed(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Sweep results rows plus ``img_per_s``: the members' mean training images per second."""
    return [{**row, "img_per_s": (ckpt.read_run_row(row["output"]) or {}).get("img_per_s")} for row in rows]


def prediction_grid(checkpoint: str | os.PathLike, *, split: str = "val", n: int = 20, seed: int = 0,
                    overrides: Mapping[str, Any] | None = None, ncols: int = 10,
                    path: str | os.PathLike | None = None, title: str | None = None):
    """Evaluate a checkpoint on ``split`` and draw ``n`` random images with truth / prediction.

    Returns ``(figure, result)`` where ``result`` is ``engine.evaluate``'s (accuracy over the
    whole split, all predictions) plus ``indices`` of the images shown. Wrong ones are red.
    """
    from ..plots import image_grid
    from ..submission import predict

    result = predict(checkpoint, dict(overrides or {}), split=split)
    dataset, config = result["dataset"], result["config"]
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=gen)[:n].sort().values
    images, labels = dataset.get(indices)
    preds = result["predictions"].cpu()[indices]
    title = title or (f"{config.MODEL.NAME} on {config.DATA.DATASET} {split}: {result['acc']:.1f}% overall; "
                      f"{int((preds != labels).sum())} of {len(indices)} shown are wrong")
    fig = image_grid(images, labels, dataset.class_names, preds=preds, ncols=ncols, path=path, title=title)
    result["indices"] = indices
    return fig, result
