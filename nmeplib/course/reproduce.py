"""``python -m nmeplib reproduce OUT_DIR``: every long job of the worksheet, one command.

Each experiment executes a numbered notebook headless with papermill (the course's way of running
long jobs) and keeps, in ``OUT_DIR/<experiment>/``: the executed notebook, the run folders it
trained (``runs/``: ``metrics.jsonl``, ``summary.json``, checkpoints, figures), ``results.json``
(every run's summary and every table the notebook saved) and ``manifest.json`` (the parameters,
the state, the machine and the times). A finished experiment's small files (no checkpoints) also
go to the repository's ``results/`` folder with the machine, commit, command and scale
(``course/results.py``), which ``python -m nmeplib worksheet`` reads.

Experiments (worksheet parts in brackets); 05 runs as five pieces, each short enough for a brief
GPU lease, and ``--only`` takes a piece, a notebook (``05``, ``sweeps``) or a list:

============== ==================================================================================
01_datasets    example grids of CIFAR-10 and of the MediumImageNet file (1.2.3)
03_training    LeNet and AlexNet on CIFAR-10, curves every epoch (4.2, 5.0, 5.1)
05_lr          AlexNet learning-rate sweep (5.2)
05_batch_size  AlexNet batch-size sweep with training times (5.3)
05_throughput  images/s vs batch size, until out of memory on a GPU (5.4)
05_augment     augmentation schemes with train and validation curves (5.5)
05_variations  optimizer / schedule / activation (5.6)
06_resnet      ResNet18 on CIFAR-10, compared with 03's AlexNet, prediction grid (6.0, 6.1)
07_kaggle      ResNet18 on the MediumImageNet HDF5 file given by ``--hdf5`` and the submission (7);
               without ``--hdf5`` it is skipped with a note
============== ==================================================================================

Running it again skips experiments finished with the same parameters, resumes an interrupted
one (the notebook gets ``resume=True``: each run continues from its ``checkpoint_last.pt``,
finished runs are read back, see README "What happens when...") and refuses, naming the
differences, an experiment whose folder holds other parameters (``--overwrite`` replaces it).
A manifest that is damaged or gone is read again from the folder itself (the parameters papermill
recorded in the executed notebook, the runs' ``summary.json``), so a finished experiment is kept;
the folders inside OUT_DIR are recorded relative to it and are not compared, so a moved or copied
OUT_DIR keeps its experiments. One ``reproduce`` at a time holds OUT_DIR's lock.

Sizing (:data:`SCALES`): ``--scale full``, the default, trains the course's lengths (03 and 06
:data:`MAIN_EPOCHS`, each 05 sweep member :data:`SWEEP_EPOCHS`), estimated at about 15 minutes
on one H100 (:data:`H100_ESTIMATE_S`, an estimate whose basis is in benchmarks/README.md);
``--scale cpu`` trains on subsets for at least 5 epochs, about 90 minutes on 2 CPU cores
(:data:`CPU_ESTIMATE_S`). ``--smoke`` runs the same chain in smoke mode (bundled digits, one or
two epochs), as the test suite does, and writes nothing to ``results/``.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import functools
import os
import shlex
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .. import checkpoint as ckpt
from ..errors import NmeplibError
from . import results

NOTEBOOKS: Path | None = None   # the numbered notebooks; None: workbook.notebooks_dir() finds them
MANIFEST = "manifest.json"
RESULTS = "results.json"
# Parameters naming folders inside OUT_DIR: they follow the folder when it is moved or copied.
LOCATIONS = ("output_dir", "alexnet_dir")
SWEEP_EPOCHS = 12  # each AlexNet sweep member (20 of them) on the GPU
MAIN_EPOCHS = 30   # 03 (LeNet, AlexNet) and 06 (ResNet18): the course's run length
KAGGLE_EPOCHS = 10

# One experiment per notebook run: name -> (notebook, its parameters at every scale, worksheet
# parts). 05_sweeps.ipynb runs as five pieces, one per section (its ``sweeps`` parameter), so each
# piece fits a short GPU lease. The run folders go under OUT_DIR/<name>/runs; 06 compares with
# 03's AlexNet.
_SWEEP = "05_sweeps.ipynb"
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "01_datasets": {"notebook": "01_datasets.ipynb", "parts": "1.2.3", "parameters": {}},
    "03_training": {"notebook": "03_training.ipynb", "parts": "4.2, 5.0, 5.1", "parameters": {}},
    "05_lr": {"notebook": _SWEEP, "parts": "5.2", "parameters": {"sweeps": ["lr"]}},
    "05_batch_size": {"notebook": _SWEEP, "parts": "5.3", "parameters": {"sweeps": ["batch_size"]}},
    "05_throughput": {"notebook": _SWEEP, "parts": "5.4", "parameters": {"sweeps": ["throughput"]}},
    "05_augment": {"notebook": _SWEEP, "parts": "5.5", "parameters": {"sweeps": ["augment"]}},
    "05_variations": {"notebook": _SWEEP, "parts": "5.6", "parameters": {"sweeps": ["variations"]}},
    "06_resnet": {"notebook": "06_resnet.ipynb", "parts": "6.0, 6.1", "parameters": {}},
    "07_kaggle": {"notebook": "07_kaggle.ipynb", "parts": "7", "needs_hdf5": True, "parameters": {}},
}

# Run lengths by scale, keyed by notebook. ``full`` is the course's run on a GPU (the course server
# runs every experiment with one command). ``cpu`` answers the worksheet on a 2-core machine in about
# 90 minutes: LeNet on every image, AlexNet and ResNet18 on stratified training subsets
# (validation stays whole), at least 5 epochs each so every region has curves, in batches of 64 so
# that a short run still takes ~150 optimizer steps; 07 reads its 96 px file at 32 px. The sizes
# follow from the step times in benchmarks/README.md ("CPU scale").
SCALES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {"01_datasets.ipynb": {}, "03_training.ipynb": {"epochs": MAIN_EPOCHS}, _SWEEP: {"epochs": SWEEP_EPOCHS},
             "06_resnet.ipynb": {"epochs": MAIN_EPOCHS}, "07_kaggle.ipynb": {"epochs": KAGGLE_EPOCHS}},
    "cpu": {"01_datasets.ipynb": {}, "03_training.ipynb": {"epochs": 12, "alexnet_train_subset": 5000},
            _SWEEP: {"epochs": 5, "train_subset": 2000, "batch_size": 64},
            "06_resnet.ipynb": {"epochs": 5, "train_subset": 2000, "batch_size": 64},
            "07_kaggle.ipynb": {"epochs": 5, "train_subset": 2000, "batch_size": 64, "img_size": 32,
                                "num_workers": 0}},
}

# Seconds per experiment on one H100 at full scale: an estimate (see benchmarks/README.md), not a
# measurement; the five pieces of 05 share its 600 s by their member count (4, 5, 20 s, 4, 7).
H100_ESTIMATE_S = {"01_datasets": 30, "03_training": 95, "05_lr": 120, "05_batch_size": 150, "05_throughput": 20, "05_augment": 120,
                   "05_variations": 190, "06_resnet": 105}
KAGGLE_IMG_PER_S = 2300
# Seconds per experiment at CPU scale on 2 idle cores, from the measured step times (see
# benchmarks/README.md); 07's assumes the CIFAR-10 stand-in file.
CPU_ESTIMATE_S = {"01_datasets": 60, "03_training": 600, "05_lr": 470, "05_batch_size": 600, "05_throughput": 90, "05_augment": 470,
                  "05_variations": 820, "06_resnet": 650, "07_kaggle": 500}
# Seconds per experiment in smoke mode on a 2-core CPU, kernel start included.
SMOKE_ESTIMATE_S = {"01_datasets": 30, "03_training": 75, "05_lr": 35, "05_batch_size": 35, "05_throughput": 20, "05_augment": 35,
                    "05_variations": 35, "06_resnet": 120, "07_kaggle": 85}
GPU_BUDGET_S = 15 * 60
# The order in which a short GPU lease takes the experiments still without a GPU result: the
# sweeps first (the worksheet has no GPU run of them), then the runs whose GPU figures exist only
# from an earlier benchmark. 07 needs the course's MediumImageNet file, which a lent GPU lacks.
LEASE_ORDER = ("05_lr", "05_batch_size", "05_augment", "05_variations", "03_training", "06_resnet",
               "05_throughput", "01_datasets")


class ReproduceError(NmeplibError, ValueError):
    """An expected fault of ``reproduce`` (a folder with other parameters, a missing file)."""


# ----------------------------------------------------------------------------- plan

def parse_params(items: Iterable[str] | None) -> dict[str | None, dict[str, Any]]:
    """``--param [EXPERIMENT.]NAME=VALUE`` items as ``{experiment or None: {name: value}}``;
    values are read as YAML (``2`` is an int, ``3e-3`` a float, ``lenet`` a string)."""
    from ..config import parse_value

    parsed: dict[str | None, dict[str, Any]] = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ReproduceError(f"--param {item!r}: expected [EXPERIMENT.]NAME=VALUE, e.g. epochs=2 or "
                                 f"05_sweeps.model=lenet")
        experiment, _, name = key.strip().rpartition(".")
        targets = _matches(experiment) if experiment else [None]
        if not targets:
            raise ReproduceError(f"--param {item!r}: unknown experiment {experiment!r}; choose from "
                                 f"{', '.join(EXPERIMENTS)}")
        value = parse_value(text, f"--param {item!r}")
        if isinstance(value, str):
            try:
                value = float(value)   # YAML reads 3e-3 (no dot) as a string
            except ValueError:
                pass
        for target in targets:
            parsed.setdefault(target, {})[name] = value
    return parsed


def _inspect(notebook: str) -> dict[str, dict]:
    """papermill's view of ``notebook``'s parameters cell: each name with its default as written."""
    return _inspect_path(str(notebooks() / notebook))


def notebooks() -> Path:
    """The folder of the numbered notebooks: :data:`NOTEBOOKS` when set, else the one
    ``$NMEPLIB_NOTEBOOKS`` names or the nearest above the working directory."""
    from ..workbook.settings import notebooks_dir

    return NOTEBOOKS if NOTEBOOKS is not None else notebooks_dir()


@functools.lru_cache(maxsize=None)
def _inspect_path(path: str) -> dict[str, dict]:
    import logging

    import papermill as pm

    log = logging.getLogger("papermill")
    level = log.level
    log.setLevel(logging.ERROR)   # it warns about comments it cannot parse as types
    try:
        return dict(pm.inspect_notebook(path))
    finally:
        log.setLevel(level)


def _declared(notebook: str) -> set[str]:
    return set(_inspect(notebook))


# What a parameter's default says it takes; a None default (``smoke``) takes anything. ``overrides``
# is a mapping by default but the notebooks also take a list of "KEY=VALUE" strings.
_TYPE_NAMES = {bool: "true or false", int: "an int", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}
_ALSO_TAKES = {"overrides": (list,)}


def _expected_types(name: str, default_text: str) -> tuple[type, ...] | None:
    """The types a notebook parameter takes, read from its default; None when anything goes."""
    try:
        default = ast.literal_eval(default_text)
    except (ValueError, SyntaxError):
        return None
    kind = next((t for t in _TYPE_NAMES if type(default) is t), list if isinstance(default, tuple) else None)
    if kind is None:
        return None
    return ((int, float) if kind is float else (kind,)) + _ALSO_TAKES.get(name, ())


def check_param_type(label: str, notebook: str, name: str, value: Any) -> None:
    """Refuse ``--param label=value`` when ``value`` is not of the type of ``name``'s default in
    ``notebook`` (``epochs=abc`` for ``epochs = 30``): papermill would pass it on and the notebook
    fail half-way, or train with it."""
    default_text = str(_inspect(notebook).get(name, {}).get("default", "None"))
    expected = _expected_types(name, default_text)
    if expected is None or (isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)):
        return
    wanted = " or ".join(_TYPE_NAMES[t] for t in expected if t is not int or float not in expected)
    shown = _shown(value)
    raise ReproduceError(f"--param {label}={shown}: {name} takes {wanted} in {notebook} (its default is "
                         f"{default_text}), not {_TYPE_NAMES.get(type(value), type(value).__name__)} {shown}")


def _shown(value: Any) -> str:
    """A parameter value as it would be typed: ``'abc'`` for a string, ``2.5``, ``[1, 2]``."""
    return repr(value) if not isinstance(value, bool) else str(value).lower()


def plan(out_dir: str | os.PathLike, *, smoke: bool = False, hdf5: str | None = None,
         only: Iterable[str] | None = None, data_root: str | None = None,
         params: Iterable[str] | None = None, scale: str = "full") -> list[dict[str, Any]]:
    """The experiments to run, in order, each with its folder and full papermill parameters.

    ``scale`` picks the run lengths (:data:`SCALES`: ``full``, the course's, or ``cpu``).

    ``params`` (``--param``) change notebook parameters: ``NAME=VALUE`` in every experiment whose
    notebook declares NAME, ``EXPERIMENT.NAME=VALUE`` in that one only (for instance a short CPU
    run: ``epochs=1 03_training.alexnet_warmup_epochs=0 05_sweeps.model=lenet``)."""
    if scale not in SCALES:
        raise ReproduceError(f"--scale {scale!r}: choose from {', '.join(SCALES)}")
    extra = parse_params(params)
    out = Path(out_dir).resolve()
    names = list(EXPERIMENTS)
    if only:
        wanted = [n.strip() for item in only for n in str(item).split(",") if n.strip()]
        unknown = [n for n in wanted if not _matches(n)]
        if unknown:
            raise ReproduceError(f"--only: unknown experiment(s) {', '.join(unknown)}; "
                                 f"choose from {', '.join(EXPERIMENTS)}")
        chosen = {full for n in wanted for full in _matches(n)}
        names = [n for n in names if n in chosen]
    if extra.get(None):   # NAME=VALUE goes to every notebook declaring NAME: refuse one that none declares
        from ..workbook.parameters import describe_unknown
        everywhere = sorted(set().union(*(_declared(EXPERIMENTS[n]["notebook"]) for n in names)))
        unknown = [key for key in extra[None] if key not in everywhere]
        if unknown:
            raise ReproduceError(f"--param: {describe_unknown(unknown, everywhere)}; no notebook of "
                                 f"{', '.join(names)} declares {'it' if len(unknown) == 1 else 'them'}")
    steps = []
    for name in names:
        spec = EXPERIMENTS[name]
        folder = out / name
        params: dict[str, Any] = {**SCALES[scale][spec["notebook"]], **spec["parameters"],
                                  "output_dir": str(folder / "runs"), "smoke": smoke}
        if not spec.get("needs_hdf5") and data_root:
            params["data_root"] = data_root
        if name == "01_datasets" and hdf5:
            params["medium_imagenet_root"] = str(Path(hdf5).resolve())
        if name == "06_resnet":
            params["alexnet_dir"] = str(out / "03_training" / "runs" / "alexnet")
        if name == "07_kaggle":
            if hdf5:
                params["data_root"] = str(Path(hdf5).resolve())
            elif not smoke:
                params = {}
        declared = _declared(spec["notebook"]) if extra else set()
        for key, value in extra.get(None, {}).items():
            if key in declared:
                check_param_type(key, spec["notebook"], key, value)
                params[key] = value
        for key, value in extra.get(name, {}).items():
            if key not in declared:
                from ..workbook.parameters import did_you_mean
                raise ReproduceError(f"--param {name}.{key}: {spec['notebook']} has no parameter "
                                     f"{did_you_mean(key, declared)}; "
                                     f"it takes {', '.join(sorted(declared))}")
            check_param_type(f"{name}.{key}", spec["notebook"], key, value)
            params[key] = value
        skip = "no --hdf5 file given: the Kaggle run (Part 7) is skipped" \
            if spec.get("needs_hdf5") and not hdf5 and not smoke else None
        steps.append({"name": name, "notebook": spec["notebook"], "folder": folder, "parameters": params,
                      "parts": spec["parts"], "skip": skip, "scale": scale,
                      "estimate_s": _estimate(name, smoke, hdf5, scale)})
    return steps


def lease_pieces(budget_s: float, results_dirs: Iterable[str | os.PathLike], gpu: str | None = None) -> list[str]:
    """The experiments a GPU lease of ``budget_s`` seconds should run: in :data:`LEASE_ORDER`, those
    no folder of ``results_dirs`` holds a GPU result of (none of ``gpu``'s, when named), each while
    its estimate still fits: the longest time a GPU result of it took (its manifest's
    ``elapsed_s``), else :data:`H100_ESTIMATE_S`."""
    found: dict[str, list] = {}
    for folder in results_dirs:
        if Path(folder).is_dir():
            for name, measured in results.load(folder).items():
                found.setdefault(name, []).extend(measured)
    done = {name for name, measured in found.items()
            if any(results.is_gpu(r) and (gpu is None or r["machine"].get("gpu") == gpu) for r in measured)}
    taken, left = [], budget_s
    for name in LEASE_ORDER:
        timings = [r.get("elapsed_s") for r in found.get(name, []) if results.is_gpu(r) and r.get("elapsed_s")]
        estimate = max(timings) if timings else H100_ESTIMATE_S[name]
        if name not in done and estimate <= left:
            taken.append(name)
            left -= estimate
    return taken


def _matches(name: str) -> list[str]:
    """The experiments ``name`` stands for: one by its full name (``05_lr``), its number or its
    name's end (``03``, ``training``, ``lr``), or all pieces of a notebook by the notebook's name or
    number (``05_sweeps``, ``sweeps``, ``05``)."""
    if name in EXPERIMENTS:
        return [name]
    return [full for full, spec in EXPERIMENTS.items()
            if full.split("_", 1)[1] == name or full.split("_", 1)[0] == name
            or spec["notebook"].removesuffix(".ipynb") in (name, full.split("_", 1)[0] + "_" + name)]


def _estimate(name: str, smoke: bool, hdf5: str | None, scale: str = "full") -> float:
    if smoke:
        return SMOKE_ESTIMATE_S[name]
    if scale == "cpu":
        return CPU_ESTIMATE_S[name] if hdf5 or name != "07_kaggle" else 0.0
    if name == "07_kaggle":
        if not hdf5:
            return 0.0
        try:
            from ..data.hdf5 import inspect_hdf5
            info = inspect_hdf5(hdf5)
            images = info["num_samples"].get("train", 0) + info["num_samples"].get("val", 0)
        except Exception:  # the notebook reports a bad file itself
            return 0.0
        return images * KAGGLE_EPOCHS / KAGGLE_IMG_PER_S + 60
    return H100_ESTIMATE_S[name]


# ----------------------------------------------------------------------------- manifests

def read_manifest(folder: str | os.PathLike) -> dict | None:
    """``folder``'s manifest, or None when it is missing or damaged (truncated, not a manifest)."""
    manifest = ckpt.read_json(Path(folder) / MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parameters"), dict):
        return None
    return manifest


def portable(parameters: Mapping[str, Any], out: str | os.PathLike) -> dict[str, Any]:
    """``parameters`` with the folders inside ``out`` (:data:`LOCATIONS`) written relative to it,
    as manifests and results files keep them: a moved or copied results folder stays true."""
    out = Path(out).resolve()
    kept = dict(parameters)
    for key in LOCATIONS:
        if key in kept:
            path = Path(str(kept[key]))
            kept[key] = path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)
    return kept


def notebook_record(path: str | os.PathLike) -> dict | None:
    """What papermill recorded in an executed notebook: ``parameters`` and ``completed`` (it ran
    to its end without an error); None when there is no readable notebook at ``path``."""
    notebook = ckpt.read_json(path)
    record = (notebook or {}).get("metadata", {}).get("papermill") if isinstance(notebook, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("parameters"), dict):
        return None
    completed = bool(record.get("end_time")) and not record.get("exception")
    return {"parameters": record["parameters"], "completed": completed}


def finished_on_disk(step: Mapping[str, Any]) -> bool:
    """Whether ``step``'s folder holds a finished experiment, read from the folder itself (for a
    manifest that is damaged or gone): its executed notebook ran to the end without an error,
    and its runs are there, each with its ``summary.json`` (those its results file lists, and at
    least one)."""
    folder = Path(step["folder"])
    record = notebook_record(folder / step["notebook"])
    if record is None or not record["completed"]:
        return False
    listed = (ckpt.read_json(folder / RESULTS) or {}).get("runs") or {}
    summaries = list((folder / "runs").rglob(ckpt.SUMMARY))
    return bool(summaries) and all((folder / run / ckpt.SUMMARY).is_file() for run in listed)


def _differences(old: Mapping, new: Mapping) -> list[str]:
    """What differs between recorded and planned parameters, leaving out the folders inside OUT_DIR
    and ``resume`` (where the experiment lives and how it was started, not what it computes)."""
    keys = sorted((set(old) | set(new)) - set(LOCATIONS) - {"resume"})
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def state_of(step: Mapping[str, Any], overwrite: bool = False) -> str:
    """``new``, ``finished`` (skip), ``interrupted`` (resume) for one planned experiment.

    The parameters come from the manifest or, when it is damaged or gone, from the executed
    notebook (papermill records them), and the state from the runs themselves
    (:func:`finished_on_disk`), so a finished experiment is never taken for a stranger's folder.
    Other parameters raise :class:`ReproduceError` naming the differences, unless ``overwrite``
    (then the folder is emptied and the state is ``new``). A damaged manifest with nothing else
    to read resumes: the notebook reads its finished runs back and continues the others.
    """
    folder = Path(step["folder"])
    if not folder.is_dir() or not any(folder.iterdir()):
        return "new"
    manifest = read_manifest(folder)
    record = None if manifest else notebook_record(folder / step["notebook"])
    recorded = manifest["parameters"] if manifest else (record or {}).get("parameters")
    if recorded is None:
        if (folder / MANIFEST).exists():
            return "interrupted"
        if not overwrite:
            raise ReproduceError(f"{folder} holds files but no {MANIFEST} and no executed {step['notebook']}: "
                                 f"not made by reproduce; --overwrite replaces it, or choose another OUT_DIR")
        shutil.rmtree(folder)
        return "new"
    changes = _differences(recorded, step["parameters"])
    if changes:
        if not overwrite:
            raise ReproduceError(f"{folder} holds {step['name']} with other parameters ({'; '.join(changes)}); "
                                 f"--overwrite replaces it, or choose another OUT_DIR")
        shutil.rmtree(folder)
        return "new"
    if manifest:
        return "finished" if manifest.get("state") == "finished" else "interrupted"
    return "finished" if finished_on_disk(step) else "interrupted"


# ----------------------------------------------------------------------------- running

def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _execute(step: Mapping[str, Any], resume: bool) -> None:
    import papermill as pm

    folder = Path(step["folder"])
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    parameters = dict(step["parameters"])
    folder_of_notebooks = notebooks()
    notebook = folder_of_notebooks / step["notebook"]
    if resume and "resume" in _declared(step["notebook"]):
        parameters["resume"] = True   # 05's sweeps resume their members by themselves
    pm.execute_notebook(str(notebook), str(folder / step["notebook"]),
                        parameters=parameters, progress_bar=False, cwd=str(folder_of_notebooks.parent),
                        log_output=False)


def check_out_dir(out: Path) -> None:
    """Refuse an OUT_DIR that cannot be a folder (it, or a folder above it, is a file) before
    anything is planned into it."""
    for path in (out, *out.parents):
        if os.path.lexists(path):
            if not path.is_dir():
                raise ReproduceError(f"OUT_DIR {out}: {path} is a file, not a folder; choose another OUT_DIR")
            return


@contextmanager
def holding(out: Path) -> Iterator[None]:
    """Hold OUT_DIR's lock (``checkpoint.locked``) while one ``reproduce`` plans and runs into it:
    a second one on the same folder stops at once instead of running the same notebooks on the
    same runs. The kernel releases the lock when the process ends, however it ends."""
    stack = ExitStack()
    try:
        stack.enter_context(ckpt.locked(out))
    except ckpt.OutputError as err:
        if "in use by another" not in str(err):
            raise
        owner = _lock_owner(out)
        raise ReproduceError(f"{out} is held by another reproduce (pid {owner}); wait for it to finish, "
                             f"or choose another OUT_DIR") from None
    with stack:
        yield


def _lock_owner(out: Path) -> str:
    try:
        return (out / ckpt.LOCK).read_text().strip() or "?"
    except OSError:
        return "?"


def reproduce(out_dir: str | os.PathLike, *, smoke: bool = False, hdf5: str | None = None,
              only: Iterable[str] | None = None, overwrite: bool = False, data_root: str | None = None,
              params: Iterable[str] | None = None, scale: str = "full", command: str = "",
              results_dir: str | os.PathLike | None = None, data_note: str = "",
              test_labels: str | os.PathLike | None = None, stream=None) -> list[dict[str, Any]]:
    """Run (or skip, or resume) each planned experiment; returns one status row per experiment.

    OUT_DIR is locked for the whole command (:func:`holding`); ``command`` (the command line) is
    recorded in each manifest. Each finished experiment's small files go to ``results_dir``
    when given (``results.export``), with ``data_note`` saying which data it trained on. With
    ``test_labels`` (the hidden labels of 07's file), 07's submission is scored against them
    (``runs/score.json``), as Kaggle would."""
    stream = stream or sys.stdout
    out = Path(out_dir).resolve()
    steps = plan(out, smoke=smoke, hdf5=hdf5, only=only, data_root=data_root, params=params, scale=scale)
    for step in steps:
        step.update(command=command, results_dir=None if results_dir is None else str(results_dir),
                    data_note=data_note, test_labels=None if test_labels is None else str(test_labels))
    check_out_dir(out)
    with holding(out):
        states = {step["name"]: ("skipped" if step["skip"] else state_of(step, overwrite)) for step in steps}
        return _run_steps(steps, states, out, smoke, stream)


def _run_steps(steps: list[dict[str, Any]], states: Mapping[str, str], out: Path, smoke: bool,
               stream) -> list[dict[str, Any]]:
    total_estimate = sum(s["estimate_s"] for s in steps if states[s["name"]] in ("new", "interrupted"))
    scale = steps[0]["scale"] if steps else "full"
    if smoke:
        basis = "smoke mode on a 2-core CPU"
    elif scale == "cpu":
        basis = "an estimate for 2 idle CPU cores at CPU scale"
    else:
        basis = "an estimate for one H100 from the 2026-11-27 H100 figures"
    if not smoke and scale != "cpu" and not _has_gpu():
        basis += "; this machine has no GPU, so expect far longer"
    elif not smoke and scale != "cpu" and total_estimate > GPU_BUDGET_S:
        basis += f"; more than the {GPU_BUDGET_S // 60}-minute budget of the default chain"
    print(f"reproduce: {len(steps)} experiment(s) into {out}; about {_clock(total_estimate)} to run "
          f"({basis})", file=stream, flush=True)
    start = time.monotonic()
    spent_estimate = 0.0
    rows = []
    for index, step in enumerate(steps, 1):
        name, state = step["name"], states[step["name"]]
        began = time.monotonic()
        if state == "skipped":
            status, note = state, step["skip"]
        elif state == "finished":
            status, note = state, _keep_finished(step, out, smoke)
        else:
            status, note = _run_step(step, state, out, smoke)
            spent_estimate += step["estimate_s"]
        elapsed = time.monotonic() - start
        remaining = [s for s in steps[index:] if states[s["name"]] in ("new", "interrupted")]
        left = sum(s["estimate_s"] for s in remaining)
        if spent_estimate > 0 and elapsed > 0:
            left *= elapsed / spent_estimate   # scale the estimate by how this machine has done so far
        took = time.monotonic() - began
        print(f"[{index}/{len(steps)}] {name} ({step['parts']}): {status} in {_clock(took)}"
              f"{'; ' + note if note else ''} | elapsed {_clock(elapsed)}, about {_clock(left)} left",
              file=stream, flush=True)
        rows.append({"experiment": name, "status": status, "seconds": round(took, 1), "note": note})
    return rows


def _manifest(step: Mapping[str, Any], out: Path, smoke: bool, state: str) -> dict[str, Any]:
    return {"experiment": step["name"], "notebook": step["notebook"], "parts": step["parts"],
            "parameters": portable(step["parameters"], out), "state": state, "smoke": smoke,
            "scale": "smoke" if smoke else step.get("scale", "full"), "command": step.get("command", ""),
            "commit": results.working_commit(),
            "machine": results.this_machine(), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "estimate_s": step["estimate_s"]}


def _write_results(step: Mapping[str, Any], out: Path, smoke: bool, machine_info: Mapping) -> None:
    folder = Path(step["folder"])
    ckpt.write_json(folder / RESULTS, {"experiment": step["name"], "smoke": smoke, "machine": machine_info,
                                       "parameters": portable(step["parameters"], out), **results.collect(folder)})


def _keep_finished(step: Mapping[str, Any], out: Path, smoke: bool) -> str:
    """The note for a finished experiment. A results file that is missing or unreadable is
    gathered again from the runs, and a damaged or missing manifest (the state was read from the
    runs) written again."""
    folder = Path(step["folder"])
    manifest = read_manifest(folder)
    notes = ["finished earlier with the same parameters"]
    if not isinstance(ckpt.read_json(folder / RESULTS), dict):
        machine_info = (manifest or {}).get("machine") or results.this_machine()
        _write_results(step, out, smoke, machine_info)
        notes.append(f"{RESULTS} rebuilt from its runs")
    if manifest is None:
        manifest = {**_manifest(step, out, smoke, "finished"), "rebuilt_from_runs": True}
        ckpt.write_json(folder / MANIFEST, manifest)
        notes.append(f"{MANIFEST} rebuilt from its runs")
    scored = _score(step)
    if scored:
        notes.append(scored)
    exported = _export(step, out, manifest)
    if exported:
        notes.append(f"results in {exported}")
    return "; ".join(notes)


def _score(step: Mapping[str, Any]) -> str:
    """Score the experiment's submission.csv against the hidden test labels, when both are there."""
    submission = Path(step["folder"]) / "runs" / "submission.csv"
    if not step.get("test_labels") or not submission.is_file():
        return ""
    from .score import score

    result = score(submission, step["test_labels"])
    ckpt.write_json(submission.with_name("score.json"), {**result, "submission": "runs/submission.csv",
                                                         "labels": Path(step["test_labels"]).name})
    return f"score {result['accuracy']:.2f}% on the hidden test labels"


def _export(step: Mapping[str, Any], out: Path, manifest: Mapping[str, Any]) -> Path | None:
    """Copy a finished experiment's small files into the results folder, when there is one; the
    commit is the one recorded when the experiment started."""
    if not step.get("results_dir"):
        return None
    started = str(manifest.get("started") or "")[:10] or None
    record = results.manifest(step["name"], parts=step["parts"], parameters=portable(step["parameters"], out),
                              scale="smoke" if step["parameters"].get("smoke") else step["scale"],
                              command=step.get("command", ""), commit=manifest.get("commit"),
                              data=step.get("data_note") or _data_of(step), machine=results.as_machine(
                                  manifest.get("machine") or {}), elapsed_s=manifest.get("elapsed_s"), date=started)
    return results.export(step["folder"], record, step["results_dir"])


def _data_of(step: Mapping[str, Any]) -> str:
    """The data an experiment trained on, as its runs' configs name it (dataset and folder)."""
    found = set()
    for path in sorted(Path(step["folder"]).rglob(ckpt.SUMMARY)):
        data = ((ckpt.read_json(path) or {}).get("config") or {}).get("DATA") or {}
        if data:
            found.add(f"{data.get('DATASET')} from {Path(str(data.get('ROOT'))).name}")
    return "; ".join(sorted(found)) or "none (no training runs)"


def _run_step(step: Mapping[str, Any], state: str, out: Path, smoke: bool) -> tuple[str, str]:
    """Execute one experiment's notebook; the manifest says ``finished`` only when the notebook
    ran to its end without an error (as papermill recorded in the executed notebook)."""
    folder = Path(step["folder"])
    began = time.monotonic()
    manifest = _manifest(step, out, smoke, "running")
    manifest["attempts"] = (read_manifest(folder) or {}).get("attempts", 0) + 1
    ckpt.write_json(folder / MANIFEST, manifest)
    executed = folder / step["notebook"]
    try:
        _execute(step, resume=state == "interrupted")
        record = notebook_record(executed)
        if record is None or not record["completed"]:
            raise RuntimeError(f"{executed} does not record a run that ended without an error")
    except Exception as err:  # the executed notebook in the folder holds the traceback
        manifest.update(state="failed", error=f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}")
        ckpt.write_json(folder / MANIFEST, manifest)
        return "failed", f"see {executed}"
    _write_results(step, out, smoke, manifest["machine"])
    manifest.update(state="finished", elapsed_s=round(time.monotonic() - began, 1),
                    finished=_dt.datetime.now(_dt.timezone.utc).isoformat())
    ckpt.write_json(folder / MANIFEST, manifest)
    notes = [_score(step)]
    exported = _export(step, out, manifest)
    notes.append(f"results in {exported}" if exported else "")
    return ("resumed and finished" if state == "interrupted" else "finished"), "; ".join(n for n in notes if n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nmeplib reproduce",
        description="Run every worksheet experiment through its notebook (papermill) into OUT_DIR: executed "
                    "notebooks, metrics, figures. Finished experiments are skipped, interrupted ones resumed. "
                    f"Sized for about 15 minutes on one H100 (an estimate): 03 and 06 train {MAIN_EPOCHS} epochs, "
                    f"each 05 sweep member {SWEEP_EPOCHS}.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="results folder (made if missing)")
    p.add_argument("--smoke", action="store_true", help="the same chain in smoke mode on the CPU (digits, 1-2 epochs)")
    p.add_argument("--scale", choices=sorted(SCALES), default="full",
                   help="run lengths: full (the course's, for a GPU) or cpu (training subsets and at least 5 epochs "
                        "each: about 90 minutes on 2 CPU cores)")
    p.add_argument("--hdf5", metavar="FILE", help="MediumImageNet HDF5 file for 07_kaggle (skipped without it)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help=f"run only these experiments ({', '.join(EXPERIMENTS)}; '03' or 'sweeps' work too)")
    p.add_argument("--data-root", metavar="DIR", help="CIFAR-10 folder (default: the configs' search)")
    p.add_argument("--param", nargs="+", default=[], metavar="[EXPERIMENT.]NAME=VALUE",
                   help="change a notebook parameter, e.g. for a short CPU run: epochs=1 "
                        "03_training.alexnet_warmup_epochs=0 05_sweeps.model=lenet")
    p.add_argument("--results", metavar="DIR",
                   help=f"where each finished experiment's small files go (default: $NMEPLIB_RESULTS, else "
                        f"{results.ROOT}/; with --smoke, only when given)")
    p.add_argument("--data-note", default="", metavar="TEXT",
                   help="which data this is, for the results' manifests (default: the dataset and folder names)")
    p.add_argument("--test-labels", metavar="CSV",
                   help="the hidden test labels of the --hdf5 file (make-hdf5 --test-labels): 07's submission is "
                        "scored against them")
    p.add_argument("--lease", type=float, metavar="SECONDS",
                   help="a short GPU lease: run only the experiments without a GPU result in the results folder "
                        "that fit SECONDS, the most useful first (benchmarks/gpu_lease.sh)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace experiments whose folders hold other parameters")
    args = p.parse_args(argv)
    if args.hdf5 and not Path(args.hdf5).is_file():
        raise FileNotFoundError(f"--hdf5 {args.hdf5}: no such file")
    results_dir = args.results or (None if args.smoke else results.default_root())
    if args.lease is not None:
        if args.only:
            raise ReproduceError("--lease picks the experiments itself: leave out --only")
        gpu = results.this_machine()["gpu"]
        args.only = lease_pieces(args.lease, dict.fromkeys([results.ROOT, results_dir or results.ROOT]), gpu)
        print(f"reproduce --lease {args.lease:g}: {', '.join(args.only) or 'nothing missing fits'}", flush=True)
        if not args.only:
            return 0
    command = " ".join(["python -m nmeplib reproduce", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    rows = reproduce(args.out_dir, smoke=args.smoke, hdf5=args.hdf5, only=args.only, overwrite=args.overwrite,
                     data_root=args.data_root, params=args.param, scale=args.scale, command=command,
                     results_dir=results_dir, data_note=args.data_note, test_labels=args.test_labels)
    failed = [r["experiment"] for r in rows if r["status"] == "failed"]
    if failed:
        print(f"error: {', '.join(failed)} failed; the executed notebooks in {args.out_dir} hold the tracebacks; "
              f"run the same command again to resume", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
