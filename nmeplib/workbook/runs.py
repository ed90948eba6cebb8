"""Results tables of finished runs and a grid of a checkpoint's predictions."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .. import checkpoint as ckpt


def read_summary(folder: str | os.PathLike) -> dict | None:
    """A run folder's ``summary.json`` (written by ``fit`` at the end), or None if there is none."""
    return ckpt.read_json(Path(folder) / ckpt.SUMMARY)


def run_row(name: str, history: Sequence[Mapping[str, Any]]) -> dict:
    """One results row for a finished run: final and best val accuracy, epochs and time."""
    best = ckpt.best_row(history)
    train_time = sum(r["train_time_s"] for r in history)
    return {"run": name, "epochs": len(history), "final_val_acc": history[-1]["val_acc"],
            "best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
            "final_train_acc": history[-1]["train_acc"], "train_time_s": train_time,
            "time_per_epoch_s": train_time / len(history),
            "img_per_s": sum(r["train_img_per_s"] for r in history) / len(history),
            "peak_mem_mb": max(r["peak_mem_mb"] for r in history)}


def summary_row(name: str, summary: Mapping[str, Any]) -> dict:
    """A results row like :func:`run_row` from a ``summary.json``."""
    return {"run": name, "epochs": summary["epochs"], "final_val_acc": summary["final_val_acc"],
            "best_val_acc": summary["best_val_acc"], "best_epoch": summary["best_epoch"],
            "train_time_s": summary["train_time_s"],
            "time_per_epoch_s": summary["train_time_s"] / max(summary["epochs"], 1)}


def with_speed(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Sweep results rows plus ``img_per_s``: the members' mean training images per second."""
    from ..tracking import read_metrics

    out = []
    for row in rows:
        metrics = read_metrics(row["output"]) if (Path(row["output"]) / ckpt.METRICS).is_file() else []
        speed = sum(r["train_img_per_s"] for r in metrics) / len(metrics) if metrics else None
        out.append({**row, "img_per_s": speed})
    return out


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
