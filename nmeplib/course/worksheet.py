"""``python -m nmeplib worksheet [RESULTS]``: worksheet.md's measured regions and figures from
the repository's ``results/`` folder (``course/results.py``; ``reproduce`` writes it).

Each measured region of ``worksheet.md`` sits between ``<!-- BEGIN RESULTS name -->`` and
``<!-- END RESULTS name -->``, inside an answer region, which the student release blanks as a
whole (see ``release.py``). :data:`REGIONS` declares, for each region, the experiment it reads
and the figure it draws. The command rewrites every region from ``results/``: one block per
machine that measured the region's experiment (a GPU's first), each opening with a line naming
the machine, torch version, date, scale and data, and the command that reproduces it. A region
whose experiment has no results is an error naming it (never a stale table kept). Each figure
is a PNG in ``worksheet_figures/`` with the same line under it and, beside it, a JSON file of
the numbers it plots; the output depends only on ``results/``, so running it twice gives the
same files.

=============== ===================== =====================================================
region           experiment            content
=============== ===================== =====================================================
``stats``        01_datasets           CIFAR-10's per-channel mean and std, measured and used
``examples``     01_datasets           one image per class, CIFAR-10 and the HDF5 file
``memory``       03_training           peak memory while training, per model (and 06's ResNet18)
``training``     03_training           LeNet and AlexNet: accuracy, loss, time; curves
``lr``           05_lr                 learning-rate sweep; validation curves
``batch_size``   05_batch_size         batch-size sweep with training times; curves
``throughput``   05_throughput         images/s and memory vs batch size (until OOM on a GPU)
``augment``      05_augment            augmentation schemes; training and validation curves
``variations``   05_variations         optimizer / schedule / activation; curves
``resnet``       06_resnet             ResNet18 next to 03's AlexNet; curves
``predictions``  06_resnet             the prediction grid of ``checkpoint_best.pt``
``kaggle``       07_kaggle             the MediumImageNet-format run and its submission
=============== ===================== =====================================================
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import NmeplibError
from . import results as res

BEGIN = "<!-- BEGIN RESULTS {name} -->"
END = "<!-- END RESULTS {name} -->"
REGION = re.compile(r"(<!-- BEGIN RESULTS (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END RESULTS (?P=name) -->)",
                    re.S)
FIGURES = "worksheet_figures"
REBUILD = "; run its python -m nmeplib reproduce command again to rewrite it"
FIGURE_DPI = 80


class WorksheetError(NmeplibError, ValueError):
    """A results folder or worksheet this command cannot use (one ``error:`` line)."""


# ----------------------------------------------------------------------------- reading results

def load_results(root: str | os.PathLike = res.ROOT) -> dict[str, dict[str, dict]]:
    """``{machine: {experiment: result}}`` from ``root``: for each machine (GPUs first) the newest
    result of each experiment, its runs and tables read (``results.collect``) and checked by
    :func:`check_results`."""
    try:
        found = res.load(root)
    except res.ResultsError as err:
        raise WorksheetError(str(err)) from None
    if not found:
        raise WorksheetError(f"{root} holds no results: run python -m nmeplib reproduce first")
    views: dict[str, dict[str, dict]] = {}
    for tag in res.machines(found):
        views[tag] = {}
        for experiment, result in res.on_machine(found, tag).items():
            folder = Path(result["folder"])
            data = {**result, **res.collect(folder)}
            views[tag][experiment] = check_results(folder, data)
    return views


# ----------------------------------------------------------------------------- checking results

# What the regions read, checked before any is drawn: each run's summary numbers (as in
# summary.json), its settings, and per epoch (its metrics.jsonl rows) the plotted values.
RUN_NUMBERS = ("best_val_acc", "best_epoch", "final_val_acc", "epochs", "train_time_s")
RUN_SETTINGS = ("model", "dataset", "img_size")
HISTORY_NUMBERS = ("epoch", "train_acc", "val_acc", "train_loss", "val_loss", "train_img_per_s")
# The tables of 05_sweeps: (columns that must be there and filled, columns that hold numbers when filled).
_SWEEP_NUMBERS = ("best_val_acc", "final_val_acc", "time_per_epoch_s", "total_time_s")
TABLE_COLUMNS = {
    "runs/throughput.csv": (("batch_size",), ("batch_size", "img_per_s", "step_ms", "peak_mem_mb")),
    "runs/lr.csv": (("name", "TRAIN.LR"), ("TRAIN.LR", *_SWEEP_NUMBERS)),
    "runs/batch_size.csv": (("name", "DATA.BATCH_SIZE"), ("DATA.BATCH_SIZE", *_SWEEP_NUMBERS)),
    "runs/augment.csv": (("name",), _SWEEP_NUMBERS),
    "runs/variations.csv": (("name",), _SWEEP_NUMBERS),
}


class _Malformed(Exception):
    """What is wrong inside a results file; :func:`check_results` adds the file's name."""


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field(mapping: Mapping, key: str, kind: type, where: str = "") -> Any:
    """``mapping[key]`` when it is a ``kind``; ``where`` names the part of the file (``run 'x'``)."""
    if key not in mapping:
        raise _Malformed(f"{where + ' has ' if where else ''}no {key!r}")
    if not isinstance(mapping[key], kind):
        raise _Malformed(f"{where + ': ' if where else ''}{key!r} must be {_kind(kind())}, got {_kind(mapping[key])}")
    return mapping[key]


def _check_run(name: str, run: Any) -> None:
    where = f"run {name!r}"
    if not isinstance(run, dict):
        raise _Malformed(f"{where} must be a mapping (a summary.json), got {_kind(run)}")
    for key in RUN_NUMBERS:
        if key not in run:
            raise _Malformed(f"{where} has no {key!r}")
        if not _is_number(run[key]):
            raise _Malformed(f"{where}: {key!r} must be a number, got {run[key]!r}")
    settings = _field(run, "settings", dict, where)
    missing = [key for key in RUN_SETTINGS if key not in settings]
    if missing:
        raise _Malformed(f"{where}: 'settings' has no {', '.join(map(repr, missing))}")
    for number, row in enumerate(_field(run, "history", list, where), 1):
        if not isinstance(row, dict):
            raise _Malformed(f"{where}: history row {number} must be a mapping, got {_kind(row)}")
        for key in HISTORY_NUMBERS:
            if key not in row:
                raise _Malformed(f"{where}: history row {number} has no {key!r}")
            if not _is_number(row[key]):
                raise _Malformed(f"{where}: history row {number}: {key!r} must be a number, got {row[key]!r}")


def _check_table(name: str, rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise _Malformed(f"table {name!r} must be a list of rows (mappings of column to value), got {_kind(rows)}")
    required, numbers = TABLE_COLUMNS.get(name, ((), ()))
    for number, row in enumerate(rows, 1):
        for key in required:
            if row.get(key) in (None, ""):
                raise _Malformed(f"table {name!r} row {number} has no {key!r}")
        for key in numbers:
            if row.get(key) not in (None, "") and not _parses_as_number(row[key]):
                raise _Malformed(f"table {name!r} row {number}: {key!r} must be a number, got {row[key]!r}")


def _parses_as_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def check_results(path: str | os.PathLike, data: Any) -> dict:
    """``data`` (``path``'s contents) when it is a results file the regions can read; otherwise one
    :class:`WorksheetError` naming the file and the first thing missing or wrong in it."""
    try:
        if not isinstance(data, dict):
            raise _Malformed(f"a results file is a mapping with experiment, machine, runs and tables, "
                             f"got {_kind(data)}")
        _field(data, "experiment", str)
        for key in ("machine", "parameters"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise _Malformed(f"{key!r} must be a mapping, got {_kind(data[key])}")
        for name, run in _field(data, "runs", dict).items():
            _check_run(name, run)
        for name, rows in _field(data, "tables", dict).items():
            _check_table(name, rows)
    except _Malformed as err:
        raise WorksheetError(f"{path}: {err}{REBUILD}") from None
    return data


def _malformed(result: Mapping[str, Any], what: str) -> WorksheetError:
    return WorksheetError(f"{result['folder']}: {what}{REBUILD}")


def _with_history(result: Mapping[str, Any], name: str, run: Mapping[str, Any]) -> Mapping[str, Any]:
    """``run`` when it has epochs to draw; a region whose curves would be empty is an error."""
    if not run.get("history"):
        raise _malformed(result, f"run {name!r} has no history (its metrics.jsonl rows), so its curves "
                                 f"cannot be drawn")
    return run


SCALE_NOTES = {
    "full": "full scale (the course's run lengths)",
    "cpu": "CPU scale (stratified training subsets, short runs; not the course-scale figures)",
    "smoke": "SMOKE MODE: bundled digits stand in for the data, numbers say nothing about the targets",
}


def machine_name(machine: Mapping[str, Any]) -> str:
    """``NVIDIA H100 80GB HBM3`` or ``AMD EPYC, 2 cores``."""
    return str(machine.get("gpu") or f"{machine.get('cpu') or 'CPU'}, {machine.get('cores', '?')} cores")


def _provenance(result: Mapping[str, Any], what: str) -> str:
    """The line naming where a region's numbers come from: experiment, machine, torch, date, scale,
    data and what the region shows (``what``)."""
    m = result.get("machine", {})
    scale = str(result.get("scale", "full"))
    line = (f"{result['experiment']} on {machine_name(m)}, torch {m.get('torch', '?')}, {result.get('date', '?')}; "
            f"{SCALE_NOTES.get(scale, scale + ' scale')}; {result.get('data', '?')}; {what}")
    load, cores = m.get("load_average"), m.get("cores") or 1
    if load is not None and not m.get("gpu") and load > cores / 2:
        line += f"; load average {load:g} at the start (other jobs shared the {cores} cores: times are inflated)"
    return line


def _heading(result: Mapping[str, Any], stamp: str) -> str:
    """A block's first lines: the provenance in italics, then the command that made it."""
    command = result.get("command")
    return f"*{stamp}.*" + (f"\nReproduce: `{command}`" if command else "") + "\n\n"


def _epochs(runs: Sequence[Mapping[str, Any]]) -> str:
    """``cifar10, 30 epochs per run``: the data and the length of the runs of a region."""
    counts = sorted({int(r.get("epochs", 0)) for r in runs})
    if not counts:
        return "no runs"
    data = ", ".join(sorted({str((r.get("settings") or {}).get("dataset")) for r in runs}))
    length = f"{counts[0]} epoch{'s' if counts[0] != 1 else ''} per run" if len(counts) == 1 \
        else f"{', '.join(map(str, counts))} epochs"
    return f"{data}, {length}"


def _pct(value: Any) -> str:
    return "–" if value in (None, "") else f"{float(value):.2f}%"


def _num(value: Any, digits: int = 1) -> str:
    if value in (None, ""):
        return "–"
    value = float(value)
    return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"


def _rate(value: float) -> str:
    """A learning rate as people write it: 3e-4, 0.01."""
    if value == 0 or value >= 0.01:
        return f"{value:g}"
    mantissa, exponent = f"{value:.3g}".split("e") if "e" in f"{value:.3g}" else (f"{value:.3g}", "")
    if not exponent:
        mantissa, exponent = f"{value:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _members(result: Mapping[str, Any], sweep: str) -> list[tuple[dict, dict]]:
    """A 05 sweep's table rows, each with its run (summary and history), in table order; a member
    that did not fail must have its run with epochs to draw."""
    rows = result["tables"].get(f"runs/{sweep}.csv", [])
    runs = result["runs"]
    out = []
    for row in rows:
        key = f"runs/{sweep}/{row['name']}"
        if row.get("output"):   # the member's folder (names like "none (default)" are sanitised)
            key = f"runs/{sweep}/{Path(row['output']).name}"
        run = runs.get(key, {})
        if row.get("status") != "failed":
            if not run:
                raise _malformed(result, f"table 'runs/{sweep}.csv' lists member {row['name']!r} but there "
                                         f"is no run {key!r}")
            _with_history(result, key, run)
        out.append((row, run))
    return out


def _mean_speed(run: Mapping[str, Any]) -> float | None:
    history = run.get("history") or []
    return sum(r["train_img_per_s"] for r in history) / len(history) if history else None


# ----------------------------------------------------------------------------- figures

def _figure(path: Path, stamp: str, draw: Callable, data: Any, ncols: int = 2) -> Path:
    """Draw ``draw(axes)`` into ``path`` (PNG) with ``stamp`` under it, and write the numbers it
    plots (``data``) beside it as JSON: the file a check compares, since PNG bytes differ between
    matplotlib versions."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.2), dpi=FIGURE_DPI, squeeze=False)
    draw(list(axes[0]))
    fig.text(0.5, 0.01, stamp, ha="center", va="bottom", fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI, metadata={"Software": None})
    plt.close(fig)
    path.with_suffix(".json").write_text(json.dumps({"stamp": stamp, "data": data}, indent=1, sort_keys=True) + "\n")
    return path


def _image_figure(source: Path, path: Path, stamp: str) -> Path:
    """A figure the notebook drew (it needs the images, which are not in the repository), shown as
    it is with ``stamp`` under it; its JSON names the source."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    image = mpimg.imread(str(source))
    height = image.shape[0] / image.shape[1]
    fig = plt.figure(figsize=(8, 8 * height + 0.3), dpi=FIGURE_DPI)
    fig.add_axes((0, 0.3 / (8 * height + 0.3), 1, 1 - 0.3 / (8 * height + 0.3))).imshow(image)
    fig.axes[0].axis("off")
    fig.text(0.5, 0.005, stamp, ha="center", va="bottom", fontsize=6.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI, metadata={"Software": None})
    plt.close(fig)
    path.with_suffix(".json").write_text(json.dumps({"stamp": stamp, "data": {"shape": list(image.shape)}},
                                                    indent=1, sort_keys=True) + "\n")
    return path


CURVE_NAMES = {"train_acc": "train accuracy (%)", "val_acc": "validation accuracy (%)",
               "val_loss": "validation loss", "train_loss": "train loss",
               "both_acc": "accuracy (%), val solid, train dashed", "both_loss": "loss, val solid, train dashed"}
_PAIRS = {"both_acc": ("val_acc", "train_acc"), "both_loss": ("val_loss", "train_loss")}


def _curves(histories: Mapping[str, Sequence[Mapping]], keys=("train_acc", "val_acc"),
            title: str = "") -> tuple[Callable, dict]:
    """A drawing of one line per run for each of ``keys`` (``both_*``: validation solid, training
    dashed), and the numbers it plots."""
    plotted = sorted({k for key in keys for k in _PAIRS.get(key, (key,))})
    data = {label: {k: [row[k] for row in history] for k in ("epoch", *plotted)}
            for label, history in histories.items()}

    def draw(axes):
        from matplotlib.ticker import MaxNLocator

        for label, series in data.items():
            for key, ax in zip(keys, axes):
                solid, dashed = _PAIRS.get(key, (key, None))
                line, = ax.plot(series["epoch"], series[solid], marker=".", label=label)
                if dashed:
                    ax.plot(series["epoch"], series[dashed], ls="--", marker="x", color=line.get_color())
        seen = sorted({e for series in data.values() for e in series["epoch"]})
        for key, ax in zip(keys, axes):
            if 0 < len(seen) <= 12:
                ax.set_xticks(seen)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(CURVE_NAMES[key], fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].set_title(title, fontsize=9)
        if axes[-1].get_legend_handles_labels()[0]:   # a sweep whose members all failed has no curves
            axes[-1].legend(fontsize=7)
    return draw, data


def _link(figure: str, alt: str) -> str:
    return f"![{alt}]({FIGURES}/{figure}.png)"


# ----------------------------------------------------------------------------- regions
# Each takes one machine's results ({experiment: result}), the figures folder and the figure's
# name, and returns the block's text and the figures it wrote, or None when that machine's results
# lack what the region shows.

def region_examples(view, figures: Path, figure: str):
    result = view["01_datasets"]
    shown = [(name, label) for name, label in (("cifar10_examples", "CIFAR-10"),
                                                ("medium_imagenet_examples", "the MediumImageNet-format file"))
             if f"runs/{name}.png" in result.get("figures", [])]
    if not shown:
        raise _malformed(result, "no runs/cifar10_examples.png: 01_datasets.ipynb draws it")
    text, written = _heading(result, _provenance(result, "training images with their class names")), []
    for name, label in shown:
        stamp = _provenance(result, f"{label}, training images with their class names")
        path = _image_figure(Path(result["folder"]) / "runs" / f"{name}.png", figures / f"{figure}-{name}.png", stamp)
        written.append(path)
        text += _link(path.stem, f"{label}: training images per class") + "\n"
    return text, written


def region_stats(view, figures: Path, figure: str):
    """CIFAR-10's per-channel mean and std measured on its training images, beside the constants used."""
    result = view["01_datasets"]
    rows = result["tables"].get("runs/cifar10_stats.csv")
    if not rows:
        raise _malformed(result, "no table 'runs/cifar10_stats.csv': 01_datasets.ipynb writes it")
    table = [[r["channel"], _num(r["mean (data)"], 4), _num(r["mean (used)"], 4), _num(r["std (data)"], 4),
              _num(r["std (used)"], 4)] for r in rows]
    stamp = _provenance(result, "all 50,000 training images")
    return (_heading(result, stamp) + _table(["channel", "mean (data)", "mean (used)", "std (data)", "std (used)"],
                                             table) + "\n"), []


def region_training(view, figures: Path, figure: str):
    result = view["03_training"]
    runs = {name: result["runs"].get(f"runs/{name}") for name in ("lenet", "alexnet")}
    runs = {k: _with_history(result, f"runs/{k}", v) for k, v in runs.items() if v}
    if not runs:
        raise _malformed(result, "no runs/lenet or runs/alexnet")
    rows = []
    for name, run in runs.items():
        last = run["history"][-1]
        rows.append([{"lenet": "LeNet (sigmoid)", "alexnet": f"AlexNet ({run['settings']['img_size']} px)"}[name],
                     _subset(run), run["epochs"], _pct(last.get("train_acc")), _pct(run["final_val_acc"]),
                     f"{_pct(run['best_val_acc'])} (epoch {run['best_epoch']})", _num(last.get("train_loss"), 3),
                     _num(last.get("val_loss"), 3), f"{_num(run['train_time_s'] / max(run['epochs'], 1))} s",
                     _num(_mean_speed(run), 0), _num(_peak_mem(run), 0)])
    stamp = _provenance(result, _epochs(runs.values()))
    draw, data = _curves({k: v["history"] for k, v in runs.items()}, ("both_acc", "both_loss"), "LeNet vs AlexNet")
    path = _figure(figures / f"{figure}.png", stamp, draw, data)
    text = (_heading(result, stamp)
            + _table(["model", "trained on", "epochs", "final train acc", "final val acc", "best val acc",
                      "train loss", "val loss", "train time per epoch", "train img/s", "peak memory (MB)"], rows)
            + "\n\n" + _overfitting(runs) + _link(path.stem, "LeNet and AlexNet curves") + "\n")
    return text, [path]


def _overfitting(runs: Mapping[str, Mapping]) -> str:
    """Where each run's validation loss was lowest, against its last epoch: where overfitting begins."""
    notes = []
    for name, run in runs.items():
        history = run["history"]
        low = min(history, key=lambda r: r["val_loss"])
        gap = history[-1]["train_acc"] - history[-1]["val_acc"]
        notes.append(f"{name}: lowest validation loss at epoch {low['epoch']} of {len(history)}, final train − val "
                     f"accuracy {gap:+.1f} points")
    return "Measured: " + "; ".join(notes) + ".\n\n"


def region_memory(view, figures: Path, figure: str):
    """Peak memory while training, per model, as each run recorded it (no figure)."""
    result = view["03_training"]
    runs = {name: result["runs"].get(f"runs/{name}") for name in ("lenet", "alexnet")}
    resnet = view.get("06_resnet", {}).get("runs", {}).get("runs")
    runs["resnet18"] = resnet
    rows = [[name, f"{run['settings']['img_size']} px", run["settings"].get("batch_size", "–"),
             _num(_peak_mem(run), 0)] for name, run in runs.items() if run and _peak_mem(run) is not None]
    if not rows:
        return _heading(result, _provenance(result, "no run recorded its memory")), []
    gpu = bool(result["machine"].get("gpu"))
    what = ("CUDA's peak allocation by tensors (`torch.cuda.max_memory_allocated`)" if gpu else
            "the peak resident memory of the whole notebook process, which only grows: each model's figure "
            "includes the runtime and every model trained before it in the same kernel")
    stamp = _provenance(result, f"peak memory while training: {what}")
    return _heading(result, stamp) + _table(["model", "input", "batch", "peak memory (MB)"], rows) + "\n", []


def _sweep_region(view, figures: Path, figure: str, sweep: str, key: str | None, label: str, title: str,
                  curves=("val_acc", "val_loss"), speed: bool = False):
    result = view[f"05_{sweep}"]
    members = _members(result, sweep)
    if not members:
        raise _malformed(result, f"table 'runs/{sweep}.csv' has no members")
    header = [label, "best val acc", "final val acc", "final train acc", "best epoch", "train time per epoch"]
    if speed:
        header += ["total train time", "train img/s"]
    rows = []
    for row, run in members:
        value = _member_value(row, key)
        last = (run.get("history") or [{}])[-1]
        cells = [value, _pct(row.get("best_val_acc")), _pct(row.get("final_val_acc")), _pct(last.get("train_acc")),
                 row.get("best_epoch", "–"), f"{_num(row.get('time_per_epoch_s'))} s"]
        if speed:
            cells += [f"{_num(row.get('total_time_s'))} s", _num(_mean_speed(run), 0)]
        if row.get("status") == "failed":
            cells[1] = "failed (diverged)"
        rows.append(cells)
    model = next((run["settings"]["model"] for _, run in members if run.get("settings")), "?")
    runs = [run for _, run in members if run]
    stamp = _provenance(result, f"{model}, {_epochs(runs)}")
    histories = {_member_value(row, key).strip("`"): run["history"] for row, run in members if run.get("history")}
    draw, data = _curves(histories, curves, title)
    path = _figure(figures / f"{figure}.png", stamp, draw, data)
    text = (_heading(result, stamp) + _table(header, rows) + "\n\n" + _ranking(members, key, speed)
            + _link(path.stem, title) + "\n")
    return text, [path]


def _member_value(row: Mapping[str, Any], key: str | None) -> str:
    if key is None:
        return f"`{row['name']}`"
    value = row.get(key)
    return _rate(float(value)) if key == "TRAIN.LR" else str(value)


def _ranking(members, key: str | None, speed: bool) -> str:
    """The best and worst member by best validation accuracy, and for a timed sweep the fastest and
    slowest epoch: the sentence an answer quotes."""
    done = [(row, run) for row, run in members if row.get("status") != "failed"]
    if not done:
        return "Every member failed.\n\n"
    by_acc = sorted(done, key=lambda m: float(m[0]["best_val_acc"]), reverse=True)
    best, worst = by_acc[0][0], by_acc[-1][0]
    text = (f"Best: {_member_value(best, key)} at {_pct(best['best_val_acc'])}; worst: "
            f"{_member_value(worst, key)} at {_pct(worst['best_val_acc'])}")
    failed = [_member_value(row, key) for row, _ in members if row.get("status") == "failed"]
    if failed:
        text += f"; failed: {', '.join(failed)}"
    if speed:
        by_time = sorted(done, key=lambda m: float(m[0]["time_per_epoch_s"]))
        text += (f". Fastest epoch: {_member_value(by_time[0][0], key)} ({_num(by_time[0][0]['time_per_epoch_s'])} s); "
                 f"slowest: {_member_value(by_time[-1][0], key)} ({_num(by_time[-1][0]['time_per_epoch_s'])} s)")
    return text + ".\n\n"


def region_lr(view, figures, figure):
    return _sweep_region(view, figures, figure, "lr", "TRAIN.LR", "learning rate", "learning-rate sweep")


def region_batch_size(view, figures, figure):
    return _sweep_region(view, figures, figure, "batch_size", "DATA.BATCH_SIZE", "batch size", "batch-size sweep",
                         speed=True)


def region_augment(view, figures, figure):
    return _sweep_region(view, figures, figure, "augment", None, "scheme", "augmentation schemes",
                         curves=("train_acc", "val_acc"))


def region_variations(view, figures, figure):
    return _sweep_region(view, figures, figure, "variations", None, "variation", "optimizer / schedule / activation")


def _is_oom(row: Mapping[str, Any]) -> bool:
    return str(row.get("oom")).lower() == "true"


def region_throughput(view, figures, figure):
    result = view["05_throughput"]
    rows = result["tables"].get("runs/throughput.csv")
    if not rows:
        raise _malformed(result, "no table 'runs/throughput.csv'")
    for number, row in enumerate(rows, 1):
        if not _is_oom(row) and row.get("img_per_s") in (None, ""):
            raise _malformed(result, f"table 'runs/throughput.csv' row {number} has no 'img_per_s' (nor oom=True)")
    default = (result.get("parameters") or {}).get("model") or "alexnet"
    models: dict[str, list[dict]] = {}
    for row in rows:
        models.setdefault(row.get("model") or default, []).append(row)
    stamp = _provenance(result, f"{', '.join(models)}: training steps on ready random batches (no data loading)")
    data = {model: {"batch_size": [int(r["batch_size"]) for r in mine if not _is_oom(r)],
                    "img_per_s": [float(r["img_per_s"]) for r in mine if not _is_oom(r)],
                    "oom": [int(r["batch_size"]) for r in mine if _is_oom(r)]} for model, mine in models.items()}

    def draw(axes):
        for model, series in data.items():
            line, = axes[0].plot(series["batch_size"], series["img_per_s"], marker="o", label=model)
            for size in series["oom"]:
                axes[0].axvline(size, color=line.get_color(), ls=":", label=f"{model}: out of memory")
        axes[0].set_xscale("log", base=2)
        axes[0].set_yscale("log" if len(data) > 1 else "linear")
        axes[0].set_xlabel("batch size")
        axes[0].set_ylabel("training images/s", fontsize=8)
        axes[0].set_title("throughput vs batch size", fontsize=9)
        axes[0].grid(alpha=0.3)
        axes[0].legend(fontsize=7)
    path = _figure(figures / f"{figure}.png", stamp, draw, data, ncols=1)
    table = [[model, f"{int(r['batch_size']):,}", "out of memory" if _is_oom(r) else _num(r.get("img_per_s"), 0),
              "–" if _is_oom(r) else _num(r.get("step_ms"), 1), "–" if _is_oom(r) else _num(r.get("peak_mem_mb"), 0)]
             for model, mine in models.items() for r in mine]
    verdicts = " ".join(_throughput_verdict(model, series) for model, series in data.items())
    text = (_heading(result, stamp) + _table(["model", "batch", "img/s", "ms per step", "peak memory (MB)"], table)
            + f"\n\n{verdicts}\n\n" + _link(path.stem, "throughput vs batch size") + "\n")
    return text, [path]


def _throughput_verdict(model: str, series: Mapping[str, list]) -> str:
    """The largest batch that fits (or that no OOM came up to it), and where images/s peaked."""
    fits = series["batch_size"]
    if not fits:
        return f"{model}: nothing fit."
    text = (f"{model}: largest batch that fits **{max(fits):,}**" if series["oom"] else
            f"{model}: no out-of-memory up to {max(fits):,} (the largest batch measured)")
    peak = max(range(len(fits)), key=lambda i: series["img_per_s"][i])
    text += f"; most images/s {_num(series['img_per_s'][peak], 0)} at batch {fits[peak]:,}"
    if fits[peak] != max(fits):
        text += f", more than at the largest batch ({_num(series['img_per_s'][-1], 0)})"
    return text + "."


def region_resnet(view, figures, figure):
    result = view["06_resnet"]
    run = result["runs"].get("runs")
    if not run:
        raise _malformed(result, "no run in runs/")
    _with_history(result, "runs", run)
    runs = {"ResNet18": run}
    alexnet = view.get("03_training", {}).get("runs", {}).get("runs/alexnet")
    if alexnet:
        runs["AlexNet (03, 4.2)"] = _with_history(view["03_training"], "runs/alexnet", alexnet)
    rows = [[name, _subset(r), r["epochs"], f"{_pct(r['best_val_acc'])} (epoch {r['best_epoch']})",
             _pct(r["final_val_acc"]), f"{_num(r['train_time_s'] / max(r['epochs'], 1))} s",
             _num(_mean_speed(r), 0), _num(_peak_mem(r), 0)] for name, r in runs.items()]
    stamp = _provenance(result, _epochs(list(runs.values())))
    draw, data = _curves({k: v["history"] for k, v in runs.items()}, ("both_acc", "both_loss"), "ResNet18 vs AlexNet")
    path = _figure(figures / f"{figure}.png", stamp, draw, data)
    ratio = ""
    if alexnet and _mean_speed(alexnet) and _mean_speed(run):
        ratio = (f"ResNet18 trains {_mean_speed(alexnet) / _mean_speed(run):.1f}× slower per image than AlexNet "
                 f"on this machine ({_num(_mean_speed(run), 0)} against {_num(_mean_speed(alexnet), 0)} img/s).\n\n")
    text = (_heading(result, stamp) + _table(["model", "trained on", "epochs", "best val acc", "final val acc",
                                              "train time per epoch", "train img/s", "peak memory (MB)"], rows)
            + "\n\n" + ratio + _link(path.stem, "ResNet18 and AlexNet curves") + "\n")
    return text, [path]


def region_predictions(view, figures, figure):
    result = view["06_resnet"]
    if "runs/predictions.png" not in result.get("figures", []):
        return None   # a run without the grid (one imported from a benchmark): another machine's block shows it
    stamp = _provenance(result, "checkpoint_best.pt on 20 random validation images, true and predicted class")
    path = _image_figure(Path(result["folder"]) / "runs" / "predictions.png", figures / f"{figure}.png", stamp)
    return _heading(result, stamp) + _link(path.stem, "ResNet18 predictions, mistakes in red") + "\n", [path]


def region_kaggle(view, figures, figure):
    result = view["07_kaggle"]
    run = result["runs"].get("runs")
    if not run:
        raise _malformed(result, "no run in runs/")
    _with_history(result, "runs", run)
    stamp = _provenance(result, _epochs([run]))
    rows = [["ResNet18", run["settings"]["img_size"], _subset(run), run["epochs"], run.get("num_classes", "–"),
             f"{_pct(run['best_val_acc'])} (epoch {run['best_epoch']})", f"{_num(run['train_time_s'])} s"]]
    draw, data = _curves({"ResNet18": run["history"]}, ("both_acc", "both_loss"), "ResNet18, MediumImageNet format")
    path = _figure(figures / f"{figure}.png", stamp, draw, data)
    check = result.get("submission")
    checked = (f"`submission.csv`: header `{check['header']}`, {check['rows']:,} rows, ids {check['first_id']}"
               f"…{check['last_id']}, classes {check['min_class']}…{check['max_class']}.\n\n") if check else ""
    scored = result.get("score")
    if scored:
        checked += (f"Scored as Kaggle would, against the hidden test labels kept apart from the file "
                    f"(`python -m nmeplib score`): **{scored['accuracy']:.2f}%** ({scored['correct']:,} of "
                    f"{scored['rows']:,}), against {_pct(run['best_val_acc'])} best validation accuracy.\n\n")
    text = (_heading(result, stamp)
            + _table(["model", "px read", "trained on", "epochs", "classes", "best val acc", "training time"], rows)
            + "\n\n" + checked + _link(path.stem, "ResNet18 on the MediumImageNet-format file") + "\n")
    return text, [path]


def _subset(run: Mapping[str, Any]) -> str:
    size = (run.get("settings") or {}).get("train_subset")
    return f"{int(size):,} images" if size else "all images"


def _peak_mem(run: Mapping[str, Any]) -> float | None:
    values = [r["peak_mem_mb"] for r in run.get("history") or [] if isinstance(r.get("peak_mem_mb"), (int, float))]
    return max(values) if values else None


@dataclass(frozen=True)
class Region:
    """A measured region: the experiment it reads, the function that writes it, its figure's name."""
    experiment: str
    render: Callable
    figure: str


REGIONS: dict[str, Region] = {
    "stats": Region("01_datasets", region_stats, "stats"),
    "examples": Region("01_datasets", region_examples, "examples"),
    "memory": Region("03_training", region_memory, "memory"),
    "training": Region("03_training", region_training, "training"),
    "lr": Region("05_lr", region_lr, "lr"),
    "batch_size": Region("05_batch_size", region_batch_size, "batch_size"),
    "throughput": Region("05_throughput", region_throughput, "throughput"),
    "augment": Region("05_augment", region_augment, "augment"),
    "variations": Region("05_variations", region_variations, "variations"),
    "resnet": Region("06_resnet", region_resnet, "resnet"),
    "predictions": Region("06_resnet", region_predictions, "predictions"),
    "kaggle": Region("07_kaggle", region_kaggle, "kaggle"),
}


def render(name: str, views: Mapping[str, Mapping[str, Any]], figures: Path) -> tuple[str, list[Path]]:
    """Region ``name``'s body: one block per machine that measured its experiment (GPUs first),
    its figures named ``<figure>-<machine>``. No machine with it is an error naming the experiment."""
    spec = REGIONS[name]
    blocks, written = [], []
    for tag, view in views.items():
        made = spec.render(view, figures, f"{spec.figure}-{tag}") if spec.experiment in view else None
        if made is not None:
            blocks.append(made[0])
            written += made[1]
    if not blocks:
        raise WorksheetError(f"region {name!r} reads {spec.experiment}, and the results folder has none of it; run "
                             f"python -m nmeplib reproduce OUT_DIR --only {spec.experiment} (or leave the region out "
                             f"with --regions)")
    return "\n".join(blocks), written


# ----------------------------------------------------------------------------- rewriting

def regions_in(text: str) -> list[str]:
    """The RESULTS region names in ``text``, in order; an unclosed or unknown one is an error."""
    names = [m.group("name") for m in REGION.finditer(text)]
    opened = re.findall(r"<!-- BEGIN RESULTS ([\w-]+) -->", text)
    if len(opened) != len(names):
        missing = [n for n in opened if n not in names]
        raise WorksheetError(f"worksheet: RESULTS region(s) {', '.join(missing)} not closed by "
                             f"{END.format(name=missing[0])}")
    unknown = [n for n in names if n not in REGIONS]
    if unknown:
        raise WorksheetError(f"worksheet: unknown RESULTS region(s) {', '.join(unknown)}; known: {', '.join(REGIONS)}")
    return names


def rewrite(text: str, bodies: Mapping[str, str]) -> str:
    """``text`` with each named region's body replaced; everything else untouched."""
    def replace(match):
        name = match.group("name")
        if name not in bodies:
            return match.group(0)
        return match.group(1) + bodies[name] + match.group(4)
    return REGION.sub(replace, text)


def regenerate(source: str | os.PathLike = res.ROOT, worksheet: str | os.PathLike = "worksheet.md",
               figures: str | os.PathLike | None = None, regions: Sequence[str] | None = None,
               stream=None) -> dict[str, str]:
    """Rewrite ``worksheet``'s RESULTS regions and figures from the results folder ``source``;
    returns each region's fate.

    ``regions`` limits the rewrite to those names (the others are kept as they are). A rewrite of
    every region also removes the figures no region wrote, so the folder holds exactly what the
    worksheet shows. Nothing is written when any region fails."""
    from ..files import atomic_write

    stream = stream or sys.stdout
    worksheet = Path(worksheet)
    figures = Path(figures) if figures else worksheet.parent / FIGURES
    if not worksheet.is_file():
        raise WorksheetError(f"{worksheet}: no such worksheet")
    text = worksheet.read_text()
    names = regions_in(text)
    if regions:
        unknown = sorted(set(regions) - set(REGIONS))
        if unknown:
            raise WorksheetError(f"--regions: unknown region(s) {', '.join(unknown)}; known: {', '.join(REGIONS)}")
    views = load_results(source)
    staging = figures.with_name(f".{figures.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    bodies, fates, written = {}, {}, []
    try:
        for name in names:
            if regions and name not in regions:
                fates[name] = "kept (not in --regions)"
                continue
            bodies[name], paths = render(name, views, staging)
            written += paths
            fates[name] = "rewritten; " + ", ".join(p.name for p in paths)
        figures.mkdir(parents=True, exist_ok=True)
        if not regions:   # every region rewritten: figures no region wrote are stale
            for old in figures.iterdir():
                if old.suffix in (".png", ".json") and not (staging / old.name).exists():
                    old.unlink()
        for path in sorted(staging.iterdir()) if staging.is_dir() else ():
            os.replace(path, figures / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    new = rewrite(text, bodies)
    if new != text:
        atomic_write(worksheet, lambda f: f.write(new), "w")
    for name, fate in fates.items():
        print(f"{name}: {fate}", file=stream)
    return fates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmeplib worksheet",
                                description="Rewrite worksheet.md's measured tables (between <!-- BEGIN RESULTS name --> "
                                            "and <!-- END RESULTS name -->) and its figures from the results folder "
                                            "that python -m nmeplib reproduce writes.")
    p.add_argument("source", metavar="RESULTS", nargs="?", default=res.ROOT,
                   help=f"the results folder (default: {res.ROOT}/)")
    p.add_argument("--worksheet", default="worksheet.md", help="the worksheet to rewrite (default: worksheet.md)")
    p.add_argument("--figures", help=f"folder for the figures (default: {FIGURES}/ next to the worksheet)")
    p.add_argument("--regions", nargs="+", metavar="NAME",
                   help=f"rewrite only these regions ({', '.join(REGIONS)}); the others stay as they are")
    args = p.parse_args(argv)
    regenerate(args.source, args.worksheet, args.figures, regions=args.regions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
