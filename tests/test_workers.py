"""StreamLoader's worker processes: the same batches as reading in-process, clear errors, no hangs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset, get_worker_info

from nmeplib import cli
from nmeplib.data import loaders
from nmeplib.data.augment import Augment
from nmeplib.errors import DatasetError
from nmeplib.data.hdf5 import write_hdf5
from nmeplib.data.loaders import StreamLoader, WorkerError
from nmeplib.data.stream import HDF5Blocks

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")   # 3 workers on 2 cores


@pytest.fixture(autouse=True)
def no_hang(monkeypatch):
    """A stuck worker fails the test within a minute instead of hanging it."""
    monkeypatch.setattr(loaders, "STALL_S", 60.0)


@pytest.fixture
def path(tmp_path):
    rng = np.random.default_rng(0)
    splits = {split: (rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8),
                      None if split == "test" else rng.integers(0, 5, n))
              for split, n in {"train": 45, "val": 14, "test": 9}.items()}
    return write_hdf5(tmp_path / "data.h5", splits, chunk=4)


def as_read(images: torch.Tensor, gen=None) -> torch.Tensor:
    """An augmentation that leaves the batch as the workers read it."""
    return images


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
def test_workers_yield_each_workers_share_in_turn_and_follow_set_epoch(path, split, shuffle, workers):
    blocks = HDF5Blocks(path, split, 4, shuffle=shuffle, seed=1, buffer_blocks=2, drop_last=shuffle)
    loader = StreamLoader(blocks, as_read, num_workers=workers)
    orders = []
    try:
        for epoch in (0, 1, 0):
            loader.set_epoch(epoch)
            expected = round_robin(blocks, workers)
            got = [(x.clone(), y.clone()) for x, y in loader]   # the same worker processes every epoch
            assert len(got) == len(expected) == len(blocks) > 1
            for (images, labels, _), (x, y) in zip(expected, got):
                assert torch.equal(images, x) and torch.equal(labels, y)
            orders.append(torch.cat([b[2] for b in expected]))
    finally:
        loader.close()
    assert torch.equal(orders[0], orders[1]) != shuffle   # a new order each epoch when shuffling
    assert torch.equal(orders[0], orders[2])              # and the same one again for the same epoch


def test_stream_loader_with_workers_matches_in_process_in_file_order(path):
    def batches(num_workers):
        blocks = HDF5Blocks(path, "val", 4, shuffle=False)
        loader = StreamLoader(blocks, Augment("none", (0.5,) * 3, (0.25,) * 3, 8, train=False),
                              num_workers=num_workers)
        out = [(x.clone(), y.clone()) for x, y in loader]
        loader.close()
        return out

    expected, got = batches(0), batches(2)
    assert len(got) == len(expected) == 4
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(expected, got))


class Numbers(IterableDataset):
    """Batch i holds [i, epoch, worker pid]; worker w of W yields i = w, w+W, ...; at ``fail_at``
    the worker raises, hangs or kills itself, as ``how`` says."""

    batch_size = img_size = 1
    close = staticmethod(lambda: None)

    def __init__(self, n: int = 6, fail_at: int | None = None, how: str = "raise") -> None:
        self.n, self.fail_at, self.how = n, fail_at, how
        self.num_samples = n
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        info = get_worker_info()
        for i in range(info.id, self.n, info.num_workers):
            if i == self.fail_at:
                if self.how == "raise":
                    raise ValueError("bad record 7")
                if self.how == "dataset":
                    raise DatasetError("data.h5: chunk 3 is corrupt")
                time.sleep(3600 if self.how == "hang" else 0.5)   # the training process waits for this batch
                os.kill(os.getpid(), signal.SIGBUS if self.how == "bus" else signal.SIGKILL)
            yield torch.tensor([i, int(self.epoch), os.getpid()]), torch.zeros(1), torch.zeros(1)


def numbers(loader: StreamLoader) -> list[int]:
    return [int(x[0]) for x, _ in loader]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def all_exit(pids, within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


def test_batches_arrive_in_order_and_workers_persist():
    loader = StreamLoader(Numbers(n=7), as_read, num_workers=3)
    first = [x.tolist() for x, _ in loader]
    assert [i for i, _, _ in first] == list(range(7))
    loader.set_epoch(4)
    second = [x.tolist() for x, _ in loader]
    assert [e for _, e, _ in second] == [4] * 7                          # the workers see the new epoch
    pids = {p for _, _, p in first}
    assert len(pids) == 3 and pids == {p for _, _, p in second}          # in the same processes
    loader.close()
    assert all_exit(pids)


def test_abandoned_epoch_restarts_cleanly():
    loader = StreamLoader(Numbers(n=8), as_read, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    assert numbers(loader) == list(range(8))
    loader.close()


def test_worker_exception_is_raised_with_its_traceback():
    with pytest.raises(WorkerError, match=r"(?s)loader worker failed.*worker process 1.*bad record 7"):
        numbers(StreamLoader(Numbers(fail_at=3), as_read, num_workers=2))


def test_dataset_error_in_a_worker_is_one_line_naming_the_file():
    with pytest.raises(DatasetError) as err:
        numbers(StreamLoader(Numbers(fail_at=3, how="dataset"), as_read, num_workers=2))
    assert str(err.value) == "data.h5: chunk 3 is corrupt (in loader worker 1)"


def test_stuck_worker_is_reported_and_stopped(monkeypatch):
    monkeypatch.setattr(loaders, "STALL_S", 3.0)
    loader = StreamLoader(Numbers(fail_at=2, how="hang"), as_read, num_workers=2)
    pids, start = set(), time.monotonic()
    with pytest.raises(WorkerError, match=r"delivered nothing for 3 s and were stopped.*NUM_WORKERS=0"):
        for x, _ in loader:
            pids.add(int(x[2]))
    assert time.monotonic() - start < 30
    assert len(pids) == 2 and all_exit(pids)


@pytest.mark.parametrize("how, message", [("kill", "killed by signal: Killed"),
                                          ("bus", r"(?s)Bus error.*DATA.NUM_WORKERS=0.*docker --shm-size")])
def test_dead_worker_is_reported_not_waited_for(how, message):
    start = time.monotonic()
    with pytest.raises(WorkerError, match=message):
        numbers(StreamLoader(Numbers(fail_at=2, how=how), as_read, num_workers=2))
    assert time.monotonic() - start < 30


def test_too_little_shared_memory_is_refused_up_front(monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30 - 2**20, 2**20))
    source = Numbers()
    source.batch_size, source.img_size = 256, 96   # 2 workers x 2 batches x 256 x 96 px images: 27 MiB
    with pytest.raises(WorkerError, match=r"need at least 27 MiB of shared memory but /dev/shm has 1 MiB free"
                                          r".*NUM_WORKERS=0"):
        numbers(StreamLoader(source, as_read, num_workers=2))


def test_command_line_names_a_worker_death_between_batches(monkeypatch, capsys):
    """The DataLoader reports a dead worker whenever it notices, also during a training step."""
    def bus_error(args):
        raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Bus error. It is possible that "
                           "dataloader's workers are out of shared memory.")

    monkeypatch.setattr(cli, "_summary", bus_error)
    assert cli.main(["summary", "--config", "lenet_base"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a loader worker failed: DataLoader worker (pid 123)") and "--shm-size" in err


KILLED_PARENT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_workers import Numbers, StreamLoader, as_read
loader = StreamLoader(Numbers(n=50), as_read, num_workers=2)
batches = iter(loader)
print(*[int(next(batches)[0][2]) for _ in range(2)], flush=True)   # mid-epoch, one batch from each worker
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_exit_when_the_training_process_is_killed():
    script = KILLED_PARENT.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(set(pids)) == 2
    assert all_exit(pids)


# --- what a worker failure says, and the shared-memory arithmetic -------------------------------------------

@pytest.mark.parametrize("text, shm", [
    ("DataLoader worker (pid 7) is killed by signal: Bus error.", True),
    ("DataLoader worker (pid 7) exited: unable to write to file </torch_1>: No space left on device", True),
    ("DataLoader worker (pid 7) failed: out of shared memory", True),
    ("DataLoader worker (pid 7) is killed by signal: Killed.", False),
])
def test_worker_errors_add_the_shared_memory_advice_only_for_shared_memory(text, shm):
    from nmeplib.data.loaders import SHM_ADVICE, worker_error

    got = str(worker_error(RuntimeError(text)))
    advice = f"\nmost likely too little shared memory in /dev/shm: {SHM_ADVICE}"
    assert got == f"a loader worker failed: {text}" + (advice if shm else "")
    assert worker_error(RuntimeError("CUDA out of memory")) is None


def test_worker_error_reads_the_innermost_worker_failure_only():
    from nmeplib.data.loaders import worker_error

    inner = RuntimeError("DataLoader worker (pid 7) is killed by signal: Bus error.")
    outer = RuntimeError("DataLoader worker (pid(s) 7) exited unexpectedly")
    outer.__cause__ = inner
    assert "Bus error" in str(worker_error(outer))
    unrelated = RuntimeError("DataLoader worker (pid(s) 7) exited unexpectedly")
    unrelated.__cause__ = RuntimeError("some other failure")
    assert str(worker_error(unrelated)) == "a loader worker failed: DataLoader worker (pid(s) 7) exited unexpectedly"


def test_shared_memory_is_enough_when_it_holds_two_batches_per_worker(monkeypatch):
    import shutil

    need = 3 * 2 * 4 * (3 * 8 * 8 + 16)   # 3 workers x 2 batches x 4 images of 8 px, plus label and index
    source = Numbers()
    source.batch_size, source.img_size = 4, 8
    for free, refused in ((need, False), (need - 1, True)):
        monkeypatch.setattr(shutil, "disk_usage", lambda path, free=free: shutil._ntuple_diskusage(2**30, 0, free))
        loader = StreamLoader(source, as_read, num_workers=3)
        if refused:
            with pytest.raises(WorkerError, match="shared memory"):
                numbers(loader)
        else:
            assert numbers(loader) == list(range(6))
        loader.close()


def test_stream_loader_defaults_augment_epoch_0_of_seed_0(path):
    from nmeplib.runtime import generator

    seen = []

    def record(images, gen):
        seen.append(torch.rand(1, generator=gen).item())
        return images
    StreamLoader(HDF5Blocks(path, "val", 7, shuffle=False), record, num_workers=0).__iter__().__next__()
    loader = StreamLoader(HDF5Blocks(path, "val", 7, shuffle=False), record, num_workers=0, seed=0)
    loader.set_epoch(0)
    next(iter(loader))
    assert seen[0] == seen[1] == torch.rand(1, generator=generator(torch.device("cpu"),
                                                                   loaders.augment_seed(0, 0))).item()
