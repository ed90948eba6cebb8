"""Generated datasets in the official formats, and the benchmark's plain recipe, for tests."""
from __future__ import annotations

import functools
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from nmeplib.config import Config
from nmeplib.data import build_dataset, build_loader
from nmeplib.engine import train_one_epoch, validate
from nmeplib.models import build_model_from_config
from nmeplib.optim import Schedule, build_optimizer

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline.py"

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def forbid_default_device(monkeypatch, *modules) -> None:
    """Make ``default_device`` raise in each module: a call given a device must never look it up."""
    def no_default():
        raise AssertionError("looked up the default device although a device was given")
    for module in modules:
        monkeypatch.setattr(module, "default_device", no_default)


def write_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """A small CIFAR-10 copy in the official python layout (5 train batches + test batch)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}, f)
    return folder


@functools.cache
def load_benchmark():
    """``benchmarks/pipeline.py`` as a module."""
    spec = importlib.util.spec_from_file_location("pipeline_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_accuracy(config: Config, plain: bool, workers: int = 0) -> float:
    """Validation accuracy after ``TRAIN.EPOCHS`` epochs of ``config`` on the CPU, fed either by
    the benchmark's plain per-image recipe (course jitter + flip) or by ``build_loader``.
    Model initialisation, optimizer and schedule are the same for both."""
    device = torch.device("cpu")
    train_split, val_split = build_dataset(config, "train"), build_dataset(config, "val")
    size, batch = config.DATA.IMG_SIZE, config.DATA.BATCH_SIZE
    if plain:
        bench = load_benchmark()
        train = DataLoader(bench.PlainImages(train_split, size), batch_size=batch, shuffle=True, drop_last=True,
                           num_workers=workers, generator=torch.Generator().manual_seed(config.SEED))
        val = DataLoader(bench.PlainImages(val_split, size, train=False), batch_size=batch, num_workers=workers)
    else:
        train = build_loader(config, "train", device=device, dataset=train_split)
        val = build_loader(config, "val", device=device, dataset=val_split)
    torch.manual_seed(config.SEED)
    model = build_model_from_config(config, train_split.num_classes, device)
    optimizer = build_optimizer(config, model)
    schedule = Schedule(config, optimizer, len(train))
    for epoch in range(config.TRAIN.EPOCHS):
        train_one_epoch(model, train, optimizer, device, schedule=schedule, epoch=epoch)
    return validate(model, val, device)["acc"]


# ----------------------------------------------------------------------------- fixtures that tell things apart
# Each one differs where a plausible bug would confuse two things: a history whose best epoch is
# neither the first nor the last (best ≠ final) and whose train loss is not its validation loss,
# images whose three channels differ, data whose class count differs from a model's.

# CIFAR-10's per-channel statistics in RGB order, as published (R, G, B); a loader normalising in
# BGR order would mix R and B, which differ by 0.045 in the mean.
CIFAR_RGB_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_RGB_STD = (0.2470, 0.2435, 0.2616)


def history_best_not_last() -> list[dict]:
    """Four epochs of metrics.jsonl rows: best validation accuracy at epoch 2 (71%), final 58% at
    epoch 4; train loss, validation loss and every other column differ from each other and per epoch."""
    val_acc = (40.0, 71.0, 65.0, 58.0)
    return [{"epoch": e, "lr": 1e-3 / e, "train_loss": round(2.0 / e, 4), "train_acc": 30.0 + 10 * e,
             "val_loss": round(1.5 + 0.1 * e, 4), "val_acc": acc, "train_time_s": 1.0 + e / 10, "val_time_s": 0.25,
             "train_img_per_s": 1000.0 + e, "peak_mem_mb": 100.0 + e} for e, acc in enumerate(val_acc, 1)]


def write_cifar_images(root: Path, images: np.ndarray, labels: list[int]) -> Path:
    """A CIFAR-10 copy in the official layout whose every batch (train and test) holds ``images``
    (N×3×32×32 uint8, RGB planes as the official files store them) with ``labels``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), 3072)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": list(labels), b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(len(images))]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}, f)
    return folder


def channel_images(values: list[tuple[float, float, float]]) -> np.ndarray:
    """One flat 32×32 image per ``(r, g, b)`` in [0, 1]: images whose channels differ."""
    pixels = np.rint(np.asarray(values, dtype=np.float64) * 255).astype(np.uint8)
    return np.broadcast_to(pixels[:, :, None, None], (len(values), 3, 32, 32)).copy()


def image_split(num_classes: int, per_class: int = 2, size: int = 8, name: str = "digits"):
    """An in-memory :class:`ImageSplit` of ``num_classes`` named classes (``per_class`` random images each)."""
    from nmeplib.data.build import ImageSplit

    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = torch.randint(0, 256, (len(labels), 3, size, size), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    return ImageSplit(name, "val", labels, [f"class{c}" for c in range(num_classes)], (0.5,) * 3, (0.25,) * 3,
                      images=images)


def tiny_cifar_config(root: Path, *overrides: str) -> Config:
    """LeNet on a generated CIFAR-10 of 20 training and 4 validation images (batches of 4, 2 epochs,
    W&B off): a whole ``fit`` in well under a second once torch is warm."""
    from nmeplib.config import load_config

    if not (root / "cifar-10-batches-py").is_dir():
        write_cifar(root, per_batch=4)
    return load_config(None, ["DATA.DATASET=cifar10", f"DATA.ROOT={root}", "DATA.DOWNLOAD=false",
                              "DATA.BATCH_SIZE=4", "MODEL.NAME=lenet", "TRAIN.EPOCHS=2", "WANDB.MODE=disabled",
                              f"OUTPUT={root / 'run'}", *overrides])


def write_run(config: Config, history: list[dict], steps_per_epoch: int, best_epoch: int | None = None) -> Path:
    """A run folder at ``config.OUTPUT`` as ``fit`` leaves it after ``len(history)`` epochs of
    ``history``: ``checkpoint_last.pt`` of the last epoch, ``checkpoint_best.pt`` of ``best_epoch``
    (default: the history's best) holding that epoch's history, and ``metrics.jsonl``.
    The two checkpoints hold different weights, so loading one for the other shows."""
    from nmeplib import checkpoint as ckpt

    out = Path(config.OUTPUT)
    best_epoch = best_epoch or ckpt.best_row(history)["epoch"]

    def state(epoch: int) -> dict:
        torch.manual_seed(epoch)
        model = build_model_from_config(config, 10)
        optimizer = build_optimizer(config, model)
        schedule = Schedule(config, optimizer, steps_per_epoch)
        schedule.step = epoch * steps_per_epoch
        rows = history[:epoch]
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "epoch": epoch, "best_acc": ckpt.best_row(rows)["val_acc"], "history": rows, "rng": ckpt.rng_state(),
                "config": config.to_dict(), "class_names": list(CIFAR_CLASSES), "num_classes": 10}
    out.mkdir(parents=True, exist_ok=True)
    ckpt.save_checkpoint(state(len(history)), out / ckpt.LAST)
    ckpt.save_checkpoint(state(best_epoch), out / ckpt.BEST)
    ckpt.write_jsonl(out / ckpt.METRICS, history)
    return out
