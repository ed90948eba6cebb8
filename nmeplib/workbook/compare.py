"""Model comparison for the notebooks: parameter and shape tables, a comparison plot, memory notes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch


def model_table(names: Sequence[str], img_sizes: Mapping[str, int], num_classes: int = 10) -> tuple[list[dict], dict]:
    """Side-by-side totals for models ``names`` at their image sizes, and each one's
    ``model_summary`` rows (``{name: rows}``) for the per-layer tables."""
    from ..models import build_model, count_parameters, model_summary

    rows, summaries = [], {}
    for name in names:
        model, size = build_model(name, num_classes), img_sizes[name]
        summaries[name] = layers = model_summary(model, (3, size, size))
        try:
            width = flatten_width(layers)[0]
        except ValueError:
            width = None
        rows.append({"model": name, "input": f"3x{size}x{size}", "params": count_parameters(model),
                     "params_M": count_parameters(model) / 1e6,
                     "layers": sum(r["type"] in ("Conv2d", "Linear") for r in layers),
                     "flatten": width, "output": "x".join(map(str, layers[-1]["output_shape"][1:]))})
    return rows, summaries


def plot_model_comparison(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike | None = None,
                          title: str | None = None):
    """Bars of parameters, time per training step and peak memory per model."""
    from ..plots import plt

    from ..runtime import default_device

    memory = "CUDA peak memory (MB)" if default_device().type == "cuda" else "process peak RSS (MB)"
    panels = [("params_M", "parameters (millions)"), ("step_ms", "ms per training step"), ("peak_mem_mb", memory)]
    panels = [(k, label) for k, label in panels if all(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), layout="constrained", squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        ax.bar([r["model"] for r in rows], [r[key] for r in rows], color="tab:blue")
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig



def flatten_width(rows: Sequence[Mapping[str, Any]]) -> tuple[int, tuple]:
    """From ``model_summary`` rows: the width of the first Flatten output and the shape before it."""
    for i, row in enumerate(rows):
        if row["type"] == "Flatten":
            before = rows[i - 1]["output_shape"] if i else ()
            return int(np.prod(row["output_shape"][1:])), tuple(before[1:])
    raise ValueError("the model has no Flatten layer")


def memory_note(device: torch.device | None = None) -> str:
    """What ``peak_mem_mb`` means on this machine."""
    from ..runtime import default_device

    device = device or default_device()
    if device.type == "cuda":
        return f"CUDA peak memory allocated by tensors on {torch.cuda.get_device_name(device)}"
    return ("CPU: process peak RSS (resident memory of the whole Python process so far, which never "
            "goes down), not the model's own memory")
