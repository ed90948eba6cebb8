"""``python -m nmeplib worksheet OUT_DIR``: worksheet.md's measured tables and figures from a
results folder made by ``python -m nmeplib reproduce OUT_DIR``.

Each measured region of ``worksheet.md`` sits between ``<!-- BEGIN RESULTS name -->`` and
``<!-- END RESULTS name -->``, inside an answer region, which the student release blanks as a
whole (see ``release.py``). This command rewrites the regions whose experiment is
in ``OUT_DIR`` and leaves everything else, including regions whose experiment is missing,
byte for byte as it was. Each region opens with a line naming the machine, the torch version,
the date and the run length it was measured with; each figure (PNG, in ``worksheet_figures/``
next to ``worksheet.md``) carries the same line. The output depends only on the results folder:
running it twice gives the same files.

=============== ==================== =====================================================
region           experiment           content
=============== ==================== =====================================================
``training``     03_training          LeNet and AlexNet: accuracy, loss, time; curves
``lr``           05_sweeps            learning-rate sweep; validation curves
``batch_size``   05_sweeps            batch-size sweep with training times; curves
``throughput``   05_sweeps            images/s and memory vs batch size (until OOM on a GPU)
``augment``      05_sweeps            augmentation schemes; training and validation curves
``variations``   05_sweeps            optimizer / schedule / activation; curves
``resnet``       06_resnet            ResNet18 next to 03's AlexNet; curves
``predictions``  06_resnet            the prediction grid of ``checkpoint_best.pt``
``kaggle``       07_kaggle            the MediumImageNet run and its submission
=============== ==================== =====================================================
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import NmeplibError

BEGIN = "<!-- BEGIN RESULTS {name} -->"
END = "<!-- END RESULTS {name} -->"
REGION = re.compile(r"(<!-- BEGIN RESULTS (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END RESULTS (?P=name) -->)",
                    re.S)
FIGURES = "worksheet_figures"
RESULTS = "results.json"
REBUILD = "; remove it and run the same python -m nmeplib reproduce command again to rebuild it from the runs"
FIGURE_DPI = 80


class WorksheetError(NmeplibError, ValueError):
    """A results folder or worksheet this command cannot use (one ``error:`` line)."""


# ----------------------------------------------------------------------------- reading results

def load_results(out_dir: str | os.PathLike) -> dict[str, dict]:
    """Each experiment's ``results.json`` in ``out_dir`` (written by ``reproduce``), by name, each
    checked by :func:`check_results`."""
    out = Path(out_dir)
    if not out.is_dir():
        raise WorksheetError(f"{out}: no such results folder (make one with python -m nmeplib reproduce {out})")
    found = {}
    for path in sorted(out.glob(f"*/{RESULTS}")):
        try:
            data = json.loads(path.read_text())
        except ValueError as err:
            raise WorksheetError(f"{path}: not a results file ({err}){REBUILD}") from None
        found[path.parent.name] = {**check_results(path, data), "folder": str(path.parent)}
    if not found:
        raise WorksheetError(f"{out} holds no */{RESULTS}: run python -m nmeplib reproduce {out} first")
    return found


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
    return WorksheetError(f"{Path(result['folder']) / RESULTS}: {what}{REBUILD}")


def _with_history(result: Mapping[str, Any], name: str, run: Mapping[str, Any]) -> Mapping[str, Any]:
    """``run`` when it has epochs to draw; a region whose curves would be empty is an error."""
    if not run.get("history"):
        raise _malformed(result, f"run {name!r} has no history (its metrics.jsonl rows), so its curves "
                                 f"cannot be drawn")
    return run


def _provenance(result: Mapping[str, Any], epochs: str) -> str:
    m = result.get("machine", {})
    given = {k: v for k, v in (result.get("parameters") or {}).items()
             if k not in ("output_dir", "alexnet_dir", "data_root", "smoke")}
    settings = f" ({', '.join(f'{k}={v}' for k, v in given.items())})" if given else ""
    line = (f"{result['experiment']}{settings} via `python -m nmeplib reproduce`, {m.get('device', '?')}, "
            f"torch {m.get('torch', '?')}, {m.get('date', '?')}; {epochs}")
    load = m.get("load_average")
    cores = int((re.search(r"(\d+) cores", str(m.get("device", ""))) or [0, 1])[1])
    if load is not None and str(m.get("device", "")).startswith("CPU") and load > cores / 2:
        line += f"; load average {load:g} at the start (other jobs shared the {cores} cores: times are inflated)"
    if result.get("smoke"):
        line += "; SMOKE MODE: bundled digits stand in for the data, numbers say nothing about the targets"
    elif str(m.get("device", "")).startswith("CPU"):
        line += "; a short CPU run, not the course-scale figures"
    return line


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

def _figure(path: Path, stamp: str, draw: Callable, ncols: int = 2) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.2), dpi=FIGURE_DPI, squeeze=False)
    draw(list(axes[0]))
    fig.text(0.5, 0.01, stamp, ha="center", va="bottom", fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _curves(histories: Mapping[str, Sequence[Mapping]], keys=("train_acc", "val_acc"), title: str = "") -> Callable:
    def draw(axes):
        for (label, history) in histories.items():
            epochs = [r["epoch"] for r in history]
            line = None
            for key, ax in zip(keys, axes):
                if key == "both_acc":
                    line, = ax.plot(epochs, [r["val_acc"] for r in history], marker=".", label=label)
                    ax.plot(epochs, [r["train_acc"] for r in history], ls="--", marker="x", color=line.get_color())
                elif key == "both_loss":
                    line, = ax.plot(epochs, [r["val_loss"] for r in history], marker=".", label=label)
                    ax.plot(epochs, [r["train_loss"] for r in history], ls="--", marker="x", color=line.get_color())
                else:
                    ax.plot(epochs, [r[key] for r in history], marker=".", label=label)
        names = {"train_acc": "train accuracy (%)", "val_acc": "validation accuracy (%)",
                 "val_loss": "validation loss", "train_loss": "train loss",
                 "both_acc": "accuracy (%), val solid, train dashed", "both_loss": "loss, val solid, train dashed"}
        from matplotlib.ticker import MaxNLocator

        seen = sorted({r["epoch"] for history in histories.values() for r in history})
        for key, ax in zip(keys, axes):
            if 0 < len(seen) <= 12:
                ax.set_xticks(seen)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(names[key], fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].set_title(title, fontsize=9)
        axes[-1].legend(fontsize=7)
    return draw


# ----------------------------------------------------------------------------- regions

def _figure_link(name: str, alt: str) -> str:
    return f"![{alt}]({FIGURES}/{name}.png)"


def region_training(results, figures: Path) -> tuple[str, list[Path]] | None:
    result = results.get("03_training")
    if not result:
        return None
    runs = {name: result["runs"].get(f"runs/{name}") for name in ("lenet", "alexnet")}
    runs = {k: _with_history(result, f"runs/{k}", v) for k, v in runs.items() if v}
    if not runs:
        return None
    rows = []
    for name, run in runs.items():
        last = run["history"][-1] if run.get("history") else {}
        rows.append([{"lenet": "LeNet (sigmoid)", "alexnet": f"AlexNet ({run['settings']['img_size']} px)"}[name],
                     run["epochs"], _pct(last.get("train_acc")), _pct(run["final_val_acc"]),
                     f"{_pct(run['best_val_acc'])} (epoch {run['best_epoch']})", _num(last.get("train_loss"), 3),
                     _num(last.get("val_loss"), 3), f"{_num(run['train_time_s'] / max(run['epochs'], 1))} s",
                     _num(_mean_speed(run), 0)])
    stamp = _provenance(result, _epochs(runs.values()))
    fig = _figure(figures / "training.png", stamp,
                  _curves({k: v.get("history", []) for k, v in runs.items()}, ("both_acc", "both_loss"), "LeNet vs AlexNet"))
    text = (f"*{stamp}.*\n\n"
            + _table(["model", "epochs", "final train acc", "final val acc", "best val acc", "train loss", "val loss",
                      "train time per epoch", "train img/s"], rows)
            + "\n\n" + _figure_link("training", "LeNet and AlexNet curves") + "\n")
    return text, [fig]


def _sweep_region(results, figures: Path, sweep: str, key: str | None, label: str, title: str,
                  curves=("val_acc", "val_loss"), speed: bool = False):
    result = results.get("05_sweeps")
    if not result:
        return None
    members = _members(result, sweep)
    if not members:
        return None
    header = [label, "best val acc", "final val acc", "best epoch", "train time per epoch"]
    if speed:
        header += ["total train time", "train img/s"]
    rows = []
    for row, run in members:
        value = row.get(key) if key else row["name"]
        if key == "TRAIN.LR":
            value = _rate(float(value))
        cells = [f"`{value}`" if key is None or key == "DATA.AUGMENT" else value, _pct(row.get("best_val_acc")),
                 _pct(row.get("final_val_acc")), row.get("best_epoch", "–"),
                 f"{_num(row.get('time_per_epoch_s'))} s"]
        if speed:
            cells += [f"{_num(row.get('total_time_s'))} s", _num(_mean_speed(run), 0)]
        if row.get("status") == "failed":
            cells[1] = "failed (diverged)"
        rows.append(cells)
    model = next((run["settings"]["model"] for _, run in members if run.get("settings")), "?")
    runs = [run for _, run in members if run]
    stamp = _provenance(result, f"{model}, {_epochs(runs)}")
    histories = {str(row.get(key) if key else row["name"]): run["history"] for row, run in members if run.get("history")}
    fig = _figure(figures / f"{sweep}.png", stamp, _curves(histories, curves, title))
    text = f"*{stamp}.*\n\n" + _table(header, rows) + "\n\n" + _figure_link(sweep, title) + "\n"
    return text, [fig]


def region_lr(results, figures):
    return _sweep_region(results, figures, "lr", "TRAIN.LR", "learning rate", "learning-rate sweep")


def region_batch_size(results, figures):
    return _sweep_region(results, figures, "batch_size", "DATA.BATCH_SIZE", "batch size", "batch-size sweep",
                         speed=True)


def region_augment(results, figures):
    return _sweep_region(results, figures, "augment", None, "scheme", "augmentation schemes",
                         curves=("train_acc", "val_acc"))


def region_variations(results, figures):
    return _sweep_region(results, figures, "variations", None, "variation", "optimizer / schedule / activation")


def region_throughput(results, figures):
    result = results.get("05_sweeps")
    rows = (result or {}).get("tables", {}).get("runs/throughput.csv")
    if not rows:
        return None
    table = []
    for number, row in enumerate(rows, 1):
        oom = str(row.get("oom")).lower() == "true"
        if not oom and row.get("img_per_s") in (None, ""):
            raise _malformed(result, f"table 'runs/throughput.csv' row {number} has no 'img_per_s' "
                                     f"(nor oom=True)")
        table.append([row["batch_size"], "out of memory" if oom else _num(row.get("img_per_s"), 0),
                      "–" if oom else _num(row.get("step_ms"), 1), "–" if oom else _num(row.get("peak_mem_mb"), 0)])
    fits = [int(r["batch_size"]) for r in rows if str(r.get("oom")).lower() != "true"]
    stamp = _provenance(result, "training steps on random batches")

    def draw(axes):
        ok = [r for r in rows if str(r.get("oom")).lower() != "true"]
        axes[0].plot([int(r["batch_size"]) for r in ok], [float(r["img_per_s"]) for r in ok], marker="o")
        axes[0].set_xscale("log", base=2)
        axes[0].set_xlabel("batch size")
        axes[0].set_ylabel("training images/s", fontsize=8)
        axes[0].set_title("throughput vs batch size", fontsize=9)
        axes[0].grid(alpha=0.3)
        for r in rows:
            if str(r.get("oom")).lower() == "true":
                axes[0].axvline(int(r["batch_size"]), color="red", ls=":", label="out of memory")
                axes[0].legend(fontsize=7)
    fig = _figure(figures / "throughput.png", stamp, draw, ncols=1)
    oom = any(str(r.get("oom")).lower() == "true" for r in rows)
    verdict = (f"Largest batch that fits: **{max(fits):,}**." if oom else
               f"No out-of-memory up to {max(fits):,} (the sweep's limit on this machine).") if fits else ""
    text = (f"*{stamp}.*\n\n" + _table(["batch", "img/s", "ms per step", "peak memory (MB)"], table)
            + f"\n\n{verdict}\n\n" + _figure_link("throughput", "throughput vs batch size") + "\n")
    return text, [fig]


def region_resnet(results, figures):
    result = results.get("06_resnet")
    if not result:
        return None
    run = result["runs"].get("runs")
    if not run:
        return None
    _with_history(result, "runs", run)
    rows = [["ResNet18", run["epochs"], f"{_pct(run['best_val_acc'])} (epoch {run['best_epoch']})",
             _pct(run["final_val_acc"]), f"{_num(run['train_time_s'])} s", _num(_mean_speed(run), 0)]]
    histories = {"ResNet18": run.get("history", [])}
    alexnet = results.get("03_training", {}).get("runs", {}).get("runs/alexnet")
    if alexnet:
        _with_history(results["03_training"], "runs/alexnet", alexnet)
        rows.append(["AlexNet (03, 4.2)", alexnet["epochs"],
                     f"{_pct(alexnet['best_val_acc'])} (epoch {alexnet['best_epoch']})",
                     _pct(alexnet["final_val_acc"]), f"{_num(alexnet['train_time_s'])} s",
                     _num(_mean_speed(alexnet), 0)])
        histories["AlexNet"] = alexnet.get("history", [])
    stamp = _provenance(result, _epochs([run]))
    fig = _figure(figures / "resnet.png", stamp, _curves(histories, ("both_acc", "both_loss"), "ResNet18 vs AlexNet"))
    text = (f"*{stamp}.*\n\n" + _table(["model", "epochs", "best val acc", "final val acc", "training time",
                                        "train img/s"], rows)
            + "\n\n" + _figure_link("resnet", "ResNet18 and AlexNet curves") + "\n")
    return text, [fig]


def region_predictions(results, figures):
    result = results.get("06_resnet")
    if not result:
        return None
    grid = Path(result["folder"]) / "runs" / "predictions.png"
    if not grid.is_file():
        return None
    import matplotlib.image as mpimg

    image = mpimg.imread(str(grid))
    stamp = _provenance(result, "checkpoint_best.pt on 20 random validation images")

    def draw(axes):
        axes[0].imshow(image)
        axes[0].axis("off")
    height = image.shape[0] / image.shape[1]
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8, 8 * height + 0.3), dpi=FIGURE_DPI)
    ax = fig.add_axes((0, 0.3 / (8 * height + 0.3), 1, 1 - 0.3 / (8 * height + 0.3)))
    draw([ax])
    fig.text(0.5, 0.005, stamp, ha="center", va="bottom", fontsize=6.5)
    path = figures / "predictions.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI, metadata={"Software": None})
    plt.close(fig)
    text = f"*{stamp}.*\n\n" + _figure_link("predictions", "ResNet18 predictions, mistakes in red") + "\n"
    return text, [path]


def region_kaggle(results, figures):
    result = results.get("07_kaggle")
    if not result:
        return None
    run = result["runs"].get("runs")
    if not run:
        return None
    _with_history(result, "runs", run)
    stamp = _provenance(result, _epochs([run]))
    rows = [["ResNet18", run["settings"]["img_size"], run["epochs"], run.get("num_classes", "–"),
             f"{_pct(run['best_val_acc'])} (epoch {run['best_epoch']})", f"{_num(run['train_time_s'])} s"]]
    fig = _figure(figures / "kaggle.png", stamp, _curves({"ResNet18": run.get("history", [])}, ("both_acc", "both_loss"),
                                                          "ResNet18 on MediumImageNet"))
    text = (f"*{stamp}.*\n\n" + _table(["model", "px", "epochs", "classes", "best val acc", "training time"], rows)
            + "\n\nThe test accuracy is Kaggle's to measure (the labels are hidden); expect it near the validation "
              "accuracy.\n\n" + _figure_link("kaggle", "ResNet18 on MediumImageNet curves") + "\n")
    return text, [fig]


REGIONS: dict[str, Callable] = {
    "training": region_training, "lr": region_lr, "batch_size": region_batch_size, "throughput": region_throughput,
    "augment": region_augment, "variations": region_variations, "resnet": region_resnet,
    "predictions": region_predictions, "kaggle": region_kaggle,
}


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


def regenerate(out_dir: str | os.PathLike, worksheet: str | os.PathLike = "worksheet.md",
               figures: str | os.PathLike | None = None, regions: Sequence[str] | None = None,
               stream=None) -> dict[str, str]:
    """Rewrite ``worksheet``'s RESULTS regions and figures from ``out_dir``; returns each region's fate.

    ``regions`` limits the rewrite to those names (the others are kept as they are)."""
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
    results = load_results(out_dir)
    bodies, fates = {}, {}
    for name in names:
        if regions and name not in regions:
            fates[name] = "kept (not in --regions)"
            continue
        made = REGIONS[name](results, figures)
        if made is None:
            fates[name] = "kept (nothing for it in the results folder)"
            continue
        bodies[name], written = made
        fates[name] = "rewritten; " + ", ".join(p.name for p in written)
    new = rewrite(text, bodies)
    if new != text:
        worksheet.write_text(new)
    for name, fate in fates.items():
        print(f"{name}: {fate}", file=stream)
    return fates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmeplib worksheet",
                                description="Rewrite worksheet.md's measured tables (between <!-- BEGIN RESULTS name --> "
                                            "and <!-- END RESULTS name -->) and its figures from a results folder "
                                            "made by python -m nmeplib reproduce.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="results folder of python -m nmeplib reproduce")
    p.add_argument("--worksheet", default="worksheet.md", help="the worksheet to rewrite (default: worksheet.md)")
    p.add_argument("--figures", help=f"folder for the PNG figures (default: {FIGURES}/ next to the worksheet)")
    p.add_argument("--regions", nargs="+", metavar="NAME",
                   help=f"rewrite only these regions ({', '.join(REGIONS)}); the others stay as they are")
    args = p.parse_args(argv)
    regenerate(args.out_dir, args.worksheet, args.figures, regions=args.regions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
