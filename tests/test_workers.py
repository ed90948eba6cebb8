"""Loader worker processes: same batches as reading in-process, clear errors, no hangs."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from nmeplib.data import workers as workers_module
from nmeplib.data.augment import Augment
from nmeplib.data.common import DatasetError
from nmeplib.data.hdf5 import write_hdf5
from nmeplib.data.loaders import StreamLoader
from nmeplib.data.stream import HDF5Blocks
from nmeplib.data.workers import SlotWorkers, WorkerError


@pytest.fixture(autouse=True)
def no_hang(monkeypatch):
    """A stuck worker fails the test within a minute instead of hanging it."""
    monkeypatch.setattr(workers_module, "STALL_S", 60.0)


@pytest.fixture
def path(tmp_path):
    rng = np.random.default_rng(0)
    splits = {split: (rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8),
                      None if split == "test" else rng.integers(0, 5, n))
              for split, n in {"train": 45, "val": 14, "test": 9}.items()}
    return write_hdf5(tmp_path / "data.h5", splits, chunk=4)


def round_robin(blocks: HDF5Blocks, workers: int) -> list:
    """What a DataLoader with ``workers`` workers yields: worker 0, 1, ... in turn, skipping finished ones."""
    streams, out = [blocks.batches(w, workers) for w in range(workers)], []
    while streams:
        for s in list(streams):
            try:
                out.append(next(s))
            except StopIteration:
                streams.remove(s)
    return out


@pytest.mark.parametrize("split,shuffle", [("train", True), ("val", False), ("test", False)])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_yield_the_dataloader_order(path, split, shuffle, workers):
    blocks = HDF5Blocks(path, split, 4, shuffle=shuffle, seed=1, buffer_blocks=2, drop_last=shuffle)
    slots = SlotWorkers(blocks, workers, (3, 8, 8), depth=2)
    orders = []
    for epoch in range(2):
        blocks.set_epoch(epoch)
        expected = round_robin(blocks, workers)
        got = [tuple(t.clone() for t in batch) for batch in slots]
        assert len(got) == len(expected) == len(blocks) > 1
        for e, g in zip(expected, got):
            assert all(torch.equal(a, b) for a, b in zip(e, g))
        orders.append(torch.cat([b[2] for b in got]))
    assert torch.equal(orders[0], orders[1]) != shuffle   # a new order each epoch when shuffling
    slots.close()


def test_stream_loader_with_workers_matches_in_process_in_file_order(path):
    def batches(num_workers):
        blocks = HDF5Blocks(path, "val", 4, shuffle=False)
        loader = StreamLoader(blocks, Augment("none", (0.5,) * 3, (0.25,) * 3, 8, train=False),
                              num_workers=num_workers)
        return [(x.clone(), y.clone()) for x, y in loader]

    expected, got = batches(0), batches(2)
    assert len(got) == len(expected) == 4
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(expected, got))


class Source:
    """Batches of constant images; raises or kills its worker at batch ``fail_at`` if asked."""

    batch_size = 2
    epoch = 0

    def __init__(self, n: int = 6, fail_at: int | None = None, how: str = "raise") -> None:
        self.n, self.fail_at, self.how = n, fail_at, how

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, worker: int, workers: int):
        for i in range(worker, self.n, workers):
            if i == self.fail_at:
                if self.how == "raise":
                    raise ValueError("bad record 7")
                if self.how == "dataset":
                    raise DatasetError("data.h5: chunk 3 is corrupt")
                if self.how == "hang":
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # stuck hard: only SIGKILL ends it
                    time.sleep(3600)
                os.kill(os.getpid(), signal.SIGKILL)
            yield (torch.full((2, 1), i, dtype=torch.uint8), torch.full((2,), self.epoch), torch.arange(2))


def values(workers: SlotWorkers) -> list[int]:
    return [int(images[0, 0]) for images, _, _ in workers]


def test_batches_arrive_in_order_and_workers_persist():
    workers = SlotWorkers(Source(n=7), 3, (1,), depth=2)
    assert values(workers) == list(range(7))
    procs = list(workers._procs)
    workers.source.set_epoch(4)
    labels = [int(y[0]) for _, y, _ in workers]
    assert labels == [4] * 7 and workers._procs == procs   # same processes, the new epoch
    workers.close()
    assert not any(p.is_alive() for p in procs)


def test_abandoned_epoch_restarts_cleanly():
    workers = SlotWorkers(Source(n=8), 2, (1,), depth=1)
    for i, _ in enumerate(workers):
        if i == 2:
            break
    assert workers._procs == []          # stopped: they were part-way through the epoch
    assert values(workers) == list(range(8))
    workers.close()


def test_worker_exception_is_raised_with_its_traceback():
    with pytest.raises(WorkerError, match=r"(?s)loader worker 1 failed.*bad record 7"):
        values(SlotWorkers(Source(fail_at=3), 2, (1,)))


def test_dataset_error_in_a_worker_is_one_line_naming_the_file():
    with pytest.raises(DatasetError) as err:
        values(SlotWorkers(Source(fail_at=3, how="dataset"), 2, (1,)))
    assert str(err.value) == "data.h5: chunk 3 is corrupt (in loader worker 1)"


def test_stuck_worker_is_reported_and_stopped():
    workers = SlotWorkers(Source(fail_at=2, how="hang"), 2, (1,), stall_s=1)
    procs, start = [], time.monotonic()
    with pytest.raises(WorkerError, match="loader worker 0 sent nothing for 1 s"):
        for _ in workers:
            procs = procs or list(workers._procs)
    assert time.monotonic() - start < 30
    assert workers._procs == [] and not any(p.is_alive() for p in procs)


def test_killed_worker_is_reported_not_waited_for():
    with pytest.raises(WorkerError, match="loader worker 0 exited unexpectedly"):
        values(SlotWorkers(Source(fail_at=2, how="kill"), 2, (1,)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        SlotWorkers(Source(), 0, (1,))


def test_too_little_shared_memory_is_refused_up_front(monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30 - 2**20, 2**20))
    source = Source()
    source.batch_size = 256   # 2 workers x 3 slots x 256 x 96 px images: about 41 MiB
    with pytest.raises(WorkerError, match=r"need 41 MiB of shared memory but /dev/shm has 1 MiB free.*NUM_WORKERS=0"):
        SlotWorkers(source, 2, (3, 96, 96), depth=3)


KILLED_PARENT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_workers import Source
from nmeplib.data.workers import SlotWorkers
workers = SlotWorkers(Source(n=50), 2, (1,), depth=1)
batches = iter(workers)
next(batches)   # mid-epoch: both workers wait for a free slot
print(*[p.pid for p in workers._procs], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_exit_when_the_training_process_is_killed():
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = KILLED_PARENT.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"

    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
