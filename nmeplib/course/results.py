"""The repository's ``results/`` folder: the small files of every measured experiment.

``results/<experiment>/<date>_<machine>_<scale>/`` holds one experiment (or one piece of 05) as
measured on one machine on one day: each run's ``metrics.jsonl`` and ``summary.json``, the
notebook's tables (CSV), the few small figures the worksheet shows as they are (the prediction
grid, the example grids), and ``manifest.json`` naming the machine, torch version, commit, date,
exact command, data and scale. Checkpoints never come here (they stay in reproduce's OUT_DIR).
Results of other machines or days sit side by side; ``python -m nmeplib worksheet`` reads them
(:func:`load`) and shows each machine's results under its own label, a GPU's first.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

from ..errors import NmeplibError
from ..files import read_json, read_jsonl, write_json

MANIFEST = "manifest.json"
ROOT = "results"
# What a results folder keeps of a run folder: the run files by name, tables by suffix, and the
# figures the worksheet shows as they are (they cannot be redrawn without the data).
KEPT_NAMES = ("metrics.jsonl", "summary.json", "score.json")
KEPT_SUFFIXES = (".csv",)
KEPT_FIGURES = ("predictions.png", "cifar10_examples.png", "medium_imagenet_examples.png")
LEFT_OUT = ("submission.csv",)
SUBMISSION_CHECK = "submission_check.json"   # what a submission.csv held, kept instead of its rows
MAX_FILE_BYTES = 2_000_000   # a figure or table above this is a mistake, not a result


def default_root() -> str:
    """Where ``reproduce`` writes results: ``$NMEPLIB_RESULTS`` when set (the test suite sets a
    temporary folder, so no test writes into the repository), else ``results/``."""
    return os.environ.get("NMEPLIB_RESULTS") or ROOT


class ResultsError(NmeplibError, ValueError):
    """A results folder that cannot be read or written (one ``error:`` line)."""


def working_commit() -> str:
    """The working tree's commit (short), with ``+changes`` when files differ from it; ``?`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + ("+changes" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_tag(machine: Mapping[str, Any]) -> str:
    """A folder-name form of a machine: ``nvidia-h100-80gb-hbm3`` or ``cpu-2core``."""
    gpu = machine.get("gpu")
    if gpu:
        return re.sub(r"[^a-z0-9]+", "-", str(gpu).lower()).strip("-")
    return f"cpu-{machine.get('cores', '?')}core"


def folder_name(manifest: Mapping[str, Any]) -> str:
    """``2026-12-07_cpu-2core_cpu``: date, machine and scale of one measured experiment."""
    return f"{manifest['date']}_{machine_tag(manifest['machine'])}_{manifest['scale']}"


def export(source: str | os.PathLike, manifest: Mapping[str, Any], root: str | os.PathLike = ROOT) -> Path:
    """Copy the small files of ``source`` (an experiment's folder in reproduce's OUT_DIR) into
    ``root/<experiment>/<date>_<machine>_<scale>/`` with ``manifest``; the folder is replaced as a
    whole, so a file the new run no longer makes does not linger. Returns the folder."""
    source = Path(source)
    target = Path(root) / manifest["experiment"] / folder_name(manifest)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for path in sorted(source.rglob("*")):
            if not path.is_file() or not _kept(path):
                continue
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ResultsError(f"{path}: {path.stat().st_size:,} bytes, more than a results file may hold "
                                   f"({MAX_FILE_BYTES:,})")
            copy = staging / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        for submission in sorted(source.rglob("submission.csv")):
            write_json(staging / submission.relative_to(source).with_name(SUBMISSION_CHECK),
                       submission_check(submission))
        write_json(staging / MANIFEST, dict(manifest))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def submission_check(path: Path) -> dict[str, Any]:
    """What a Kaggle ``submission.csv`` holds: header, row count, first and last id, class range."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        rows = [row for row in reader if row]
    ids = [int(row[0]) for row in rows]
    classes = [int(row[1]) for row in rows]
    return {"header": ",".join(header), "rows": len(rows), "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None, "min_class": min(classes, default=None),
            "max_class": max(classes, default=None)}


def _kept(path: Path) -> bool:
    if path.name in LEFT_OUT or "demo-data" in path.parts:
        return False
    return path.name in KEPT_NAMES or path.suffix in KEPT_SUFFIXES or path.name in KEPT_FIGURES


def manifest(experiment: str, *, parts: str, parameters: Mapping[str, Any], scale: str, command: str,
             data: str, machine: Mapping[str, Any], elapsed_s: float | None = None,
             date: str | None = None, commit: str | None = None) -> dict[str, Any]:
    """The manifest of one measured experiment (see the module's docstring); ``commit`` defaults
    to the working tree's."""
    return {"experiment": experiment, "parts": parts, "scale": scale, "data": data, "command": command,
            "commit": commit or working_commit(), "date": date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
            "machine": dict(machine), "parameters": dict(parameters), "elapsed_s": elapsed_s}


def this_machine() -> dict[str, Any]:
    """What a result was measured on: the GPU's model, or the CPU's with its cores; torch and
    Python versions; the load average at the start (other jobs slow every timing)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        load = round(os.getloadavg()[0], 1)
    except OSError:
        load = None
    return {"gpu": gpu, "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_average": load}


def as_machine(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A machine as :func:`this_machine` describes it, also from an older manifest that named it
    in one ``device`` text (``CPU (2 cores, x86_64)`` or the GPU's name)."""
    if "cores" in recorded or "device" not in recorded:
        return dict(recorded)
    device = str(recorded["device"])
    cores = re.search(r"CPU \((\d+) cores", device)
    return {"gpu": None if cores else device, "cpu": cpu_model() if cores else None,
            "cores": int(cores[1]) if cores else None, "torch": recorded.get("torch"),
            "python": recorded.get("python"), "load_average": recorded.get("load_average")}


def load(root: str | os.PathLike = ROOT) -> dict[str, list[dict[str, Any]]]:
    """Every measured experiment under ``root``: ``{experiment: [result, ...]}``, each result its
    manifest plus ``folder``; a folder without a readable manifest is an error naming it."""
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"{root}: no such results folder (python -m nmeplib reproduce writes it)")
    found: dict[str, list[dict[str, Any]]] = {}
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")):
        data = read_json(folder / MANIFEST)
        if not isinstance(data, dict) or not isinstance(data.get("machine"), dict) \
                or data.get("experiment") != folder.parent.name:
            raise ResultsError(f"{folder}: no readable {MANIFEST} for {folder.parent.name}; "
                               f"run the experiment's reproduce command again to rewrite it")
        found.setdefault(folder.parent.name, []).append({**data, "folder": str(folder)})
    return found


def is_gpu(result: Mapping[str, Any]) -> bool:
    return bool(result["machine"].get("gpu"))


def machines(found: Mapping[str, list[Mapping[str, Any]]]) -> list[str]:
    """The machine tags present, GPUs first, then by name."""
    tags = {machine_tag(r["machine"]): is_gpu(r) for results in found.values() for r in results}
    return sorted(tags, key=lambda tag: (not tags[tag], tag))


def on_machine(found: Mapping[str, list[Mapping[str, Any]]], tag: str) -> dict[str, Mapping[str, Any]]:
    """``{experiment: result}`` for one machine, the newest of each (by date, then folder name)."""
    view = {}
    for experiment, results in found.items():
        mine = [r for r in results if machine_tag(r["machine"]) == tag]
        if mine:
            view[experiment] = max(mine, key=lambda r: (str(r.get("date")), r["folder"]))
    return view


def collect(folder: str | os.PathLike) -> dict[str, Any]:
    """Every run's ``summary.json`` (without its config, with the settings the worksheet shows and
    its ``metrics.jsonl`` rows as ``history``) and every CSV table under ``folder``, keyed by their
    paths relative to it; the PNG files by path."""
    folder = Path(folder)
    runs, tables = {}, {}
    for path in sorted(folder.rglob("summary.json")):
        summary = read_json(path)
        if not isinstance(summary, dict):
            continue
        config = summary.get("config") or {}
        data, model, train = config.get("DATA", {}), config.get("MODEL", {}), config.get("TRAIN", {})
        keep = {k: v for k, v in summary.items() if k != "config"}
        keep["settings"] = {"model": model.get("NAME"), "dataset": data.get("DATASET"),
                            "img_size": data.get("IMG_SIZE"), "batch_size": data.get("BATCH_SIZE"),
                            "lr": train.get("LR"), "augment": data.get("AUGMENT"),
                            "train_subset": data.get("TRAIN_SUBSET")}
        metrics = path.parent / "metrics.jsonl"
        keep["history"] = read_jsonl(metrics) if metrics.is_file() else []
        runs[path.parent.relative_to(folder).as_posix()] = keep
    for path in sorted(folder.rglob("*.csv")):
        if "demo-data" in path.parts or path.name in LEFT_OUT:
            continue
        with path.open(newline="") as f:
            tables[path.relative_to(folder).as_posix()] = list(csv.DictReader(f))
    figures = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    checks = sorted(folder.rglob(SUBMISSION_CHECK))
    scores = sorted(folder.rglob("score.json"))
    return {"runs": runs, "tables": tables, "figures": figures,
            "submission": read_json(checks[0]) if checks else None, "score": read_json(scores[0]) if scores else None}
