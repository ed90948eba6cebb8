"""DistributedDataParallel on the CPU (gloo): two processes on digits against one."""
import os
import signal
import subprocess
import sys
import time

import pytest

from nmeplib.config import load_config
from nmeplib.distributed import launch, torchrun_command
from nmeplib.engine import fit
from nmeplib.tracking import read_metrics

pytestmark = pytest.mark.skipif(not __import__("torch").distributed.is_available(), reason="no torch.distributed")
EPOCHS = 6


def digits(out, batch_size, *extra):
    return load_config("digits_lenet", [f"OUTPUT={out}", f"TRAIN.EPOCHS={EPOCHS}", f"DATA.BATCH_SIZE={batch_size}",
                                        "MODEL.ACTIVATION=relu", "TRAIN.LR=3e-3", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with batch 32 and two processes with 16 each: the same global batch."""
    root = tmp_path_factory.mktemp("ddp")
    os.environ["WANDB_MODE"] = "disabled"
    single = fit(digits(root / "one", 32))
    seen = []
    double = launch(digits(root / "two", 16), nproc=2, callbacks=[seen.append])
    return root, single, double, seen


def test_two_processes_match_one(runs):
    _, single, double, _ = runs
    assert len(double) == EPOCHS
    assert abs(single[-1]["val_acc"] - double[-1]["val_acc"]) <= 3.0, (single[-1], double[-1])
    assert double[-1]["val_acc"] >= 85


def test_metrics_written_once_per_epoch(runs):
    root, _, double, seen = runs
    assert [r["epoch"] for r in read_metrics(root / "two")] == list(range(1, EPOCHS + 1))
    assert [r["epoch"] for r in seen] == list(range(1, EPOCHS + 1))  # the launcher's live callbacks


def test_submission_from_two_ranks_equals_one(runs, tmp_path):
    root = runs[0]
    checkpoint = root / "two" / "checkpoint_best.pt"
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    subprocess.run([sys.executable, "-m", "nmeplib", "predict", "--checkpoint", str(checkpoint), "--out", str(one)],
                   check=True, timeout=300)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nmeplib",
               "predict", "--checkpoint", str(checkpoint), "--out", str(two)]
    subprocess.run(command, check=True, timeout=300)
    assert one.read_text() == two.read_text()
    assert len(one.read_text().splitlines()) == 1 + 271


def test_resume_multi_rank(runs):
    root = runs[0]
    config = digits(root / "two", 16, f"TRAIN.EPOCHS={EPOCHS + 1}")
    history = launch(config, nproc=2, resume=True)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 2))


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
engine.fit(load_config("digits_lenet", ["OUTPUT=" + sys.argv[1], "TRAIN.EPOCHS=50"]))
"""


def test_a_rank_raising_ends_the_job(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "rank 1 broke" in result.stdout + result.stderr


def test_a_killed_rank_ends_the_job(tmp_path):
    out = tmp_path / "run"
    config = digits(out, 16, "TRAIN.EPOCHS=100")
    out.mkdir()
    (out / "config.yaml").write_text(__import__("yaml").safe_dump(config.to_dict()))
    proc = subprocess.Popen(torchrun_command(out / "config.yaml", 2, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.5)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2
        os.kill(int(workers[-1]), signal.SIGKILL)
        assert proc.wait(timeout=90) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
