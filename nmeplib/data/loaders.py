"""Loaders that deliver normalised float batches on the training device.

``TensorLoader`` keeps a whole split as one uint8 tensor on the device (CIFAR-10 is 150 MB)
and cuts batches by indexing it; ``StreamLoader`` reads an HDF5 file in contiguous blocks in
the worker processes of a stock ``DataLoader`` and moves uint8 batches to the device. Both
augment there, batched, and both draw every random number from generators seeded by (seed,
epoch), so an epoch is the same whether a run was resumed or not.
"""
from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import DatasetError, NmeplibError
from ..runtime import generator
from .augment import Augment

if TYPE_CHECKING:
    from .build import ImageSplit

STALL_S = 600.0   # loader workers that deliver nothing for this long are stuck (a hung file system, say)
SHM = "/dev/shm"
SHM_ADVICE = ("lower DATA.NUM_WORKERS or DATA.BATCH_SIZE, read in-process with DATA.NUM_WORKERS=0, "
              "or give the container more (docker --shm-size)")
# TensorLoader augments about this much float output per call: on a GPU enough batches to pay
# the augmentation's kernel launches once for many; on a CPU what stays in cache (a 256 MB chunk
# made the CPU loader 2.7x slower than 16 MB: 60,000 against 160,000 img/s on 2 cores).
CHUNK_BYTES = {"cuda": 256 * 2**20, "cpu": 16 * 2**20}


def augment_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's augmentation draws: a stream of its own, apart from every
    epoch's shuffle (seeded ``seed * 1000 + epoch``)."""
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])


class TensorLoader:
    """Batches of a split held in memory, sharded over ``world_size`` processes.

    Training order is a fresh permutation per epoch (each rank gets the same number of
    batches); evaluation order is the split's own, each rank a contiguous shard. Batches are
    augmented in chunks of several at once (``CHUNK_BYTES`` of output per device type), so on a GPU
    the few dozen kernel launches of an augmentation are paid once per chunk, not once per batch:
    for small models those launches, not the arithmetic, bound the speed. ``split``: the
    ``ImageSplit`` the images come from (labels, class names, path), for those who need them.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, augment: Augment, *,
                 shuffle: bool, drop_last: bool = False, seed: int = 0, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1, split: ImageSplit | None = None) -> None:
        self.split = split
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
        budget = CHUNK_BYTES.get(self.device.type, CHUNK_BYTES["cpu"])
        chunk = batch * max(1, budget // (3 * side ** 2 * 4 * batch))   # float32 output
        for start in range(0, len(indices), chunk):
            idx = indices[start:start + chunk]
            # index_select copies whole images; indexing with [idx] goes element by element
            images, labels = self.augment(self.images.index_select(0, idx), gen), self.labels.index_select(0, idx)
            yield from zip(images.split(batch), labels.split(batch))


class WorkerError(NmeplibError, RuntimeError):
    """A loader worker raised, died or stalled."""


def worker_error(err: BaseException, stall_s: float = STALL_S) -> WorkerError | None:
    """``err`` as a ``WorkerError`` saying what to do, if it is a ``DataLoader`` worker failure.

    The DataLoader raises its workers' failures as the exception's type with the worker's
    traceback, a death (even one noticed between batches, by its SIGCHLD handler) and a
    timeout as RuntimeErrors; a bus error or a full /dev/shm means too little shared memory.
    """
    while isinstance(err.__cause__, RuntimeError) and "DataLoader worker" in str(err.__cause__):
        err = err.__cause__               # "killed by signal: Bus error" under "exited unexpectedly"
    text = str(err)
    if text.startswith("DataLoader timed out"):
        return WorkerError(f"the loader workers delivered nothing for {stall_s:g} s and were stopped: reading "
                           f"the data hangs (a stalled file system?); try DATA.NUM_WORKERS=0")
    if "DataLoader worker" not in text:
        return None
    shm = any(s in text for s in ("Bus error", "shared memory", "No space left on device"))
    hint = f"\nmost likely too little shared memory in {SHM}: {SHM_ADVICE}" if shm else ""
    return WorkerError(f"a loader worker failed: {text}{hint}")


def check_shared_memory(nbytes: int) -> None:
    """Refuse clearly, rather than die of a bus error later, when /dev/shm cannot hold ``nbytes``."""
    try:
        free = shutil.disk_usage(SHM).free
    except OSError:
        return                            # no /dev/shm to ask (not Linux)
    if nbytes > free:
        raise WorkerError(f"the loader workers need at least {nbytes / 2**20:.0f} MiB of shared memory but "
                          f"{SHM} has {free / 2**20:.0f} MiB free; {SHM_ADVICE}")


class _Reported(IterableDataset):
    """A dataset as a worker iterates it: a DatasetError comes back as an item rather than as the
    DataLoader's worker traceback, so the training process raises it with its one-line message."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __iter__(self):
        try:
            yield from self.dataset
        except DatasetError as err:
            yield DatasetError(f"{err} (in loader worker {get_worker_info().id})")


class StreamLoader:
    """Batches streamed from an ``HDF5Blocks`` dataset, read in-process (``num_workers=0``) or by a
    ``DataLoader`` whose ``num_workers`` processes each open the file and read their share of the
    blocks. The workers stay up between epochs and follow ``set_epoch`` (the dataset keeps the
    epoch in shared memory). A worker that raises, dies or delivers nothing for ``STALL_S``
    seconds stops them all with a ``WorkerError`` (a ``DatasetError`` keeps its type and message).
    ``split``: the ``ImageSplit`` the file's split is (labels, class names, path).
    """

    def __init__(self, dataset, augment: Augment, *, num_workers: int, seed: int = 0,
                 device: torch.device | str = "cpu", split: ImageSplit | None = None) -> None:
        self.split = split
        self.dataset, self.augment, self.seed = dataset, augment, seed
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.epoch = 0
        self._workers: DataLoader | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_samples(self) -> int:
        return self.dataset.num_samples

    def _start(self) -> DataLoader:
        b, size = self.dataset.batch_size, self.dataset.img_size
        check_shared_memory(self.num_workers * 2 * b * (3 * size * size + 16))  # 2 batches in flight per worker
        return DataLoader(_Reported(self.dataset), batch_size=None, num_workers=self.num_workers,
                          persistent_workers=True, prefetch_factor=2, pin_memory=self.device.type == "cuda",
                          timeout=STALL_S)

    def _from_workers(self) -> Iterator[list[torch.Tensor]]:
        if self._workers is None:
            self._workers = self._start()
        stall_s, batches = self._workers.timeout, iter(self._workers)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as err:
                self.close()              # stuck or gone: the next iteration starts afresh
                failure = worker_error(err, stall_s)
                if failure is None:
                    raise
                raise failure from err
            if isinstance(batch, DatasetError):
                self.close()
                raise batch
            yield batch

    def close(self) -> None:
        """Stop the worker processes and close the file (both reopen on the next iteration)."""
        workers, self._workers = self._workers, None
        if workers is not None and workers._iterator is not None:
            workers._iterator._shutdown_workers()   # the DataLoader's own stop: ask, wait, then SIGTERM
        self.dataset.close()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = generator(self.device, augment_seed(self.seed, self.epoch))
        cuda = self.device.type == "cuda"
        for images, labels, _ in self._from_workers() if self.num_workers else iter(self.dataset):
            if cuda and not images.is_pinned():   # pinned, so the copy neither waits for the GPU nor blocks
                images, labels = images.pin_memory(), labels.pin_memory()
            images = images.to(self.device, non_blocking=True)
            yield self.augment(images, gen), labels.to(self.device, non_blocking=True)
