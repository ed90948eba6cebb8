"""The input pipeline benchmark: training images/s through the plain per-image recipe, nmeplib's
loaders, and the compute-only ceiling (the batch-size sweep is ``python -m nmeplib throughput``).

    python benchmarks/pipeline.py --cifar /data/cifar10          # CPU: about 3 minutes
    python benchmarks/pipeline.py --cifar /data/cifar10 --full   # GPU: whole epochs, time to 94%
    python benchmarks/pipeline.py --smoke                        # the --full path on tiny sizes (CPU, CI)

Columns, in images per second (same machine, data, batch size, model and optimizer step):
  plain    torchvision per-image transforms in a ``Dataset``, ``DataLoader(num_workers=2)``
  ours     ``build_loader`` batches trained with the engine's ``run_epoch``
  ceiling  the same training step on one fixed batch already on the device
The HDF5 row times loaders alone: augmented, normalised batches delivered on the device.
Prints a progress line per measurement, then one table, and writes it as JSON (``--out``).
See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from nmeplib.config import Config, load_config
from nmeplib.data import ImageSplit, build_dataset, build_loader
from nmeplib.data import cifar
from nmeplib.data.build import IMAGENET_MEAN, IMAGENET_STD
from nmeplib.data.hdf5 import images_key, labels_key, write_hdf5
from nmeplib.engine import fit, run_epoch
from nmeplib.models import build_model_from_config
from nmeplib.optim import build_optimizer
from nmeplib.runtime import default_device, worker_count, synchronize

MODELS = {"lenet": 32, "alexnet": 70, "resnet18": 32}   # model -> the image size it trains at
HDF5_SIZE = 96
KAGGLE_TRAIN_IMAGES = 1_500_000   # MediumImageNet's training split
TRAIN_COLUMNS = ("plain", "ours", "ceiling", "ours/plain", "ours/ceiling")
LOADER_COLUMNS = ("plain", "ours", "ours/plain")
# Targets: (row kind, model) -> minimum ratios.
TARGETS = {("epoch", "lenet"): {"ours/plain": 3.0, "ours/ceiling": 0.85},
           ("steps", "alexnet"): {"ours/ceiling": 0.95}, ("epoch", "alexnet"): {"ours/ceiling": 0.95},
           ("steps", "resnet18"): {"ours/ceiling": 0.95}, ("epoch", "resnet18"): {"ours/ceiling": 0.95},
           ("loader", "hdf5"): {"ours/plain": 10.0}, ("loader", "hdf5 shipped"): {"ours/plain": 10.0},
           ("epoch", "resnet18 hdf5"): {"ours/ceiling": 0.95}}


_START = time.perf_counter()


def say(message: str) -> None:
    """A progress line with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _START:5.0f} s] {message}", flush=True)


class Take:
    """The next batches of a running stream, on ``device``: a sized iterable for ``run_epoch``.

    Yields ``n`` batches, and more until ``min_seconds`` have passed since the first one.
    Successive passes continue the same stream, so warm-up batches are never timed.
    """

    def __init__(self, stream: Iterator, n: int, device: torch.device, min_seconds: float = 0.0) -> None:
        self.stream, self.n, self.device, self.min_seconds = stream, n, device, min_seconds

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        start, taken = time.perf_counter(), 0
        while taken < self.n or time.perf_counter() - start < self.min_seconds:
            batch = next(self.stream, None)
            if batch is None:
                return
            taken += 1
            yield batch[0].to(self.device), batch[1].to(self.device)


def endless(loader: Iterable) -> Iterator:
    """``loader``'s batches epoch after epoch."""
    for epoch in itertools.count():
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader


class PlainImages(Dataset):
    """The course's former pipeline: one PIL image at a time through torchvision transforms."""

    def __init__(self, split: ImageSplit, img_size: int, train: bool = True) -> None:
        self.images = np.ascontiguousarray(split.images.permute(0, 2, 3, 1).numpy())  # N x H x W x 3
        self.labels = split.labels.tolist()
        resize = [T.Resize(img_size)] if img_size != self.images.shape[1] else []
        augment = [T.ColorJitter(0.4, 0.4, 0.4), T.RandomHorizontalFlip()] if train else []
        self.transform = T.Compose([*resize, *augment, T.ToTensor(), T.Normalize(split.mean, split.std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class PlainHDF5(Dataset):
    """One image per ``__getitem__`` read from the file, cropped and flipped as a float tensor."""

    def __init__(self, path: str, img_size: int) -> None:
        self.path, self.file = path, None
        with h5py.File(path, "r") as f:
            self.n = len(f[labels_key("train")])
        self.transform = T.Compose([T.RandomCrop(img_size, padding=img_size // 8, padding_mode="reflect"),
                                    T.RandomHorizontalFlip(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.file is None:  # opened in each worker
            self.file = h5py.File(self.path, "r")
        image = torch.from_numpy(self.file[images_key("train")][i]).float().div(255)
        return self.transform(image), int(self.file[labels_key("train")][i])


def plain_loader(dataset: Dataset, args: argparse.Namespace, persistent: bool = False, *,
                 batch_size: int | None = None, workers: int | None = None) -> DataLoader:
    """The plain recipe's loader (``--batch-size`` and ``--workers`` unless given). ``persistent``
    keeps its workers up between epochs, as ours do: the HDF5 rows time several short epochs,
    the CIFAR rows less than one."""
    workers = args.workers if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size or args.batch_size, shuffle=True, num_workers=workers,
                      drop_last=True, persistent_workers=persistent and workers > 0)


def train_rate(model: torch.nn.Module, initial: dict, config: Config, device: torch.device,
               warm: Take, timed: Take) -> float:
    """img/s of ``timed`` after ``warm``, from the initial weights with a fresh optimizer."""
    model.load_state_dict(initial)
    optimizer = build_optimizer(config, model)
    run_epoch(model, warm, device, optimizer=optimizer)
    return run_epoch(model, timed, device, optimizer=optimizer)["img_per_s"]


def loader_rate(loader: Iterable, args: argparse.Namespace, device: torch.device) -> float:
    """img/s of batches delivered on ``device`` after ``args.warmup`` untimed ones."""
    stream = endless(loader)
    for _ in Take(stream, args.warmup, device):
        pass
    synchronize(device)
    start, n = time.perf_counter(), 0
    for _, y in Take(stream, args.hdf5_steps, device, args.min_seconds):
        n += len(y)
    synchronize(device)
    elapsed = time.perf_counter() - start
    stream.close()
    return n / elapsed


def model_config(model: str, args: argparse.Namespace) -> Config:
    """The shipped ``<model>_base`` config with the course's jitter + flip and the run's batch size."""
    return load_config(f"{model}_base", [f"DATA.BATCH_SIZE={args.batch_size}", "DATA.AUGMENT=course",
                                         f"DATA.NUM_WORKERS={args.workers}", "DATA.DOWNLOAD=false",
                                         f"DATA.ROOT={args.cifar}"])


def cifar_train(args: argparse.Namespace) -> tuple[ImageSplit, str]:
    """CIFAR-10's training split from ``--cifar``, else random images of its shape; and a description."""
    if args.cifar:
        return build_dataset(model_config("lenet", args), "train"), f"CIFAR-10 from {args.cifar}"
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.images,), generator=gen)
    names = [f"class_{i}" for i in range(10)]
    split = ImageSplit("cifar10", "train", labels, names, cifar.MEAN, cifar.STD, images=images)
    return split, f"GENERATED random CIFAR-shaped data ({args.images} images; no --cifar given)"


def ratios(row: dict) -> dict:
    """Add the row's ratios and, where the goals name one, its target and whether it was met."""
    say(f"{row['row']}: " + ", ".join(f"{k} {row[k]:,.0f}" for k in ("plain", "ours", "ceiling") if k in row)
        + " img/s")
    if "plain" in row:
        row["ours/plain"] = row["ours"] / row["plain"]
    if "ceiling" in row:
        row["ours/ceiling"] = row["ours"] / row["ceiling"]
    target = TARGETS.get((row["kind"], row["model"]))
    if target:
        row["target"] = ", ".join(f"{k} >= {v:g}" for k, v in target.items())
        row["met"] = all(row[k] >= v for k, v in target.items())
    return row


def best_of(repeats: int, columns: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The highest of ``repeats`` measurements per column, the columns taking turns."""
    rates: dict[str, float] = {}
    for _ in range(repeats):
        for name, measure in columns.items():
            rates[name] = max(rates.get(name, 0.0), measure())
    return rates


def train_columns(config: Config, ours: Iterable, plain: Iterable | None, num_classes: int, whole_epoch: bool,
                  args: argparse.Namespace, device: torch.device) -> tuple[dict[str, float], int]:
    """(img/s of ``plain`` (if given), ``ours`` and the ceiling, timed steps) for ``config``'s model."""
    net = build_model_from_config(config, num_classes, device)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    ready = itertools.repeat(next(iter(ours)))   # the ceiling's fixed batch
    steps, min_s = (len(ours), 0.0) if whole_epoch else (args.steps, args.min_seconds)

    def column(loader: Iterable | None) -> float:
        if loader is None:   # the ceiling
            stream, warm = ready, Take(ready, args.warmup, device)
        elif whole_epoch:    # warm the model on the fixed batch; time a fresh epoch, start-up included
            stream, warm = iter(loader), Take(ready, args.warmup, device)
        else:
            stream = endless(loader)
            warm = Take(stream, args.warmup, device)
        rate = train_rate(net, initial, config, device, warm, Take(stream, steps, device, min_s))
        if hasattr(stream, "close"):
            stream.close()   # stops the plain loader's workers
        return rate

    columns = {"plain": lambda: column(plain)} if plain is not None else {}
    columns.update(ours=lambda: column(ours), ceiling=lambda: column(None))
    return best_of(args.repeats, columns), steps


def model_row(model: str, split: ImageSplit, whole_epoch: bool, args: argparse.Namespace,
              device: torch.device) -> dict:
    """plain / ours / ceiling training img/s for ``model``: ``--steps`` batches or one whole epoch."""
    say(f"{model}: timing plain, ours and ceiling, best of {args.repeats}")
    config = model_config(model, args)
    ours = build_loader(config, "train", device=device, dataset=split)
    plain = plain_loader(PlainImages(split, MODELS[model]), args)
    rates, steps = train_columns(config, ours, plain, split.num_classes, whole_epoch, args, device)
    what = "1 epoch" if whole_epoch else "steps"
    return ratios({"row": f"{model} {MODELS[model]}px, {what}", "kind": "epoch" if whole_epoch else "steps",
                   "model": model, "steps": steps, **rates})


def random_hdf5(path: Path, train: int, others: int, *, classes: int, seed: int) -> Path:
    """A MediumImageNet-schema file of random 96 px images: ``train`` training images,
    ``others`` each in val and test (test unlabelled)."""
    rng = np.random.default_rng(seed)

    def part(k: int):
        return rng.integers(0, 256, (k, 3, HDF5_SIZE, HDF5_SIZE), dtype=np.uint8), rng.integers(0, classes, k)

    return write_hdf5(path, {"train": part(train), "val": part(others), "test": (part(others)[0], None)},
                      class_names=[f"class_{i:03d}" for i in range(classes)])


def kaggle_row(args: argparse.Namespace, device: torch.device, folder: Path) -> dict:
    """ResNet18 trained at 96 px for one whole epoch of a generated MediumImageNet-schema file
    (``--kaggle-images``, 200 classes) read by ``build_loader`` with ``resnet18_medium_imagenet``'s
    own settings (workers fitted to the machine), against the same step on one batch on the device.
    Adds the projected time of one epoch of the real 1.5M-image file and the read rate it needs."""
    say(f"kaggle: writing {args.kaggle_images} images of {HDF5_SIZE} px, then one epoch of ResNet18")
    path = random_hdf5(folder / "kaggle.hdf5", args.kaggle_images, 256, classes=200, seed=1)
    config = load_config("resnet18_medium_imagenet", [f"DATA.ROOT={path}", "WANDB.MODE=disabled",
                                                      *(["DATA.BATCH_SIZE=8"] if args.smoke else [])])
    ours = build_loader(config, "train", device=device)
    rates, steps = train_columns(config, ours, None, 200, True, args, device)
    ours.close()
    row = ratios({"row": f"resnet18 {HDF5_SIZE}px hdf5, 1 epoch", "kind": "epoch", "model": "resnet18 hdf5",
                  "steps": steps, "images": args.kaggle_images, "batch_size": config.DATA.BATCH_SIZE,
                  "workers": ours.num_workers, **rates})
    row["real_epoch_s"] = KAGGLE_TRAIN_IMAGES / row["ours"]
    row["read_mb_per_s"] = row["ours"] * 3 * HDF5_SIZE ** 2 / 2**20
    say(f"  one epoch of the real file ({KAGGLE_TRAIN_IMAGES:,} images): {row['real_epoch_s'] / 60:.1f} min, "
        f"reading {row['read_mb_per_s']:,.0f} MB/s")
    return row


def hdf5_rows(args: argparse.Namespace, device: torch.device, folder: Path) -> list[dict]:
    """Loader img/s at 96 px with crop + flip: one read per image vs nmeplib's block reader.

    The second row reads in the training process (``DATA.NUM_WORKERS=0``), which saves passing
    every batch between processes; the first uses as many workers as ``plain``. The third takes
    ``resnet18_medium_imagenet`` as shipped (batch 256, ``standard`` augmentation, 8 workers fitted
    to the machine: on 2 cores it reads in-process) against the plain reader at the same batch size
    with ``--workers``.
    """
    say(f"hdf5: writing {args.hdf5_images} images of {HDF5_SIZE} px, then timing the loaders")
    path = random_hdf5(folder / "bench.hdf5", args.hdf5_images, args.batch_size, classes=10, seed=0)

    def ours(workers: int) -> float:
        config = load_config("resnet18_medium_imagenet", [f"DATA.ROOT={path}", f"DATA.BATCH_SIZE={args.batch_size}",
                                                          f"DATA.NUM_WORKERS={workers}", "DATA.AUGMENT=crop+flip"])
        return loader_rate(build_loader(config, "train", device=device), args, device)

    small = args.hdf5_images < 2 * 256   # a test's tiny file: the shipped batch would not fit
    shipped = load_config("resnet18_medium_imagenet",
                          [f"DATA.ROOT={path}", *([f"DATA.BATCH_SIZE={args.batch_size}"] if small else [])])
    batch, workers = shipped.DATA.BATCH_SIZE, worker_count(shipped.DATA.NUM_WORKERS)

    def plain(**sizes) -> float:
        return loader_rate(plain_loader(PlainHDF5(str(path), HDF5_SIZE), args, persistent=True, **sizes), args,
                           device)

    rates = best_of(args.repeats, {
        "plain": plain, "ours": lambda: ours(args.workers), "in_process": lambda: ours(0),
        "plain_shipped": lambda: plain(batch_size=batch),
        "shipped": lambda: loader_rate(build_loader(shipped, "train", device=device), args, device)})
    name = f"hdf5 {HDF5_SIZE}px crop+flip"
    rows = {f"{name}, {args.workers} workers": ("hdf5", "plain", "ours"),
            f"{name}, ours in-process": ("hdf5 in-process", "plain", "in_process"),
            f"hdf5 {HDF5_SIZE}px shipped, batch {batch}, {workers} wk": ("hdf5 shipped", "plain_shipped", "shipped")}
    return [ratios({"row": row, "kind": "loader", "model": model, "steps": args.hdf5_steps,
                    "plain": rates[plain_key], "ours": rates[ours_key]})
            for row, (model, plain_key, ours_key) in rows.items()]


class _Reached(Exception):
    """Raised from a fit callback to stop once the target accuracy is reached."""


def time_to_accuracy(args: argparse.Namespace, folder: Path) -> dict:
    """Wall time for ``fit`` (ResNet18 on real CIFAR-10) to reach ``--target-acc`` validation accuracy."""
    data = [f"DATA.ROOT={args.cifar}", "DATA.DOWNLOAD=false"] if args.cifar else []   # smoke: digits
    overrides = [*data, f"OUTPUT={folder / 'fit'}", "WANDB.MODE=disabled",
                 *([f"TRAIN.EPOCHS={args.acc_epochs}"] if args.acc_epochs else []), *args.acc_set]
    config = load_config("resnet18_base" if args.cifar else "digits_lenet", overrides)
    say(f"time to {args.target_acc:g}%: {config.MODEL.NAME} on {config.DATA.DATASET}, at most {config.TRAIN.EPOCHS} "
        f"epochs")
    history: list[dict] = []
    start = time.perf_counter()

    def check(row: dict) -> None:
        history.append({**row, "wall_s": time.perf_counter() - start})
        say(f"  epoch {row['epoch']}: val acc {row['val_acc']:.2f}%, {history[-1]['wall_s']:.1f} s")
        if row["val_acc"] >= args.target_acc:
            raise _Reached

    try:
        fit(config, callbacks=[check])
    except _Reached:
        pass
    last = history[-1]
    return {"model": config.MODEL.NAME, "dataset": config.DATA.DATASET, "seed": config.SEED,
            "target_acc": args.target_acc, "reached": last["val_acc"] >= args.target_acc,
            "epochs": last["epoch"], "epoch_cap": config.TRAIN.EPOCHS, "wall_s": last["wall_s"],
            "best_val_acc": max(r["val_acc"] for r in history),
            "train_img_per_s": sum(r["train_img_per_s"] for r in history) / len(history)}


def _cell(row: dict, col: str) -> str:
    value = row.get(col)
    if value is None:
        return "-"
    if col == "ours/ceiling":
        return f"{100 * value:.0f}%"
    return f"{value:.1f}x" if "/" in col else f"{value:,.0f}"


def _load(values: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in values)


def table(result: dict) -> str:
    """The printed table: a header naming machine, load and data, then one line per row."""
    m = result["meta"]
    timed = (f"steps rows time >= {m['steps']} batches and >= {m['min_seconds']:g} s per column" if m["steps"]
             else "model rows time whole epochs")
    lines = [f"Training throughput, img/s: {m['device']} ({m['threads']} threads, {m['cpus']} CPUs), "
             f"load average (1/5/15 min) {_load(m['load_avg'])} at start, {_load(m['load_avg_after'])} at end, "
             f"torch {m['torch']}",
             f"data: {m['data']}",
             f"batch {m['batch_size']} in every column, {m['warmup']} warm-up batches untimed, "
             f"loader workers {m['workers']}; {timed}; best of {m['repeats']} turns",
             "augmentation: jitter+flip on the CIFAR rows (+ resize for AlexNet), crop+flip on the HDF5 rows", ""]
    head = f"{'row':38} {'plain':>8} {'ours':>8} {'ceiling':>8} {'ours/plain':>10} {'ours/ceil':>9}  target"
    lines += [head, "-" * len(head)]
    for row in result["rows"]:
        target = f"{row['target']}: {'met' if row['met'] else 'MISSED'}" if "target" in row else ""
        lines.append(f"{row['row']:38} {_cell(row, 'plain'):>8} {_cell(row, 'ours'):>8} {_cell(row, 'ceiling'):>8} "
                     f"{_cell(row, 'ours/plain'):>10} {_cell(row, 'ours/ceiling'):>9}  {target}")
    for row in result["rows"]:
        if "real_epoch_s" in row:
            lines += ["", f"{row['row']}: {row['images']:,} generated images, batch {row['batch_size']}, "
                          f"{row['workers']} loader workers; one epoch of the real file ({KAGGLE_TRAIN_IMAGES:,} "
                          f"images) at this rate: {row['real_epoch_s'] / 60:.1f} min, reading "
                          f"{row['read_mb_per_s']:,.0f} MB/s of pixels"]
    acc = result.get("time_to_accuracy")
    if acc:
        state = "reached" if acc["reached"] else f"NOT reached (best {acc['best_val_acc']:.2f}%)"
        lines += ["", f"time to {acc['target_acc']:g}% val acc ({acc['model']}, fit): {state} after "
                      f"{acc['epochs']}/{acc['epoch_cap']} epochs, {acc['wall_s']:.0f} s wall, "
                      f"{acc['train_img_per_s']:,.0f} train img/s"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cifar", default="", help="folder holding cifar-10-batches-py (else generated data)")
    p.add_argument("--full", action="store_true",
                   help="GPU run: batch 256, whole epochs for every model, more HDF5 batches, time to accuracy")
    p.add_argument("--smoke", action="store_true",
                   help="the --full path on tiny sizes: a check that it runs end to end (CPU, under a minute); "
                        "without --cifar it times accuracy on the bundled digits")
    p.add_argument("--batch-size", type=int, help="per step, all columns (default 128; 256 with --full)")
    p.add_argument("--steps", type=int, help="timed batches per model row (default 2); 0: whole epochs")
    p.add_argument("--warmup", type=int, help="untimed batches before each measurement (default 1; 5 with --full)")
    p.add_argument("--repeats", type=int, help="every row keeps the best of this many turns per column "
                                               "(default 3; 2 with --full)")
    p.add_argument("--min-seconds", type=float,
                   help="step rows and the HDF5 row time at least this long, adding batches past --steps")
    p.add_argument("--workers", type=int, default=2, help="loader worker processes, plain and ours")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the training process (0: torch's default)")
    p.add_argument("--images", type=int, help="generated training images without --cifar (default 50000)")
    p.add_argument("--hdf5-images", type=int, help="images in the generated HDF5 file (default 20480, more than "
                                                   "the loader buffers; 32768 with --full)")
    p.add_argument("--hdf5-steps", type=int, help="timed HDF5 batches (default 20)")
    p.add_argument("--kaggle-images", type=int,
                   help="images in the generated file of the ResNet18-from-HDF5 row (with --full 100000, "
                        "--smoke 32 at batch 8; default 0: no such row)")
    p.add_argument("--time-to-acc", action="store_true", help="also time fit to --target-acc (on with --full)")
    p.add_argument("--target-acc", type=float, default=94.0)
    p.add_argument("--acc-epochs", type=int, help="epoch cap for --time-to-acc (default 0: the config's)")
    p.add_argument("--acc-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for --time-to-acc, e.g. TRAIN.COMPILE=true")
    p.add_argument("--out", default="benchmarks/results/pipeline.json")
    args = p.parse_args(argv)
    # name: (default, with --full, with --smoke)
    defaults = {"batch_size": (128, 256, 32), "steps": (2, 0, 0), "warmup": (1, 5, 1), "repeats": (3, 2, 1),
                "hdf5_images": (20480, 32768, 512), "hdf5_steps": (20, 100, 2), "images": (50000, 50000, 128),
                "min_seconds": (2.0, 2.0, 0.0), "acc_epochs": (0, 0, 1), "kaggle_images": (0, 100_000, 32)}
    column = 2 if args.smoke else int(args.full)
    for name, values in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, values[column])
    args.time_to_acc = args.time_to_acc or args.full or args.smoke
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        result = run(args)
    finally:
        torch.set_num_threads(threads)
    print(table(result), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


def run(args: argparse.Namespace) -> dict:
    """Every row, the optional time to accuracy, and what they ran on."""
    device = default_device()  # models are placed by build_model_from_config, which sets the CUDA backend flags
    split, source = cifar_train(args)
    whole = args.steps == 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [model_row(model, split, whole, args, device) for model in MODELS]
        rows += hdf5_rows(args, device, Path(tmp))
        if args.kaggle_images:
            rows.append(kaggle_row(args, device, Path(tmp)))
        if not whole:
            rows.append(model_row("lenet", split, True, args, device))
        acc = time_to_accuracy(args, Path(tmp)) if args.time_to_acc and (args.cifar or args.smoke) else None
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "load_avg": list(load_before), "load_avg_after": list(os.getloadavg()),
            "torch": torch.__version__, "data": source, "batch_size": args.batch_size, "warmup": args.warmup,
            "steps": args.steps, "min_seconds": args.min_seconds, "repeats": args.repeats, "workers": args.workers,
            "full": args.full, "smoke": args.smoke,
            "time_to_acc": None if acc or not args.time_to_acc else "skipped: needs --cifar"}
    return {"meta": meta, "rows": rows, "time_to_accuracy": acc}


if __name__ == "__main__":
    main()
