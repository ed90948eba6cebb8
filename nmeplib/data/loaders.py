"""Loaders that deliver normalised float batches on the training device.

``TensorLoader`` keeps a whole split as one uint8 tensor on the device (CIFAR-10 is 150 MB)
and cuts batches by indexing it; ``StreamLoader`` reads an HDF5 file in contiguous blocks in
worker processes and moves uint8 batches to the device. Both augment there, batched, and
both draw every random number from generators seeded by (seed, epoch), so an epoch is the
same whether a run was resumed or not.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.data import DataLoader

from ..runtime import generator
from .augment import Augment


@contextmanager
def _at_most_threads(n: int):
    """Run the block with at most ``n`` intra-op threads."""
    before = torch.get_num_threads()
    if n < before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n < before:
            torch.set_num_threads(before)


class TensorLoader:
    """Batches of a split held in memory, sharded over ``world_size`` processes.

    Training order is a fresh permutation per epoch (each rank gets the same number of
    batches); evaluation order is the split's own, each rank a contiguous shard.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, augment: Augment, *,
                 shuffle: bool, drop_last: bool = False, seed: int = 0, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.augment = batch_size, augment
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _bounds(self) -> tuple[int, int]:
        """This rank's slice: of the epoch's permutation (equal shares) or of the split (contiguous)."""
        n = len(self.labels)
        if self.shuffle:
            per_rank = n // self.world_size
            return self.rank * per_rank, (self.rank + 1) * per_rank
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def _indices(self) -> torch.Tensor:
        start, stop = self._bounds()
        if not self.shuffle:
            return torch.arange(start, stop)
        gen = generator(torch.device("cpu"), self.seed * 1000 + self.epoch)
        return torch.randperm(len(self.labels), generator=gen)[start:stop]

    @property
    def num_samples(self) -> int:
        start, stop = self._bounds()
        return stop - start

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        indices = self._indices().to(self.device)
        gen = generator(self.device, self.seed * 1000 + self.epoch + 1)
        for start in range(0, len(indices), self.batch_size):
            idx = indices[start:start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            # index_select copies whole images; indexing with [idx] goes element by element
            yield self.augment(self.images.index_select(0, idx), gen), self.labels.index_select(0, idx)


class StreamLoader:
    """Batches streamed from an ``HDF5Blocks`` dataset by worker processes."""

    def __init__(self, dataset, augment: Augment, *, num_workers: int, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.dataset, self.augment, self.seed = dataset, augment, seed
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_samples(self) -> int:
        return self.dataset.num_samples

    def __iter__(self):
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda",
                            prefetch_factor=4 if self.num_workers else None)
        gen = generator(self.device, self.seed * 1000 + self.epoch + 1)
        # On the CPU the workers keep cores busy; augmenting with every thread would leave
        # OpenMP threads waiting for cores, so augment with the threads the workers leave.
        spare = torch.get_num_threads() - self.num_workers if self.device.type == "cpu" else torch.get_num_threads()
        for images, labels, _ in loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with _at_most_threads(max(1, spare)):
                images = self.augment(images, gen)
            yield images, labels
