"""Where the code runs: how many loader workers a process gets."""
from __future__ import annotations

import warnings

import pytest

from nmeplib import runtime
from nmeplib.config import load_config
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
