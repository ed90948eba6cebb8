"""A training process killed with SIGKILL at any moment and started again with ``--resume``
ends exactly like a run that was never interrupted (CPU: bit-identical metrics)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nmeplib import checkpoint as ckpt
from nmeplib.tracking import read_metrics

# Runs ``python -m nmeplib ARGS`` after arranging for the process to SIGKILL itself at one point.
DRIVER = r'''
import os, signal, sys
point, epoch, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
import torch
import nmeplib.checkpoint as ckpt, nmeplib.engine as engine, nmeplib.tracking as tracking

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "mid-epoch":  # the 3rd optimizer step of epoch `epoch`
    real_step = engine.Schedule.step_batch
    def step_batch(self):
        real_step(self)
        if self.step == self.steps_per_epoch * (epoch - 1) + 3:
            die()
    engine.Schedule.step_batch = step_batch
elif point == "checkpoint-write":  # half-way through writing epoch `epoch`'s checkpoint
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == epoch:
            f.write(b"half a checkpoint")
            f.flush()
            die()
        real_save(obj, f, *args, **kwargs)
    torch.save = save
elif point in ("before-metrics", "after-metrics"):  # around epoch `epoch`'s metrics.jsonl line
    real_log = tracking.Tracker.log_epoch
    def log_epoch(self, row):
        if point == "before-metrics" and row["epoch"] == epoch:
            die()
        real_log(self, row)
        if row["epoch"] == epoch:
            die()
    tracking.Tracker.log_epoch = log_epoch
elif point == "before-best":  # between the checkpoint and checkpoint_best.pt of a new best epoch
    def link_best(folder):
        die()
    ckpt.link_best = link_best
    engine.ckpt.link_best = link_best

from nmeplib.cli import main
sys.exit(main(argv))
'''
KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
EPOCHS = 4


def train(tmp_path: Path, output: Path, *extra: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    command = ["train", "--config", "digits_lenet", "--output", str(output),
               "--set", f"TRAIN.EPOCHS={EPOCHS}", "DATA.AUGMENT=crop+flip", "TRAIN.WARMUP_EPOCHS=1", *extra]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    point, epoch = kill or ("none", 0)
    # on the CPU, where a resumed run is bit-identical; CUDA kernels may be nondeterministic
    env = {**os.environ, "WANDB_MODE": "disabled", "NMEPLIB_PROGRESS": "0", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(driver), point, str(epoch), *command], capture_output=True,
                          text=True, timeout=240, env=env)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_at_any_moment_then_resume_matches_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    done = train(tmp_path, whole)
    assert done.returncode == 0, done.stderr
    expected = [{k: row[k] for k in KEYS} for row in read_metrics(whole)]

    run = tmp_path / "killed"
    kills = [("mid-epoch", 1), ("checkpoint-write", 2), ("after-metrics", 2), ("mid-epoch", 3),
             ("before-best", 0), ("before-metrics", EPOCHS)]
    for number, kill in enumerate(kills):
        result = train(tmp_path, run, *(["--resume"] if number else []), kill=kill)
        assert result.returncode in (-signal.SIGKILL, 0), f"{kill}: {result.stderr}"
    final = train(tmp_path, run, "--resume")
    assert final.returncode == 0, final.stderr

    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert [{k: row[k] for k in KEYS} for row in rows] == expected  # bit-identical on the CPU
    best = max(rows, key=lambda r: r["val_acc"])
    assert ckpt.load_checkpoint(run / ckpt.BEST)["epoch"] == best["epoch"]
    assert ckpt.load_checkpoint(run / ckpt.LAST)["epoch"] == EPOCHS
    assert ckpt.read_json(run / ckpt.SUMMARY)["best_epoch"] == best["epoch"]
    assert not [p.name for p in run.iterdir() if p.name.endswith("tmp")]
