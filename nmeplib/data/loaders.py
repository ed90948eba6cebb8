"""Loaders that deliver normalised float batches on the training device.

``TensorLoader`` keeps a whole split as one uint8 tensor on the device (CIFAR-10 is 150 MB)
and cuts batches by indexing it; ``StreamLoader`` reads an HDF5 file in contiguous blocks in
worker processes and moves uint8 batches to the device. Both augment there, batched, and
both draw every random number from generators seeded by (seed, epoch), so an epoch is the
same whether a run was resumed or not.
"""
from __future__ import annotations

import numpy as np
import torch

from ..runtime import generator
from .augment import Augment
from .workers import SlotWorkers


CHUNK_BYTES = 256 * 2**20  # TensorLoader augments this much float output at a time


def augment_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's augmentation draws: a stream of its own, apart from every
    epoch's shuffle (seeded ``seed * 1000 + epoch``)."""
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])


class TensorLoader:
    """Batches of a split held in memory, sharded over ``world_size`` processes.

    Training order is a fresh permutation per epoch (each rank gets the same number of
    batches); evaluation order is the split's own, each rank a contiguous shard. Batches are
    augmented in chunks of several at once (about ``CHUNK_BYTES`` of output), so the few dozen
    kernel launches of an augmentation are paid once per chunk, not once per batch: for small
    models on a GPU those launches, not the arithmetic, bound the speed.
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
        batch = self.batch_size
        indices = self._indices().to(self.device)[:len(self) * batch]  # drop_last: whole batches only
        gen = generator(self.device, augment_seed(self.seed, self.epoch))
        side = max(getattr(self.augment, "img_size", 0), self.images.shape[-1])
        chunk = batch * max(1, CHUNK_BYTES // (3 * side ** 2 * 4 * batch))   # float32 output
        for start in range(0, len(indices), chunk):
            idx = indices[start:start + chunk]
            # index_select copies whole images; indexing with [idx] goes element by element
            images, labels = self.augment(self.images.index_select(0, idx), gen), self.labels.index_select(0, idx)
            yield from zip(images.split(batch), labels.split(batch))


class StreamLoader:
    """Batches streamed from an ``HDF5Blocks`` dataset, read in ``num_workers`` processes
    (``SlotWorkers``) or, with 0, in this process."""

    def __init__(self, dataset, augment: Augment, *, num_workers: int, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.dataset, self.augment, self.seed = dataset, augment, seed
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.epoch = 0
        self._workers: SlotWorkers | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_samples(self) -> int:
        return self.dataset.num_samples

    def _batches(self):
        if not self.num_workers:
            return self.dataset.batches(0, 1)
        if self._workers is None:   # the slots are allocated once and reused every epoch
            shape = (3, self.dataset.img_size, self.dataset.img_size)
            self._workers = SlotWorkers(self.dataset, self.num_workers, shape)
        return iter(self._workers)

    def close(self) -> None:
        """Stop the worker processes and close the file (both reopen on the next iteration)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        self.dataset.close()

    def __iter__(self):
        gen = generator(self.device, augment_seed(self.seed, self.epoch))
        cuda = self.device.type == "cuda"
        for images, labels, _ in self._batches():
            if cuda:  # pinned copies, so the transfer neither waits for the GPU nor blocks the host
                images = images.pin_memory().to(self.device, non_blocking=True)
                labels = labels.pin_memory().to(self.device, non_blocking=True)
            else:     # the images become a new float tensor below; the labels are copied out of the slot
                labels = labels.to(self.device, copy=True)
            yield self.augment(images, gen), labels
