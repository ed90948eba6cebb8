"""The HDF5 loader against its control: nmeplib's ``StreamLoader`` vs a plain ``DataLoader``.

    python benchmarks/loader_control.py                      # CPU: about 3 minutes on 2 cores
    python benchmarks/loader_control.py --workers 0 4 8 --repeats 2 --epochs 3   # the GPU figures

Both read the same ``HDF5Blocks`` stream of a generated MediumImageNet-schema file and apply
the same batched crop + flip on the device:

  stream      ``nmeplib.data.loaders.StreamLoader`` (what ``build_loader`` returns): in-process
              with 0 workers, otherwise a wrapped ``DataLoader`` like the one below, plus its
              shared-memory check, stall timeout and error reports
  dataloader  ``DataLoader(blocks, batch_size=None, num_workers=N, persistent_workers=True,
              pin_memory=<on CUDA>)``, then the same augmentation

So the columns measure what the wrapping costs (it should be nothing). Each turn builds a fresh
loader and runs ``--epochs`` whole epochs, so worker start-up counts as it does in training; the
paths take turns and each keeps its best turn. Prints img/s over all epochs, of the first epoch
(start-up included) and of the later ones, and images per CPU second of all the loader's
processes together (steadier than img/s on a busy machine). See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from nmeplib.data.augment import Augment
from nmeplib.data.build import IMAGENET_MEAN, IMAGENET_STD
from nmeplib.data.hdf5 import HDF5Writer
from nmeplib.data.loaders import StreamLoader
from nmeplib.data.stream import HDF5Blocks
from nmeplib.runtime import default_device, generator, synchronize


def make_file(path: Path, images: int, size: int, batch: int) -> Path:
    """Random ``size`` px images in the MediumImageNet schema, as the pipeline benchmark's HDF5 row writes them."""
    rng = np.random.default_rng(0)

    def part(k: int):
        return rng.integers(0, 256, (k, 3, size, size), dtype=np.uint8), rng.integers(0, 10, k)

    with HDF5Writer(path, size) as writer:
        for a in range(0, images, 4096):   # a part at a time: the file may not fit in memory twice
            writer.append("train", *part(min(4096, images - a)))
        writer.append("val", *part(batch))
        writer.append("test", part(batch)[0])
    return path


class Control:
    """The stock path: a persistent-worker ``DataLoader`` over the blocks, augmented on the device."""

    def __init__(self, blocks: HDF5Blocks, augment: Augment, num_workers: int, device: torch.device) -> None:
        self.blocks, self.augment, self.device, self.epoch = blocks, augment, device, 0
        self.loader = DataLoader(blocks, batch_size=None, num_workers=num_workers,
                                 persistent_workers=num_workers > 0, pin_memory=device.type == "cuda")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.blocks.set_epoch(epoch)

    def __iter__(self):
        gen = generator(self.device, self.epoch + 1)
        for images, labels, _ in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield self.augment(images, gen), labels.to(self.device, non_blocking=True)

    def close(self) -> None:
        self.loader = None   # the iterator's workers stop when it is collected
        self.blocks.close()


def cpu_seconds() -> float:
    """CPU time used so far by this process and its live children (the loader's workers)."""
    t, tick = os.times(), os.sysconf("SC_CLK_TCK")
    total = t.user + t.system
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / tick   # utime + stime
    return total


def turn(make: Callable[[], object], epochs: int, device: torch.device) -> tuple[list[tuple[int, float]], float]:
    """(images, seconds) of each of ``epochs`` epochs of a freshly built loader, and the CPU seconds
    all its processes used, start-up included."""
    cpu, loader, out = cpu_seconds(), make(), []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        synchronize(device)
        start, n = time.perf_counter(), 0
        for x, y in loader:
            n += len(y)
        synchronize(device)
        out.append((n, time.perf_counter() - start))
    cpu = cpu_seconds() - cpu
    loader.close()
    return out, cpu


def rates(epochs: list[tuple[int, float]], cpu: float) -> dict[str, float]:
    """img/s over all epochs, the first and the later ones; and images per CPU second."""
    later, n = epochs[1:] or epochs, sum(n for n, _ in epochs)
    return {"all": n / sum(s for _, s in epochs), "first": epochs[0][0] / epochs[0][1],
            "later": sum(n for n, _ in later) / sum(s for _, s in later), "per_cpu": n / cpu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20480, help="train images in the generated file")
    p.add_argument("--img-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4, help="whole epochs per turn")
    p.add_argument("--repeats", type=int, default=3, help="turns per path; the best counts")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts to compare")
    p.add_argument("--augment", default="crop+flip")
    p.add_argument("--threads", type=int, help="torch threads in the training process")
    p.add_argument("--verbose", action="store_true", help="print every turn")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_device()
    load = os.getloadavg()[0]
    print(f"device {device}, torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}, "
          f"{args.images} images {args.img_size} px, batch {args.batch_size}, {args.augment}, "
          f"{args.epochs} epochs per turn, best of {args.repeats}; load average {load:.2f} at the start", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(Path(tmp) / "control.hdf5", args.images, args.img_size, args.batch_size)
        augment = Augment(args.augment, IMAGENET_MEAN, IMAGENET_STD, args.img_size)

        def blocks() -> HDF5Blocks:
            return HDF5Blocks(path, "train", args.batch_size, shuffle=True, drop_last=True)

        paths = {}
        for w in args.workers:
            paths[("stream", w)] = lambda w=w: StreamLoader(blocks(), augment, num_workers=w, device=device)
            paths[("dataloader", w)] = lambda w=w: Control(blocks(), augment, w, device)
        best: dict = {}
        for _ in range(args.repeats):   # the paths take turns, so a busy spell favours none of them
            for key, make in paths.items():
                r = rates(*turn(make, args.epochs, device))
                if args.verbose:
                    print(f"  turn: {key[1]} workers {key[0]:>10} {r['all']:8,.0f} img/s, "
                          f"{r['per_cpu']:8,.0f} img per CPU s, load {os.getloadavg()[0]:.2f}", flush=True)
                best[key] = {k: max(v, best.get(key, {}).get(k, 0.0)) for k, v in r.items()}
        print(f"{'workers':>7} {'path':>10} {'img/s all':>10} {'1st epoch':>10} {'later':>10} "
              f"{'img/CPU s':>10} {'stream/dl':>10}")
        for (name, w), r in best.items():
            ratio = f"{best[('stream', w)]['all'] / r['all']:.2f}" if name == "dataloader" else ""
            print(f"{w:>7} {name:>10} {r['all']:>10,.0f} {r['first']:>10,.0f} {r['later']:>10,.0f} "
                  f"{r['per_cpu']:>10,.0f} {ratio:>10}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
