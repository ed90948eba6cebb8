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
