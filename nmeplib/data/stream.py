"""Block-shuffled streaming of one split of an HDF5 file (see ``hdf5`` for the format).

Random single-image reads from HDF5 are slow, so training reads contiguous, chunk-aligned
blocks; shuffling happens across blocks and inside an in-memory buffer of blocks instead.
"""
from __future__ import annotations

import math
import os
from typing import Iterator

import h5py
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .hdf5 import check_split, images_key, open_hdf5, read_label_rows, read_rows, schema

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class HDF5Blocks(IterableDataset):
    """Batches of one split, read as contiguous slices; use with ``DataLoader(batch_size=None)``.

    Yields ``(images uint8 [B,3,H,W], labels int64 [B], index int64 [B])``, where index
    is the position in the split and labels are -1 for test.

    shuffle=True: each epoch the chunk-aligned blocks are permuted (seeded by seed and
    epoch), each rank takes an equal share of the permuted stream (wrapping around to
    pad unless drop_last) and each worker a run of whole batches of it; images are
    shuffled inside a buffer of `buffer_blocks` blocks. Every rank yields len(self)
    batches whatever the number of workers, so distributed ranks stay in step.

    shuffle=False: file order. Rank r reads a contiguous shard (sizes differ by at most
    one, nothing repeated) and worker w of W yields batches w, w+W, ..., which an
    in-order DataLoader returns in file order.

    The file is opened on first iteration in each process, never in __init__, so the
    dataset pickles into worker processes without an HDF5 handle. Call set_epoch before
    each epoch: the epoch lives in shared memory, so persistent workers see it too.
    """

    def __init__(self, path: str | os.PathLike, split: str, batch_size: int, *, shuffle: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 block_size: int | None = None, buffer_blocks: int = 8, cache_mb: int = 64) -> None:
        check_split(split)
        if batch_size < 1 or buffer_blocks < 1 or (block_size is not None and block_size < 1):
            raise ValueError("batch_size, block_size and buffer_blocks must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        with open_hdf5(path) as f:
            self.img_size, counts = schema(f, path)
            chunks = f[images_key(split)].chunks
        if block_size is None:
            block_size = math.ceil(batch_size / chunks[0]) * chunks[0] if chunks else batch_size
        self.path, self.split, self.batch_size, self.shuffle = str(path), split, batch_size, shuffle
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self.block_size, self.buffer_blocks, self.cache_mb = block_size, buffer_blocks, cache_mb
        self.num_samples = counts[split]
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._file: h5py.File | None = None
        self._pid: int | None = None

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle the next iteration uses, here and in the worker processes."""
        self._epoch.fill_(int(epoch))

    def _per_rank(self) -> int:
        """Samples each rank reads per epoch (shuffle=True)."""
        n, ws = self.num_samples, self.world_size
        return n // ws if self.drop_last else math.ceil(n / ws)

    def _shard(self) -> tuple[int, int]:
        """This rank's contiguous range of the split (shuffle=False)."""
        n, ws, r = self.num_samples, self.world_size, self.rank
        return r * n // ws, (r + 1) * n // ws

    def __len__(self) -> int:
        if self.shuffle:
            m = self._per_rank()
        else:
            lo, hi = self._shard()
            m = hi - lo
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}

    def _handle(self) -> h5py.File:
        """This process's file handle; a handle inherited through fork is not reused."""
        if self._file is None or self._pid != os.getpid():
            self._file = open_hdf5(self.path, rdcc_nbytes=self.cache_mb * 2**20, rdcc_nslots=10007)
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close this process's handle, if open."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._pid = None

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        return self.batches(*((info.id, info.num_workers) if info else (0, 1)))

    def batches(self, worker: int, workers: int) -> Iterator[Batch]:
        """The batches worker ``worker`` of ``workers`` yields (see the class docstring)."""
        f = self._handle()
        if self.shuffle:
            return self._shuffled(f, worker, workers)
        return self._in_order(f, worker, workers)

    def _read(self, f: h5py.File, a: int, b: int) -> Batch:
        images = read_rows(f[images_key(self.split)], a, b)
        return (torch.from_numpy(images), torch.from_numpy(read_label_rows(f, self.split, a, b)),
                torch.arange(a, b, dtype=torch.int64))

    def _in_order(self, f: h5py.File, worker: int, workers: int) -> Iterator[Batch]:
        lo, hi = self._shard()
        starts = range(lo, hi, self.batch_size)[: len(self)]
        for a in starts[worker::workers]:
            yield self._read(f, a, min(a + self.batch_size, hi))

    def _ranges(self, worker: int, workers: int) -> Iterator[tuple[int, int]]:
        """File slices this worker reads this epoch, in the order it reads them."""
        n, size, bs = self.num_samples, self.block_size, self.batch_size
        starts = np.arange(0, n, size)
        starts = starts[np.random.default_rng([self.seed, self.epoch]).permutation(len(starts))]
        lengths = np.minimum(starts + size, n) - starts
        ends = np.cumsum(lengths)  # positions in the permuted stream where each block ends
        m, batches = self._per_rank(), len(self)
        p = self.rank * m + worker * batches // workers * bs
        stop = self.rank * m + min((worker + 1) * batches // workers * bs, m)
        while p < stop:  # positions past n wrap around: padding for equal ranks
            k = int(np.searchsorted(ends, p % n, side="right"))
            offset = p % n - (ends[k] - lengths[k])
            take = int(min(lengths[k] - offset, stop - p))
            yield int(starts[k] + offset), int(starts[k] + offset + take)
            p += take

    def _shuffled(self, f: h5py.File, worker: int, workers: int) -> Iterator[Batch]:
        images = f[images_key(self.split)]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, self.world_size,
                                     worker, workers])
        bs = self.batch_size
        capacity = max(self.buffer_blocks * self.block_size, bs)  # drains leave < bs behind
        buf = np.empty((capacity + self.block_size, *images.shape[1:]), np.uint8)
        labels = np.empty(len(buf), np.int64)
        index = np.empty(len(buf), np.int64)
        fill = 0

        def drain(final: bool) -> Iterator[Batch]:
            nonlocal fill
            order = rng.permutation(fill)
            emit = fill if final else fill // bs * bs
            for i in range(0, emit, bs):
                sel = order[i:i + bs]
                yield (torch.from_numpy(buf[sel]), torch.from_numpy(labels[sel]),
                       torch.from_numpy(index[sel]))
            rest = order[emit:]
            buf[:len(rest)], labels[:len(rest)], index[:len(rest)] = buf[rest], labels[rest], index[rest]
            fill = len(rest)

        for a, b in self._ranges(worker, workers):
            end = fill + b - a
            read_rows(images, a, b, buf, fill)
            labels[fill:end] = read_label_rows(f, self.split, a, b)
            index[fill:end] = np.arange(a, b)
            fill = end
            if fill >= capacity:
                yield from drain(final=False)
        yield from drain(final=True)
