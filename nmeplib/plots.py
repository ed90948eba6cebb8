"""Plots for the workbook: training curves, image grids, throughput sweeps and a live curve.

Functions return the Figure (and save a PNG when given ``path``); the caller displays or
closes it. Outside a notebook kernel with no display, the non-interactive Agg backend is
used, so scripts and tests never try to open windows.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np

from .runtime import in_kernel


if (not in_kernel() and not os.environ.get("MPLBACKEND") and sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Rows = Sequence[Mapping[str, Any]]
PANELS = (("loss", "Loss"), ("acc", "Accuracy (%)"))
SPLITS = (("train", "--"), ("val", "-"))


def _save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def _draw_history(axes: Sequence[Axes], runs: Rows | Mapping[str, Rows], title: str | None) -> None:
    """Draw loss and accuracy curves of one or several runs on ``axes`` (cleared first)."""
    named = runs if isinstance(runs, Mapping) else {"": runs}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (metric, label) in zip(axes, PANELS):
        ax.clear()
        for i, (name, rows) in enumerate(named.items()):
            for split, style in SPLITS:
                key = f"{split}_{metric}"
                points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
                if points:
                    ax.plot(*zip(*points), style, color=colors[i % len(colors)], marker=".",
                            label=f"{name} {split}".strip())
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    if title:
        axes[0].figure.suptitle(title)


def plot_history(runs: Rows | Mapping[str, Rows], path: str | os.PathLike | None = None,
                 title: str | None = None) -> Figure:
    """Loss and accuracy vs epoch for one run (a list of metric rows) or several (name -> rows).

    Several runs share the axes, one colour each; train is dashed and val solid.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    _draw_history(axes, runs, title)
    return _save(fig, path)


def _as_images(images: Any) -> np.ndarray:
    """N x H x W x C floats in [0, 1] from N x C x H x W (or N x H x W) uint8 or float data."""
    array = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if array.ndim == 3:
        array = array[:, None]
    array = array.transpose(0, 2, 3, 1)
    array = array / 255.0 if array.dtype == np.uint8 else array.astype(float)
    return np.clip(array, 0.0, 1.0)


def _as_ints(values: Any) -> list[int]:
    return [int(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def image_grid(images: Any, labels: Any, class_names: Sequence[str], *, preds: Any = None,
               ncols: int = 10, path: str | os.PathLike | None = None, title: str | None = None) -> Figure:
    """A grid of images titled with their class, or ``true / pred`` when ``preds`` is given.

    Wrong predictions get a red title with a ✗, right ones a green one, so mistakes stand out.
    """
    array, labels = _as_images(images), _as_ints(labels)
    preds = None if preds is None else _as_ints(preds)
    ncols = max(1, min(ncols, len(array)))
    nrows = max(1, math.ceil(len(array) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.6 * nrows + (0.4 if title else 0)),
                             squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(array):
            continue
        image = array[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        true = class_names[labels[i]] if labels[i] >= 0 else "?"  # -1: a hidden (test) label
        if preds is None:
            ax.set_title(true, fontsize=8)
        else:
            wrong = labels[i] >= 0 and preds[i] != labels[i]
            ax.set_title(f"{'✗ ' if wrong else ''}{true} / {class_names[preds[i]]}", fontsize=8,
                         color="red" if wrong else "green")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_throughput(rows: Rows, path: str | os.PathLike | None = None, title: str | None = None, *,
                    oom_batch_size: int | None = None) -> Figure:
    """Images per second (and peak memory) vs batch size on a log-2 axis.

    The first batch size that ran out of memory (a row with ``oom`` true, or
    ``oom_batch_size`` given here or in a row) gets a red x; the largest that fit is annotated.
    """
    fits = sorted((r for r in rows if not r.get("oom") and r.get("img_per_s") is not None),
                  key=lambda r: r["batch_size"])
    if oom_batch_size is None:
        oom_batch_size = next((r.get("oom_batch_size") or r["batch_size"] for r in rows
                               if r.get("oom") or r.get("oom_batch_size")), None)
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    sizes = [r["batch_size"] for r in fits]
    ax.plot(sizes, [r["img_per_s"] for r in fits], "o-", label="images / s")
    handles = []
    if any(r.get("peak_mem_mb") is not None for r in fits):
        mem_ax = ax.twinx()
        handles = mem_ax.plot(sizes, [r.get("peak_mem_mb") for r in fits], "s--", color="tab:gray",
                              label="peak memory")
        mem_ax.set_ylabel("peak memory (MB)", color="tab:gray")
    if fits:
        best = fits[-1]
        ax.annotate(f"largest that fits: {best['batch_size']}", (best["batch_size"], best["img_per_s"]),
                    xytext=(-8, 8), textcoords="offset points", ha="right")
    if oom_batch_size is not None:
        y = fits[-1]["img_per_s"] if fits else 0.0
        ax.plot([oom_batch_size], [y], "x", color="red", markersize=12, mew=3, label="out of memory")
        ax.annotate(f"OOM at {oom_batch_size}", (oom_batch_size, y), xytext=(0, 12),
                    textcoords="offset points", ha="center", color="red")
        sizes = sizes + [oom_batch_size]
    ax.set_xscale("log", base=2)
    if sizes:
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
    ax.margins(x=0.1, y=0.15)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.grid(alpha=0.3)
    ax.legend(handles=ax.lines + handles, loc="upper left")
    ax.set_title(title or "Throughput vs batch size")
    return _save(fig, path)


class LivePlot:
    """Per-epoch callback that redraws one training-curve figure in place in a notebook.

    ``live(row)`` adds a metric row to ``rows``; in a Jupyter kernel it updates a single
    displayed figure instead of adding one per epoch. Elsewhere it only keeps the history.
    """

    def __init__(self, title: str | None = None) -> None:
        self.title = title
        self.rows: list[dict] = []
        self._fig: Figure | None = None
        self._handle = None

    def __call__(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        if not in_kernel():
            return
        from IPython.display import display

        if self._fig is None:
            self._fig, _ = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
            plt.close(self._fig)  # shown through the display handle only, not again at cell end
        _draw_history(self._fig.axes, self.rows, self.title)
        if self._handle is None:
            self._handle = display(self._fig, display_id=True)
        else:
            self._handle.update(self._fig)

    def save(self, path: str | os.PathLike) -> None:
        """Save the curves so far as a PNG."""
        plt.close(plot_history(self.rows, path, self.title))
