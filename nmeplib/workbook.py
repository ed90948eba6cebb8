"""Helpers for the workbook's notebooks: paths, smoke mode, configs from notebook parameters,
the demo MediumImageNet file, and the small dataset and results views the notebooks show.

Every notebook starts with a ``parameters`` cell (papermill sets those) and then calls
:func:`smoke_mode` and :func:`notebook_config`. Smoke mode (``NMEPLIB_SMOKE=1``) swaps the
real datasets for scikit-learn's bundled digits and shrinks image sizes, epochs and sweeps,
so every notebook runs in well under a minute on a laptop CPU with no data files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .config import Config, load_config

SMOKE_ENV = "NMEPLIB_SMOKE"
DEMO_HDF5 = "medium-imagenet-demo-{size}.hdf5"

# Notebook parameter -> config key (see notebook_config).
PARAMETER_KEYS: dict[str, str] = {
    "model": "MODEL.NAME", "data_root": "DATA.ROOT", "epochs": "TRAIN.EPOCHS", "batch_size": "DATA.BATCH_SIZE",
    "lr": "TRAIN.LR", "img_size": "DATA.IMG_SIZE", "seed": "SEED", "output_dir": "OUTPUT",
    "wandb_mode": "WANDB.MODE", "augment": "DATA.AUGMENT", "optimizer": "TRAIN.OPTIMIZER",
    "scheduler": "TRAIN.SCHEDULER", "weight_decay": "TRAIN.WEIGHT_DECAY", "dropout": "MODEL.DROPOUT",
    "activation": "MODEL.ACTIVATION", "warmup_epochs": "TRAIN.WARMUP_EPOCHS", "num_workers": "DATA.NUM_WORKERS",
    "label_smoothing": "TRAIN.LABEL_SMOOTHING", "wandb_project": "WANDB.PROJECT", "wandb_group": "WANDB.GROUP",
    "wandb_name": "WANDB.NAME",
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

    The answer is written back to ``$NMEPLIB_SMOKE`` in this process, so notebooks it starts
    (a sweep's papermill members) run in the same mode.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        value = os.environ.get(SMOKE_ENV, "")
    if isinstance(value, str):
        value = value.strip().lower() in ("1", "true", "yes", "on")
    smoke = bool(value)
    os.environ[SMOKE_ENV] = "1" if smoke else "0"
    return smoke


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
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "notebooks").is_dir():
        return checkout
    return cwd


def output_path(path: str | os.PathLike, smoke: bool = False) -> Path:
    """An absolute output folder: relative paths count from :func:`repo_root`.

    In smoke mode a relative path goes under ``runs/smoke/`` (``runs/04_alexnet`` becomes
    ``runs/smoke/04_alexnet``), so smoke runs never mix with, or resume, real ones.
    """
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    if smoke:
        parts = path.parts[1:] if path.parts[:1] == ("runs",) else path.parts
        return repo_root() / "runs" / "smoke" / Path(*parts)
    return repo_root() / path


# ----------------------------------------------------------------------------- configs

def make_demo_hdf5(path: str | os.PathLike, img_size: int = 32) -> Path:
    """Write the bundled digits as a MediumImageNet-style HDF5 file and return its path.

    train/val/test are the digits splits (1,257 / 269 / 271 images); like the real file,
    the test split carries no labels. The file goes through the same code as the course
    file (``data.hdf5.write_hdf5``), so training, evaluation and ``submission.csv`` on it
    exercise the real HDF5 path. An existing file of the same image size is reused.
    """
    from .data import digits
    from .data.common import DatasetError
    from .data.hdf5 import inspect_hdf5, write_hdf5

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

    Image size, dataset and data root are replaced; epochs and batch size are capped, so a
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
    }
    if config.DATA.DATASET == "medium_imagenet":
        demo = Path(config.OUTPUT) / "demo-data" / DEMO_HDF5.format(size=size)
        overrides["DATA.ROOT"] = str(make_demo_hdf5(demo, size))
    else:
        overrides.update({"DATA.DATASET": "digits", "DATA.ROOT": ""})
    if not given.get("wandb_mode"):
        overrides["WANDB.MODE"] = "disabled"
    return overrides


def notebook_config(name: str | os.PathLike, *, smoke: bool = False, smoke_model: str | None = None,
                    overrides: Mapping[str, Any] | None = None, **params: Any) -> Config:
    """The config a notebook trains: shipped config ``name``, then the notebook's parameters.

    ``params`` are notebook parameter names (``lr=1e-3, batch_size=256, output_dir=...``, see
    :data:`PARAMETER_KEYS`); None leaves the config's value. ``overrides`` are further
    config keys. ``output_dir`` is resolved by :func:`output_path`. With ``smoke`` the
    :func:`smoke_overrides` come last, and ``smoke_model`` (if given) replaces the model.
    """
    unknown = sorted(set(params) - set(PARAMETER_KEYS))
    if unknown:
        raise TypeError(f"notebook_config got unknown parameter(s) {', '.join(unknown)}; "
                        f"known: {', '.join(PARAMETER_KEYS)}")
    values = {PARAMETER_KEYS[k]: v for k, v in params.items() if v is not None}
    if "output_dir" in params and params["output_dir"] is not None:
        values["OUTPUT"] = str(output_path(params["output_dir"], smoke))
    values.update(overrides or {})
    if smoke and smoke_model:
        values["MODEL.NAME"] = smoke_model
    if not smoke:
        return load_config(name, values)
    # A first pass finds the model, sizes and output folder; smoke runs have no warm-up, so a
    # short smoke run (-p epochs 1) is not refused for its warm-up.
    config = load_config(name, {**values, "TRAIN.WARMUP_EPOCHS": 0})
    return load_config(name, {**values, **smoke_overrides(config, params)})


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


# ----------------------------------------------------------------------------- runs

def read_summary(folder: str | os.PathLike) -> dict | None:
    """A run folder's ``summary.json`` (written by ``fit`` at the end), or None if there is none."""
    try:
        return json.loads((Path(folder) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def run_row(name: str, history: Sequence[Mapping[str, Any]]) -> dict:
    """One results row for a finished run: final and best val accuracy, epochs and time."""
    best = max(history, key=lambda r: r["val_acc"])
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
    from .tracking import read_metrics

    out = []
    for row in rows:
        metrics = read_metrics(row["output"]) if (Path(row["output"]) / "metrics.jsonl").is_file() else []
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
    from .plots import image_grid
    from .submission import predict

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


# ----------------------------------------------------------------------------- dataset views

def split_sizes(splits: Mapping[str, Any]) -> list[dict]:
    """Rows describing each ``ImageSplit`` of ``{name: split}``: images, labels, size, classes."""
    rows = []
    for name, split in splits.items():
        image = split.get([0])[0] if len(split) else None
        labelled = int((split.labels >= 0).sum())
        rows.append({"split": name, "images": len(split), "labelled": labelled,
                     "image_shape": "x".join(map(str, image.shape[1:])) if image is not None else "",
                     "classes": split.num_classes})
    return rows


def read_images(split, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """uint8 images ``start:stop`` of an ``ImageSplit``, read as one slice (fast for HDF5)."""
    stop = len(split) if stop is None else min(stop, len(split))
    if split.images is not None:
        return split.images[start:stop]
    import h5py

    with h5py.File(split.path, "r") as f:
        return torch.from_numpy(f[f"images-{split.split}"][start:stop])


def channel_stats(split, max_images: int | None = None,
                  chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel pixel mean and std (on the 0-1 scale) of a split, from its first
    ``max_images`` images (all if None). MediumImageNet's training images are stored in random
    order, so its first images are a fair sample."""
    n = len(split) if max_images is None else min(max_images, len(split))
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for start in range(0, n, chunk):
        x = read_images(split, start, min(start + chunk, n)).double() / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        pixels += x.numel() // 3
    mean = total / max(pixels, 1)
    std = (squares / max(pixels, 1) - mean * mean).clamp(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def stats_table(split, max_images: int | None = None) -> list[dict]:
    """Per-channel mean/std computed from the data next to the constants the loaders use."""
    mean, std = channel_stats(split, max_images)
    return [{"channel": channel, "mean (data)": m, "mean (used)": split.mean[i],
             "std (data)": s, "std (used)": split.std[i]}
            for i, (channel, m, s) in enumerate(zip("RGB", mean, std))]


def class_counts(split) -> list[int]:
    """Images per class of a labelled split, in class-index order."""
    labels = split.labels[split.labels >= 0]
    return torch.bincount(labels, minlength=split.num_classes).tolist()


def examples_per_class(split, per_class: int = 1, max_classes: int | None = None, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` random images of each class (of the first ``max_classes``
    classes), class by class; random images if the split has no labels."""
    gen = torch.Generator().manual_seed(seed)
    classes = range(split.num_classes if max_classes is None else min(max_classes, split.num_classes))
    if not bool((split.labels >= 0).any()):
        return torch.randperm(len(split), generator=gen)[:per_class * len(classes)]
    picks = []
    for c in classes:
        members = torch.nonzero(split.labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(picks)


def example_grid(split, per_class: int = 1, max_classes: int | None = 20, seed: int = 0, ncols: int = 10,
                 path: str | os.PathLike | None = None, title: str | None = None):
    """A labelled grid of example images, ``per_class`` per class (test splits: hidden labels)."""
    from .plots import image_grid

    indices = examples_per_class(split, per_class, max_classes, seed)
    images, labels = split.get(indices)
    names = list(split.class_names)
    if bool((labels < 0).any()):
        names = names + ["(hidden)"]
        labels = torch.where(labels < 0, len(names) - 1, labels)
    return image_grid(images, labels, names, ncols=ncols, path=path, title=title)


def plot_class_counts(split, path: str | os.PathLike | None = None, title: str | None = None):
    """A bar chart of images per class (class names on the axis when there are few)."""
    from .plots import plt

    counts = class_counts(split)
    fig, ax = plt.subplots(figsize=(min(12, 3 + 0.35 * len(counts)), 3.5), layout="constrained")
    ax.bar(range(len(counts)), counts)
    if len(counts) <= 30:
        ax.set_xticks(range(len(counts)), split.class_names, rotation=45, ha="right")
    else:
        ax.set_xlabel("class index")
    ax.set_ylabel("images")
    ax.set_title(title or f"{split.name} {split.split}: {sum(counts):,} images, "
                          f"{min(counts):,}-{max(counts):,} per class")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def augment_examples(split, index: int, spec: str, img_size: int, n: int = 5, seed: int = 0) -> torch.Tensor:
    """One image as the model sees it without augmentation, then ``n`` draws of the training
    transforms ``spec`` (``data.augment.Augment``), undone from normalisation for display:
    float ``(n+1)x3xSxS`` in [0, 1]."""
    from .data.augment import Augment

    image = split.get([index])[0]
    mean = torch.tensor(split.mean).view(1, 3, 1, 1)
    std = torch.tensor(split.std).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    plain = Augment(spec, split.mean, split.std, img_size, train=False)(image)
    train = Augment(spec, split.mean, split.std, img_size, train=True)
    drawn = train(image.expand(n, -1, -1, -1).contiguous(), gen)
    return (torch.cat([plain, drawn]) * std + mean).clamp(0, 1)


def plot_augment(split, index: int, spec: str, img_size: int, n: int = 5, seed: int = 0,
                 path: str | os.PathLike | None = None):
    """The image before (resized, normalised and back) and after ``n`` draws of ``spec``."""
    from .plots import image_grid

    images = augment_examples(split, index, spec, img_size, n, seed)
    label = int(split.labels[index])
    truth = split.class_names[label] if label >= 0 else "(hidden)"
    names = ["before"] + [f"{spec} #{i}" for i in range(1, n + 1)]
    return image_grid(images, list(range(n + 1)), names, ncols=n + 1, path=path,
                      title=f"{split.name} {split.split}[{index}] ({truth}) at {img_size} px: before and after "
                            f"the training transforms")


def image_explorer(splits: Mapping[str, Any], size: float = 3.0):
    """An ipywidgets explorer over ``{name: ImageSplit}``: pick a split and a class, slide the
    index, see the image and its label. Returns None when ipywidgets is not installed (the
    notebooks then show static grids only)."""
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        return None
    from .plots import plt

    split_box = widgets.Dropdown(options=list(splits), description="split")
    class_box = widgets.Dropdown(description="class")
    index = widgets.IntSlider(description="index", min=0, max=0, continuous_update=False)
    out = widgets.Output()

    def members() -> torch.Tensor:
        split = splits[split_box.value]
        if class_box.value is None or class_box.value < 0:
            return torch.arange(len(split))
        return torch.nonzero(split.labels == class_box.value).flatten()

    def draw(*_) -> None:
        split, chosen = splits[split_box.value], members()
        index.max = max(len(chosen) - 1, 0)
        with out:
            out.clear_output(wait=True)
            if not len(chosen):
                print("no images")
                return
            i = int(chosen[min(index.value, len(chosen) - 1)])
            image, label = split.get([i])
            fig, ax = plt.subplots(figsize=(size, size))
            ax.imshow(image[0].permute(1, 2, 0).numpy())
            ax.axis("off")
            name = split.class_names[int(label)] if int(label) >= 0 else "(label hidden)"
            ax.set_title(f"{split_box.value} #{i}: {name} ({int(label)})", fontsize=9)
            display(fig)
            plt.close(fig)

    def classes(*_) -> None:
        split = splits[split_box.value]
        labelled = bool((split.labels >= 0).any())
        options = [("all", -1)] + ([(f"{c}: {n}", c) for c, n in enumerate(split.class_names)] if labelled else [])
        class_box.unobserve(draw, "value")
        class_box.options, class_box.value = options, -1
        class_box.observe(draw, "value")
        index.value = 0
        draw()

    split_box.observe(classes, "value")
    class_box.observe(draw, "value")
    index.observe(draw, "value")
    classes()
    return widgets.VBox([widgets.HBox([split_box, class_box]), index, out])


# ----------------------------------------------------------------------------- models

def model_table(names: Sequence[str], img_sizes: Mapping[str, int], num_classes: int = 10) -> tuple[list[dict], dict]:
    """Side-by-side totals for models ``names`` at their image sizes, and each one's
    ``model_summary`` rows (``{name: rows}``) for the per-layer tables."""
    from .models import build_model, count_parameters, model_summary

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
    from .plots import plt

    from .runtime import default_device

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
    from .runtime import default_device

    device = device or default_device()
    if device.type == "cuda":
        return f"CUDA peak memory allocated by tensors on {torch.cuda.get_device_name(device)}"
    return ("CPU: process peak RSS (resident memory of the whole Python process so far, which never "
            "goes down), not the model's own memory")

