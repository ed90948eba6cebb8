"""Worker processes that write batches into shared-memory slots the training process reuses.

A ``DataLoader`` hands every batch over in a fresh shared-memory segment: the worker creates
and fills it, the training process maps it, faults its pages in and frees it again. Here each
worker owns ``depth`` slots allocated once, before the workers start; it writes a batch into a
free slot and sends only the slot's number, and the training process sends the number back once
it has copied or augmented the batch away. The workers stay up between epochs. Batches come in
the order a ``DataLoader`` over the same iterable dataset gives (worker 0, 1, ..., skipping
finished workers). Against a stock ``DataLoader`` with persistent workers over the same blocks,
this used about a third less CPU per image on 2 CPU cores and, with 2 workers, delivered 1.2-1.5x
the images per second in three runs of four (``benchmarks/loader_control.py``, benchmarks/README.md).
"""
from __future__ import annotations

import os
import shutil
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import Iterator, Protocol

import torch
import torch.multiprocessing as mp

from .common import DatasetError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
_DONE = "done"
_POLL_S = 1.0
STALL_S = 600.0   # a worker that sends nothing for this long is stuck (a hung file system, say)
SHM = "/dev/shm"
SHM_ADVICE = ("lower DATA.NUM_WORKERS or DATA.BATCH_SIZE, read in-process with DATA.NUM_WORKERS=0, "
              "or give the container more (docker --shm-size)")


class BatchSource(Protocol):
    """What a worker reads: ``batches(worker, workers)`` of ``(uint8 images, int64, int64)``."""

    batch_size: int
    epoch: int

    def set_epoch(self, epoch: int) -> None: ...

    def batches(self, worker: int, workers: int) -> Iterator[Batch]: ...


class WorkerError(RuntimeError):
    """A loader worker raised or died."""


class _Stop(Exception):
    pass


def _work(source: BatchSource, worker: int, workers: int, slots: tuple[torch.Tensor, ...],
          conn: Connection, inherited: list[int]) -> None:
    """Worker loop. Messages in: an epoch number as ``("epoch", e)``, a returned slot
    number, or ``None`` to stop. Out: ``(slot, size)`` per batch, then ``"done"``; on failure a
    DatasetError (a bad file: its message says it all) or the traceback of anything else."""
    for fd in inherited:  # the training process's ends of the other workers' pipes
        try:
            os.close(fd)
        except OSError:
            pass
    torch.set_num_threads(1)
    free = list(range(len(slots[0])))

    def handle(msg) -> int | None:
        if msg is None:
            raise _Stop
        if isinstance(msg, int):
            free.append(msg)
            return None
        return msg[1]

    try:
        while True:
            epoch = handle(conn.recv())
            if epoch is None:
                continue
            source.set_epoch(epoch)
            for batch in source.batches(worker, workers):
                while conn.poll():
                    handle(conn.recv())
                while not free:
                    handle(conn.recv())
                k = free.pop(0)
                n = len(batch[0])
                for slot, part in zip(slots, batch):
                    slot[k, :n].copy_(part)
                conn.send((k, n))
            conn.send(_DONE)
    except (_Stop, EOFError, BrokenPipeError, KeyboardInterrupt):
        pass                              # asked to stop, or the training process went away
    except BaseException as err:
        try:
            conn.send(DatasetError(str(err)) if isinstance(err, DatasetError) else traceback.format_exc())
        except OSError:
            pass


def _check_shared_memory(nbytes: int) -> None:
    """Refuse clearly, rather than die of a bus error, when /dev/shm cannot hold the slots."""
    try:
        free = shutil.disk_usage(SHM).free
    except OSError:
        return                            # no /dev/shm to ask (not Linux)
    if nbytes > free:
        raise WorkerError(f"the loader workers need {nbytes / 2**20:.0f} MiB of shared memory but {SHM} has "
                          f"{free / 2**20:.0f} MiB free; {SHM_ADVICE}")


class SlotWorkers:
    """Iterate ``source`` for its current epoch in ``num_workers`` processes through shared slots.

    Each iteration yields ``(images, labels, index)`` views into a slot; they stay valid until
    the next batch is requested, so copy or transform them before that. The workers start on
    the first iteration and stay up until ``close()`` (or until an iteration is abandoned).
    A worker that sends nothing for ``stall_s`` seconds (default ``STALL_S``) is a WorkerError.
    """

    def __init__(self, source: BatchSource, num_workers: int, image_shape: tuple[int, ...], *,
                 depth: int = 3, stall_s: float | None = None) -> None:
        if num_workers < 1 or depth < 1:
            raise ValueError("num_workers and depth must be positive")
        self.source, self.num_workers, self.depth = source, num_workers, depth
        self.stall_s = STALL_S if stall_s is None else stall_s
        b = source.batch_size
        per_batch = b * (int(torch.Size(image_shape).numel()) + 16)   # uint8 pixels + two int64
        _check_shared_memory(num_workers * depth * per_batch)
        self.slots = tuple(t.share_memory_() for t in (
            torch.empty((num_workers, depth, b, *image_shape), dtype=torch.uint8),
            torch.empty((num_workers, depth, b), dtype=torch.int64),
            torch.empty((num_workers, depth, b), dtype=torch.int64)))
        self._procs: list = []
        self._conns: list[Connection] = []

    def _start(self) -> None:
        ctx = mp.get_context()
        pipes = [ctx.Pipe() for _ in range(self.num_workers)]
        forked = ctx.get_start_method() == "fork"
        for w, (_, theirs) in enumerate(pipes):
            # a forked worker closes the other ends it inherits, so that each side of every
            # pipe sees end-of-file when the process holding the other end exits
            inherited = [c.fileno() for pair in pipes for c in pair if c is not theirs] if forked else []
            p = ctx.Process(target=_work, daemon=True, name=f"nmeplib-loader-{w}",
                            args=(self.source, w, self.num_workers, tuple(s[w] for s in self.slots),
                                  theirs, inherited))
            p.start()
            self._procs.append(p)
        for ours, theirs in pipes:
            theirs.close()
            self._conns.append(ours)

    def __iter__(self) -> Iterator[Batch]:
        if not self._procs:
            self._start()
        for c in self._conns:
            c.send(("epoch", self.source.epoch))
        finished = False
        try:
            active, pos = list(range(self.num_workers)), 0
            while active:
                pos %= len(active)
                w = active[pos]
                msg = self._receive(w)
                if msg == _DONE:      # the next worker in the cycle takes this turn
                    active.pop(pos)
                    continue
                k, n = msg
                yield tuple(s[w, k, :n] for s in self.slots)
                try:
                    self._conns[w].send(k)
                except OSError:     # the worker died; the next receive says so
                    pass
                pos += 1
            finished = True
        finally:
            if not finished:    # the workers are mid-epoch: start afresh next time
                self.close()

    def _receive(self, w: int):
        """Worker ``w``'s next message; raise if it failed or died."""
        proc, conn = self._procs[w], self._conns[w]
        deadline = time.monotonic() + self.stall_s
        try:
            while not conn.poll(min(_POLL_S, self.stall_s)):
                if not proc.is_alive():
                    raise EOFError
                if time.monotonic() > deadline:
                    proc.kill()
                    raise WorkerError(f"loader worker {w} sent nothing for {self.stall_s:.0f} s and was stopped: "
                                      f"reading the data hangs (a stalled file system?); try DATA.NUM_WORKERS=0")
            msg = conn.recv()
        except (EOFError, OSError):
            proc.join(timeout=5)
            hint = (f": a bus error, most likely too little shared memory in {SHM}; {SHM_ADVICE}"
                    if proc.exitcode == -signal.SIGBUS else "")
            raise WorkerError(f"loader worker {w} exited unexpectedly (exit code {proc.exitcode}){hint}") from None
        if isinstance(msg, DatasetError):
            raise DatasetError(f"{msg} (in loader worker {w})")
        if isinstance(msg, str) and msg != _DONE:
            raise WorkerError(f"loader worker {w} failed:\n{msg}")
        return msg

    def close(self) -> None:
        """Stop the workers (they also stop when this object is collected)."""
        for c in self._conns:
            try:
                c.send(None)
            except OSError:
                pass
            c.close()
        for p in self._procs:
            for end in (None, p.terminate, p.kill):   # ask, then SIGTERM, then SIGKILL
                if end is not None and p.is_alive():
                    end()
                p.join(timeout=5)
        self._procs, self._conns = [], []

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            self.close()
