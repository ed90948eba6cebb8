"""Where the code runs: how many loader workers a process gets."""
from __future__ import annotations

import random
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nmeplib import runtime
from nmeplib.config import ConfigError, load_config
from nmeplib.data import build_loader
from nmeplib.workbook.settings import make_demo_hdf5


@pytest.fixture
def cores(monkeypatch):
    monkeypatch.setattr(runtime, "_WARNED", set())
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_usable_cpus_are_shared_among_the_machines_ranks(cores, monkeypatch):
    assert runtime.usable_cpus() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert runtime.usable_cpus() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert runtime.usable_cpus() == 1


def test_workers_fitted_to_the_cores_and_said_once(cores, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [runtime.worker_count(n) for n in (0, 2, 4)] == [0, 2, 4]   # no warning
    hdf5 = make_demo_hdf5(tmp_path / "demo.hdf5", img_size=8)
    config = load_config("resnet18_medium_imagenet", [f"DATA.ROOT={hdf5}", "DATA.IMG_SIZE=8", "DATA.BATCH_SIZE=4"])
    assert config.DATA.NUM_WORKERS == 8    # as shipped
    with pytest.warns(RuntimeWarning, match=r"DATA\.NUM_WORKERS=8 but this process may use 4 CPU core\(s\); "
                                            r"the loader starts 4 worker\(s\)") as caught:
        loader = build_loader(config, "train", device="cpu")
    assert len(caught) == 1 and loader.num_workers == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # the second time it says nothing
        assert build_loader(config, "val", device="cpu").num_workers == 4


def test_a_small_machine_reads_in_process_when_asked_for_more_workers(cores, monkeypatch):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.worker_count(2) == 2             # as many as cores: as asked
    with pytest.warns(RuntimeWarning, match=r"may use 2 CPU core\(s\); the loader reads in this process"):
        assert runtime.worker_count(8) == 0


def test_a_progress_bar_shown_false_stays_off_where_one_would_show(monkeypatch):
    monkeypatch.setattr(runtime, "in_notebook", lambda: True)
    monkeypatch.delenv("NMEPLIB_PROGRESS", raising=False)
    assert runtime.progress(range(3)).disable is False
    assert runtime.progress(range(3), show=False).disable is True


def test_a_progress_bar_redraws_at_most_once_a_second(monkeypatch):
    monkeypatch.setattr(runtime, "in_notebook", lambda: True)
    monkeypatch.delenv("NMEPLIB_PROGRESS", raising=False)
    bar = runtime.progress(range(3))
    assert bar.mininterval == 1.0
    bar.close()


def test_default_device_is_the_gpu_of_this_process_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.default_device() == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert runtime.default_device() == torch.device("cuda", 0)


@pytest.mark.parametrize("count, visible", [(1, "only 1 GPU is visible"), (2, "only 2 GPUs are visible")])
def test_more_processes_than_gpus_say_how_many_to_start(monkeypatch, count, visible):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    runtime.check_gpus_for_processes(count, local_rank=count - 1)   # one per GPU: fine
    with pytest.raises(ConfigError) as err:
        runtime.check_gpus_for_processes(3, local_rank=2)
    assert str(err.value) == (
        f"3 processes on this machine need one GPU each, but {visible} (process LOCAL_RANK 2): "
        f"start at most {count} (torchrun --nproc_per_node={count}, or fit(config, nproc={count})), "
        f"or set CUDA_VISIBLE_DEVICES= (empty) to train on the CPU with gloo")


class RecordingModel:
    def __init__(self):
        self.moves = []

    def to(self, *args, **kwargs):
        self.moves.append((args, kwargs))
        return self


def test_a_model_placed_on_cuda_trains_channels_last_with_autotuning(monkeypatch):
    for flags, name in ((torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "allow_tf32"),
                        (torch.backends.cuda.matmul, "allow_tf32")):
        monkeypatch.setattr(flags, name, False)
    model = RecordingModel()
    assert runtime.place_model(model, torch.device("cpu")) is model
    assert model.moves == [((torch.device("cpu"),), {})]
    assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
    cuda = torch.device("cuda", 0)
    assert runtime.place_model(model, cuda) is model
    assert model.moves[1:] == [((cuda,), {}), ((), {"memory_format": torch.channels_last})]
    assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    def draws(seed):
        runtime.seed_everything(seed)
        return random.random(), np.random.rand(), torch.rand(1).item()

    assert draws(5) == draws(5)
    assert all(a != b for a, b in zip(draws(5), draws(6)))
    assert draws(2**32 + 5)[1] == draws(5)[1]   # numpy takes the seed modulo 2**32


def test_peak_memory_in_mib(monkeypatch):
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**20)
    assert runtime.peak_memory_mb(torch.device("cuda", 0)) == 3.0
    monkeypatch.setattr(runtime.resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=5 * 2**20))
    monkeypatch.setattr(runtime.sys, "platform", "linux")    # ru_maxrss in KiB
    assert runtime.peak_memory_mb(torch.device("cpu")) == 5 * 2**10
    monkeypatch.setattr(runtime.sys, "platform", "darwin")   # ru_maxrss in bytes
    assert runtime.peak_memory_mb(torch.device("cpu")) == 5.0


def test_release_memory_collects_garbage_and_empties_the_cuda_cache_only_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "gc", SimpleNamespace(collect=lambda: calls.append("collect")))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    runtime.release_memory(torch.device("cpu"))
    assert calls == ["collect"]
    runtime.release_memory(torch.device("cuda", 0))
    assert calls == ["collect", "collect", "empty_cache"]
