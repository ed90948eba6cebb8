"""Notebook settings: paths, smoke mode, configs from notebook parameters and the demo
MediumImageNet file.

Every notebook starts with a ``parameters`` cell (papermill sets those) and then calls
:func:`smoke_mode` and :func:`notebook_config`. Besides its named parameters
(:data:`PARAMETER_KEYS`), a notebook that trains takes ``overrides``: any other config setting,
as a dict or ``KEY=VALUE`` strings (:func:`as_overrides`), checked like ``--set``.

Smoke mode (``NMEPLIB_SMOKE=1``) swaps the real datasets for scikit-learn's bundled digits and
shrinks image sizes, epochs and sweeps, so every notebook runs in well under a minute on a laptop
CPU with no data files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..config import Config, ConfigError, load_config, overrides_from_text, parse_override
from ..errors import NmeplibError

SMOKE_ENV = "NMEPLIB_SMOKE"
NOTEBOOKS_ENV = "NMEPLIB_NOTEBOOKS"
NUMBERED_NOTEBOOK = "[0-9][0-9]_*.ipynb"  # 01_datasets.ipynb, ...
DEMO_HDF5 = "medium-imagenet-demo-{size}.hdf5"

# Notebook parameter -> config key (see notebook_config), the one map between the two: the sweeps'
# papermill runner reads it too (``execute.NOTEBOOK_PARAMETERS``). Any other key goes in ``overrides``.
PARAMETER_KEYS: dict[str, str] = {
    "model": "MODEL.NAME", "data_root": "DATA.ROOT", "epochs": "TRAIN.EPOCHS", "batch_size": "DATA.BATCH_SIZE",
    "lr": "TRAIN.LR", "img_size": "DATA.IMG_SIZE", "seed": "SEED", "output_dir": "OUTPUT",
    "wandb_mode": "WANDB.MODE", "augment": "DATA.AUGMENT", "optimizer": "TRAIN.OPTIMIZER",
    "scheduler": "TRAIN.SCHEDULER", "weight_decay": "TRAIN.WEIGHT_DECAY", "dropout": "MODEL.DROPOUT",
    "activation": "MODEL.ACTIVATION", "warmup_epochs": "TRAIN.WARMUP_EPOCHS", "num_workers": "DATA.NUM_WORKERS",
    "label_smoothing": "TRAIN.LABEL_SMOOTHING", "wandb_project": "WANDB.PROJECT", "wandb_group": "WANDB.GROUP",
    "wandb_name": "WANDB.NAME", "train_subset": "DATA.TRAIN_SUBSET",
}

# Smoke mode, all in one place. Image size per model (AlexNet needs at least 63 px, LeNet
# exactly 32; ResNet18 takes any size, and digits are 8 px originals), and the most epochs
# and the largest batch a smoke run uses.
SMOKE_IMG_SIZE = {"lenet": 32, "alexnet": 64, "resnet18": 16}
SMOKE_MAX_EPOCHS = {"lenet": 2, "alexnet": 1, "resnet18": 1}
SMOKE_MAX_BATCH = {"lenet": 64, "alexnet": 128, "resnet18": 64}
# Other notebook settings in smoke mode (see smoke_values): two members per sweep, a short
# throughput sweep, and small batches for the model comparison.
SMOKE_VALUES: dict[str, Any] = {
    "lrs": [1e-3, 1e-2],
    "batch_sizes": [64, 63],
    "augments": ["standard", "crop+flip+erase"],
    "variations": {"sgd": {"TRAIN.OPTIMIZER": "sgd", "TRAIN.LR": 0.03}, "relu": {"MODEL.ACTIVATION": "relu"}},
    "max_batch_size": 8,
    "compare_batch_size": 4,
    "timed_steps": 1,
    "warmup_steps": 1,
}


# ----------------------------------------------------------------------------- paths and modes

def smoke_mode(value: bool | str | None = None) -> bool:
    """Whether to run small: ``value`` if given, else ``$NMEPLIB_SMOKE`` ("1", "true" or "yes").

    Notebooks this one starts get the answer as their ``smoke`` parameter (a sweep's notebook
    members: ``sweep_runner(..., smoke=smoke)``).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        value = os.environ.get(SMOKE_ENV, "")
    if isinstance(value, str):
        value = value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def repo_root() -> Path:
    """The workbook's folder (the one holding ``notebooks/`` and ``nmeplib/``).

    Found from the working directory upwards, so a notebook run from ``notebooks/`` or from
    the repository root writes to the same place; else the folder of this package's
    checkout; else the working directory.
    """
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "notebooks").is_dir() and (folder / "nmeplib" / "__init__.py").is_file():
            return folder
    checkout = Path(__file__).resolve().parents[2]   # nmeplib/workbook/settings.py -> the checkout
    if (checkout / "notebooks").is_dir():
        return checkout
    return cwd


class NotebooksNotFound(NmeplibError, FileNotFoundError):
    """No folder of the numbered notebooks where :func:`notebooks_dir` looks; says how to name one."""


def notebooks_dir() -> Path:
    """The folder of the workbook's numbered notebooks: ``$NMEPLIB_NOTEBOOKS`` when set, else the
    nearest ``notebooks/`` holding them found from the working directory upwards.

    Looked up where the work happens, not next to the installed package, so an installed
    nmeplib runs the notebooks of the checkout it is used in. NotebooksNotFound otherwise.
    """
    given = os.environ.get(NOTEBOOKS_ENV, "").strip()
    if given:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise NotebooksNotFound(f"{NOTEBOOKS_ENV}={given} is not a folder; set it to the folder holding "
                                    f"01_datasets.ipynb and the other numbered notebooks")
        return folder.resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if any((folder / "notebooks").glob(NUMBERED_NOTEBOOK)):
            return folder / "notebooks"
    raise NotebooksNotFound(f"no notebooks/ folder of numbered notebooks in {cwd} or above it; run from the "
                            f"workbook's checkout or set {NOTEBOOKS_ENV} to the folder holding them")


def runs_root() -> Path:
    """Where relative ``runs/...`` folders go: ``$NMEPLIB_RUNS`` when set (the test suite sets a
    temporary one), else the checkout's ``runs/``."""
    env = os.environ.get("NMEPLIB_RUNS")
    return Path(env).expanduser() if env else repo_root() / "runs"


def output_path(path: str | os.PathLike, smoke: bool = False) -> Path:
    """An absolute output folder: ``runs/x`` is ``runs_root()/x``, other relative paths count from
    :func:`repo_root`.

    In smoke mode a relative path goes under ``smoke/`` of the runs folder (``runs/04_alexnet``
    becomes ``runs/smoke/04_alexnet``), so smoke runs never mix with, or resume, real ones.
    """
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    in_runs = path.parts[:1] == ("runs",)
    rest = Path(*path.parts[1:]) if in_runs else path
    if smoke:
        return runs_root() / "smoke" / rest
    return runs_root() / rest if in_runs else repo_root() / path


# ----------------------------------------------------------------------------- configs

def make_demo_hdf5(path: str | os.PathLike, img_size: int = 32) -> Path:
    """Write the bundled digits as a MediumImageNet-style HDF5 file and return its path.

    train/val/test are the digits splits (1,257 / 269 / 271 images); like the real file,
    the test split carries no labels. The file goes through the same code as the course
    file (``data.hdf5.write_hdf5``), so training, evaluation and ``submission.csv`` on it
    exercise the real HDF5 path. An existing file of the same image size is reused.
    """
    from ..data import digits
    from ..errors import DatasetError
    from ..data.hdf5 import inspect_hdf5, write_hdf5

    path = Path(path)
    if path.is_file():
        try:
            if inspect_hdf5(path)["img_size"] == img_size:
                return path
        except DatasetError:
            pass
    splits = {}
    for split in ("train", "val", "test"):
        images, labels = digits.load_split(split, img_size)
        splits[split] = (images.numpy(), None if split == "test" else labels.numpy())
    return write_hdf5(path, splits, class_names=list(digits.CLASS_NAMES))


def smoke_overrides(config: Config, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config changes that make ``config`` a smoke run (digits data, small sizes).

    Image size, dataset and data root are replaced (and the training subset dropped: the
    digits are few already); epochs and batch size are capped, so a
    smaller value set on purpose (``-p epochs 1``) stays. Warm-up is dropped, and W&B is off
    unless a mode was given explicitly (``given`` holds the notebook's parameters). A
    MediumImageNet config gets a small HDF5 file made from digits (:func:`make_demo_hdf5`)
    inside its output folder instead of the course file.
    """
    given = given or {}
    model = config.MODEL.NAME
    size = SMOKE_IMG_SIZE[model]
    overrides: dict[str, Any] = {
        "DATA.IMG_SIZE": size, "DATA.NUM_WORKERS": 0, "DATA.DOWNLOAD": False, "DATA.CLASS_NAMES": "",
        "DATA.BATCH_SIZE": min(config.DATA.BATCH_SIZE, SMOKE_MAX_BATCH[model]),
        "TRAIN.EPOCHS": min(config.TRAIN.EPOCHS, SMOKE_MAX_EPOCHS[model]), "TRAIN.WARMUP_EPOCHS": 0,
        "DATA.TRAIN_SUBSET": 0,
    }
    if config.DATA.DATASET == "medium_imagenet":
        demo = Path(config.OUTPUT) / "demo-data" / DEMO_HDF5.format(size=size)
        overrides["DATA.ROOT"] = str(make_demo_hdf5(demo, size))
    else:
        overrides.update({"DATA.DATASET": "digits", "DATA.ROOT": ""})
    if not given.get("wandb_mode"):
        overrides["WANDB.MODE"] = "disabled"
    return overrides


def as_overrides(overrides: Mapping[str, Any] | Iterable[str] | str | None) -> dict[str, Any]:
    """A notebook's ``overrides`` parameter as ``{KEY: value}``.

    Takes a dict (``{"DATA.AUGMENT": "none"}``), a list of ``"KEY=VALUE"`` strings (values read
    as YAML, as ``--set`` reads them), or one string holding either: papermill's ``-p`` passes
    ``'{"TRAIN.LR": 0.01}'``, ``'["TRAIN.LR=0.01"]'`` or ``'TRAIN.LR=0.01 DATA.AUGMENT=none'`` as
    text. None or empty: no overrides. Keys are checked when the config is loaded.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, str):
        return overrides_from_text(overrides)
    if isinstance(overrides, Mapping):
        return {str(key): value for key, value in overrides.items()}
    if not isinstance(overrides, Iterable) or any(not isinstance(item, str) for item in overrides):
        raise ConfigError(f"overrides must be a dict or a list of 'KEY=VALUE' strings, got {overrides!r}")
    return dict(parse_override(item) for item in overrides)


def notebook_config(name: str | os.PathLike, *, smoke: bool = False, smoke_model: str | None = None,
                    overrides: Mapping[str, Any] | Iterable[str] | str | None = None, **params: Any) -> Config:
    """The config a notebook trains: shipped config ``name``, then the notebook's parameters.

    ``params`` are notebook parameter names (``lr=1e-3, batch_size=256, output_dir=...``, see
    :data:`PARAMETER_KEYS`); None leaves the config's value. ``overrides`` are any config keys
    (old course names too), in any form :func:`as_overrides` takes; they win over ``params``
    and land in the run's config like ``--set``. ``output_dir`` is resolved by
    :func:`output_path`. With ``smoke`` the :func:`smoke_overrides` come last, and
    ``smoke_model`` (if given) replaces the model.
    """
    unknown = sorted(set(params) - set(PARAMETER_KEYS))
    if unknown:
        raise TypeError(f"notebook_config got unknown parameter(s) {', '.join(unknown)}; "
                        f"known: {', '.join(PARAMETER_KEYS)}")
    values = {PARAMETER_KEYS[k]: v for k, v in params.items() if v is not None}
    if "output_dir" in params and params["output_dir"] is not None:
        values["OUTPUT"] = str(output_path(params["output_dir"], smoke))
    values.update(as_overrides(overrides))
    if smoke and smoke_model:
        values["MODEL.NAME"] = smoke_model
    if not smoke:
        return load_config(name, values)
    # A first pass finds the model, sizes and output folder; smoke runs have no warm-up, so a
    # short smoke run (-p epochs 1) is not refused for its warm-up.
    config = load_config(name, {**values, "TRAIN.WARMUP_EPOCHS": 0})
    given = {**params, "wandb_mode": values.get("WANDB.MODE") or params.get("wandb_mode")}
    return load_config(name, {**values, **smoke_overrides(config, given)})


def smoke_values(smoke: bool, **values: Any) -> dict[str, Any]:
    """The notebook's own settings ``values``, each replaced by its small smoke value
    (:data:`SMOKE_VALUES`) when ``smoke`` is on and there is one."""
    return {k: (SMOKE_VALUES[k] if smoke and k in SMOKE_VALUES else v) for k, v in values.items()}


HYPERPARAMETERS = ("MODEL.NAME", "DATA.DATASET", "DATA.IMG_SIZE", "DATA.BATCH_SIZE", "DATA.AUGMENT",
                   "TRAIN.EPOCHS", "TRAIN.WARMUP_EPOCHS", "TRAIN.LR", "TRAIN.OPTIMIZER", "TRAIN.SCHEDULER",
                   "TRAIN.WEIGHT_DECAY", "TRAIN.LABEL_SMOOTHING", "MODEL.ACTIVATION", "MODEL.DROPOUT", "SEED")


def hyperparameters(configs: Config | Mapping[str, Config]) -> list[dict]:
    """A table (rows of ``key`` and one column per run) of the settings that shape training."""
    named = {"value": configs} if isinstance(configs, Config) else dict(configs)
    return [{"key": key, **{name: config.get_path(key) for name, config in named.items()}}
            for key in HYPERPARAMETERS]
