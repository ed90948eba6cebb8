"""DistributedDataParallel on the CPU (gloo): two processes on digits against one.

Every multi-process run here is on the CPU, also on a machine with GPUs: the processes get
``CUDA_VISIBLE_DEVICES=`` (empty), since a one-GPU machine cannot give two processes a GPU
each (NCCL would fail or wait), and gloo on the CPU gives the same numbers everywhere.
Every subprocess has a timeout, so a stuck rank fails the test instead of hanging it.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from nmeplib import checkpoint as ckpt
from nmeplib.config import ConfigError, from_dict, load_config
from nmeplib.data.build import build_loader
from nmeplib.data.loaders import TensorLoader
from nmeplib.distributed import launch, torchrun_command
from nmeplib.engine import fit, validate
from nmeplib.models import build_model_from_config
from nmeplib.submission import predict, write_submission
from nmeplib.tracking import read_metrics

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
EPOCHS = 6
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}   # the processes train on the CPU with gloo
CPU = torch.device("cpu")


def cpu_env() -> dict:
    return {**os.environ, **CPU_ONLY}


def digits(out, batch_size, *extra):
    return load_config("digits_lenet", [f"OUTPUT={out}", f"TRAIN.EPOCHS={EPOCHS}", f"DATA.BATCH_SIZE={batch_size}",
                                        "MODEL.ACTIVATION=relu", "TRAIN.LR=3e-3", "WANDB.MODE=disabled", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with batch 32 and two processes with 16 each: the same global batch."""
    root = tmp_path_factory.mktemp("ddp")
    single = fit(digits(root / "one", 32), device=CPU)
    seen = []
    double = launch(digits(root / "two", 16), nproc=2, callbacks=[seen.append], env=CPU_ONLY)
    return root, single, double, seen


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_match_one(runs):
    _, single, double, _ = runs
    assert len(double) == EPOCHS
    assert abs(single[-1]["val_acc"] - double[-1]["val_acc"]) <= 3.0, (single[-1], double[-1])
    assert double[-1]["val_acc"] >= 85


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_metrics_written_once_per_epoch(runs):
    root, _, double, seen = runs
    assert [r["epoch"] for r in read_metrics(root / "two")] == list(range(1, EPOCHS + 1))
    assert seen == double   # the launcher's live callbacks: every row of metrics.jsonl, once, in order


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_validation_of_two_processes_equals_one(runs):
    """The validation loss and accuracy rank 0 reports (all-reduced over both ranks' shards) are
    those of one process validating the same weights on the whole split."""
    root, _, double, _ = runs
    state = ckpt.load_checkpoint(root / "two" / ckpt.LAST, map_location=CPU)
    config = from_dict(state["config"])
    model = build_model_from_config(config, state["num_classes"], CPU)
    model.load_state_dict(state["model"])
    val = validate(model, build_loader(config, "val", device=CPU), CPU)
    assert state["epoch"] == EPOCHS and val["count"] == 269
    assert val["acc"] == pytest.approx(double[-1]["val_acc"], abs=1e-9)
    assert val["loss"] == pytest.approx(double[-1]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("shuffle", [True, False])
def test_rank_shards_are_disjoint_and_cover_the_split(shuffle):
    """Training (shuffled, equal shares) and evaluation (contiguous) shards of two ranks."""
    n, batch = 1257, 4   # the digits training split; 628 per rank is a whole number of batches
    images, labels = torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.arange(n)
    shards = []
    for epoch in (1, 2):
        per_rank = []
        for rank in range(2):
            loader = TensorLoader(images, labels, batch, lambda x, gen: x.float(), shuffle=shuffle, drop_last=shuffle,
                                  seed=3, rank=rank, world_size=2)
            loader.set_epoch(epoch)
            per_rank.append(torch.cat([y for _, y in loader]).tolist())
            assert len(per_rank[-1]) == loader.num_samples == (len(loader) * batch if shuffle else len(per_rank[-1]))
        first, second = map(set, per_rank)
        assert len(first) == len(per_rank[0]) and len(second) == len(per_rank[1])   # no repeats within a rank
        assert not first & second                                                # disjoint
        if shuffle:   # equal shares of the epoch's permutation: together all but n % 2 images
            assert len(per_rank[0]) == len(per_rank[1]) == n // 2
            assert len(first | second) == n - 1
        else:         # contiguous: rank 0 then rank 1 is the split in order
            assert per_rank[0] + per_rank[1] == list(range(n))
        shards.append(per_rank)
    if shuffle:
        assert shards[0] != shards[1]   # a new permutation every epoch


def test_build_loader_shards_by_rank(monkeypatch):
    import nmeplib.data.build as build

    config = load_config("digits_lenet", ["DATA.BATCH_SIZE=16"])
    sizes = []
    for rank in range(2):
        monkeypatch.setattr(build, "rank_and_world", lambda rank=rank: (rank, 2))
        train, val = build_loader(config, "train", device=CPU), build_loader(config, "val", device=CPU)
        assert (train.rank, train.world_size, val.rank, val.world_size) == (rank, 2, rank, 2)
        sizes.append((train.num_samples, val.num_samples))
    assert sizes == [(628, 134), (628, 135)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_submission_from_two_ranks_equals_one(runs, tmp_path):
    root = runs[0]
    checkpoint = root / "two" / "checkpoint_best.pt"
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    result = predict(checkpoint, device=CPU)   # one process, what `python -m nmeplib predict` writes
    write_submission(result["predictions"], one, result["num_images"], result["num_classes"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nmeplib",
               "predict", "--checkpoint", str(checkpoint), "--out", str(two)]
    subprocess.run(command, check=True, timeout=120, env=cpu_env())
    assert one.read_text() == two.read_text()
    assert len(one.read_text().splitlines()) == 1 + 271


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_multi_rank(runs):
    root = runs[0]
    config = digits(root / "two", 16, f"TRAIN.EPOCHS={EPOCHS + 1}")
    seen = []
    history = launch(config, nproc=2, resume=True, callbacks=[seen.append], env=CPU_ONLY)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 2))
    assert [r["epoch"] for r in seen] == [EPOCHS + 1]   # only the new epoch reaches the callbacks


FAILING_RANK = """
import sys
import nmeplib.engine as engine
from nmeplib.config import load_config
from nmeplib.runtime import init_distributed, rank_and_world
init_distributed()
if rank_and_world()[0] == 1:
    def broken(*args, **kwargs):
        raise RuntimeError("rank 1 broke")
    engine.validate = broken
engine.fit(load_config("digits_lenet", ["OUTPUT=" + sys.argv[1], "TRAIN.EPOCHS=50", "WANDB.MODE=disabled"]))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_rank_raising_ends_the_job(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=100, env=cpu_env())
    assert result.returncode != 0
    assert "rank 1 broke" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_rank_ends_the_job(tmp_path):
    out = tmp_path / "run"
    config = digits(out, 16, "TRAIN.EPOCHS=100")
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    proc = subprocess.Popen(torchrun_command(out / "config.yaml", 2, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cpu_env())
    try:
        deadline = time.time() + 60
        while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert (out / "metrics.jsonl").exists(), f"no epoch finished in 60 s (torchrun status {proc.poll()})"
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True,
                                 timeout=10).stdout.split()
        assert len(workers) == 2, workers
        os.kill(int(workers[-1]), signal.SIGKILL)
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def pretend_gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("set_device on a missing GPU"))
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda *args, **kwargs: pytest.fail("joined a process group that cannot form"))


@pytest.mark.parametrize("local_rank", [0, 1])
def test_more_processes_than_gpus_end_at_once(monkeypatch, local_rank):
    """torchrun --nproc_per_node=2 on a one-GPU machine: every rank stops with what to do."""
    from nmeplib.runtime import init_distributed

    pretend_gpus(monkeypatch, 1)
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": str(local_rank),
                        "LOCAL_RANK": str(local_rank)}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        init_distributed()
    message = str(err.value)
    assert "only 1 GPU" in message and "--nproc_per_node=1" in message and "CUDA_VISIBLE_DEVICES=" in message


def test_more_processes_than_gpus_is_a_command_line_error(monkeypatch, capsys):
    from nmeplib.cli import main

    pretend_gpus(monkeypatch, 1)
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    assert main(["train", "--config", "digits_lenet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "only 1 GPU" in err and "Traceback" not in err


def test_launch_refuses_more_processes_than_gpus(monkeypatch, tmp_path):
    pretend_gpus(monkeypatch, 1)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("torchrun started"))
    with pytest.raises(ConfigError, match=r"only 1 GPU.*nproc=1"):
        launch(digits(tmp_path / "run", 16), nproc=2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    from nmeplib import distributed
    assert distributed._uses_gpus({**os.environ, **CPU_ONLY}) is False   # hidden GPUs: gloo on the CPU, allowed


FAKE_TORCHRUN = """
import json, os, sys, time
out = sys.argv[1]
def write(rows):
    tmp = os.path.join(out, ".metrics.tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(row) + "\\n" for row in rows)
    os.replace(tmp, os.path.join(out, "metrics.jsonl"))
print("starting", flush=True)            # the folder still holds an older run's metrics here
rows = []
for epoch in (1, 2):
    rows.append({"epoch": epoch, "val_acc": 50.0 + epoch})
    write(rows)
    print(f"finished {epoch}", flush=True)   # not an 'epoch ...' line: the rows come from metrics.jsonl
time.sleep(float(sys.argv[2]))
"""


def fake_torchrun(monkeypatch, tmp_path, sleep_s):
    script = tmp_path / "fake_torchrun.py"
    script.write_text(FAKE_TORCHRUN)
    from nmeplib import distributed

    monkeypatch.setattr(distributed, "torchrun_command",
                        lambda config_path, nproc, out, *args: [sys.executable, str(script), str(out), str(sleep_s)])


def test_launch_forwards_the_rows_of_metrics_jsonl(monkeypatch, tmp_path):
    fake_torchrun(monkeypatch, tmp_path, 0)
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("".join(f'{{"epoch": {e}, "val_acc": 1.0}}\n' for e in (1, 2, 3)))
    seen = []
    history = launch(digits(out, 16), nproc=2, callbacks=[seen.append], env=CPU_ONLY)
    assert seen == history == [{"epoch": 1, "val_acc": 51.0}, {"epoch": 2, "val_acc": 52.0}]


def test_an_error_in_a_callback_stops_the_job(monkeypatch, tmp_path):
    fake_torchrun(monkeypatch, tmp_path, 120)

    def stop(row):
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        launch(digits(tmp_path / "run", 16), nproc=2, callbacks=[stop], env=CPU_ONLY)
    assert time.monotonic() - start < 60   # the job was ended, not waited for
