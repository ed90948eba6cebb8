"""Launching torchrun from Python, with torchrun replaced by a stand-in that plays a run's output."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
import yaml

from nmeplib.config import ConfigError, load_config
from nmeplib.distributed import launch, torchrun_command
from nmeplib.files import read_metrics, write_jsonl

CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def row(epoch, acc):
    return {"epoch": epoch, "val_acc": acc}


OLD_RUN = [row(1, 10.0), row(2, 20.0), row(3, 30.0)]


class FakeTorchrun:
    """Stands in for ``subprocess.Popen``: records the command and its keywords, then plays ``steps``,
    each a line of output or a list of rows that becomes the whole metrics.jsonl. Before each line it
    notes how many rows the launcher's callbacks had received (``seen_before``)."""

    def __init__(self, metrics_path, steps, seen=(), returncode=0):
        self.metrics_path, self.steps, self.seen, self.exit_status = metrics_path, steps, seen, returncode
        self.seen_before: list[int] = []
        self.command = self.kwargs = None
        self.returncode = None
        self.terminated = False

    def __call__(self, command, **kwargs):
        self.command, self.kwargs = command, kwargs
        self.stdout = self._play()
        return self

    def _play(self):
        for step in self.steps:
            if isinstance(step, str):
                self.seen_before.append(len(self.seen))
                yield step + "\n"
            else:
                write_jsonl(self.metrics_path, step)

    def wait(self, timeout=None):
        self.returncode = self.exit_status
        return self.returncode

    def terminate(self):
        self.terminated = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def config_for(out):
    return load_config("digits_lenet", [f"OUTPUT={out}", "TRAIN.EPOCHS=2", "WANDB.MODE=disabled"])


def test_torchrun_command_is_the_line_a_user_would_type(tmp_path):
    config_path, out = tmp_path / "run" / "config.yaml", tmp_path / "run"
    start = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
             "-m", "nmeplib", "train", "--config", str(config_path), "--output", str(out)]
    assert torchrun_command(config_path, 4, out) == start
    assert torchrun_command(config_path, 4, out, resume=True) == start + ["--resume"]
    assert torchrun_command(config_path, 4, out, overwrite=True) == start + ["--overwrite"]
    assert torchrun_command(config_path, 4, out, resume=True, overwrite=True) == start + ["--resume", "--overwrite"]


def test_launch_runs_torchrun_on_the_saved_config(monkeypatch, tmp_path, capsys):
    out = tmp_path / "run"
    config = config_for(out)
    fake = FakeTorchrun(out / "metrics.jsonl", ["rank 0 starting", [row(1, 51.0)], "epoch 1 done"])
    monkeypatch.setattr(subprocess, "Popen", fake)
    history = launch(config, nproc=1, overwrite=True, env=CPU_ONLY)
    assert history == [row(1, 51.0)]
    assert fake.command == torchrun_command(out / "config.yaml", 1, out, overwrite=True)
    assert yaml.safe_load((out / "config.yaml").read_text()) == config.to_dict()
    assert fake.kwargs["env"]["PYTHONUNBUFFERED"] == "1" and fake.kwargs["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert fake.kwargs["stdout"] == subprocess.PIPE and fake.kwargs["stderr"] == subprocess.STDOUT
    assert capsys.readouterr().out == f"running: {' '.join(fake.command)}\nrank 0 starting\nepoch 1 done\n"


def test_launch_needs_at_least_one_process(monkeypatch, tmp_path):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("torchrun started"))
    with pytest.raises(ConfigError, match=r"^nproc must be at least 1, got 0$"):
        launch(config_for(tmp_path / "run"), nproc=0, env=CPU_ONLY)


def test_launch_shows_the_command_before_torchrun_starts(monkeypatch, tmp_path):
    """Printed to a log file (block-buffered), the command line is there while the job runs."""
    out = tmp_path / "run"
    log = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(log, encoding="utf-8", line_buffering=False))
    written_at_start = []

    def popen(command, **kwargs):
        written_at_start.append(log.getvalue().decode())
        return FakeTorchrun(out / "metrics.jsonl", [[row(1, 51.0)], "epoch 1"])(command, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    launch(config_for(out), nproc=2, env=CPU_ONLY)
    assert written_at_start == [f"running: {' '.join(torchrun_command(out / 'config.yaml', 2, out))}\n"]


def test_launch_forwards_each_new_row_once_as_it_lands(monkeypatch, tmp_path):
    """An older run's metrics.jsonl in the folder is not forwarded; each row the new run writes is,
    by the time torchrun prints its next line."""
    out = tmp_path / "run"
    out.mkdir()
    write_jsonl(out / "metrics.jsonl", OLD_RUN)
    seen = []
    fake = FakeTorchrun(out / "metrics.jsonl", ["starting", "loading data", [row(1, 51.0)], "epoch 1",
                                                [row(1, 51.0), row(2, 52.0)], "epoch 2", "saving"], seen)
    monkeypatch.setattr(subprocess, "Popen", fake)
    history = launch(config_for(out), nproc=2, callbacks=[seen.append], env=CPU_ONLY)
    assert seen == history == [row(1, 51.0), row(2, 52.0)]
    assert fake.seen_before == [0, 0, 0, 1, 2]


def test_a_resumed_launch_forwards_only_the_epochs_it_adds(monkeypatch, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    write_jsonl(out / "metrics.jsonl", OLD_RUN[:2])
    seen = []
    fake = FakeTorchrun(out / "metrics.jsonl", ["resuming", [*OLD_RUN[:2], row(3, 33.0)], "epoch 3"], seen)
    monkeypatch.setattr(subprocess, "Popen", fake)
    history = launch(config_for(out), nproc=2, resume=True, callbacks=[seen.append], env=CPU_ONLY)
    assert seen == [row(3, 33.0)]
    assert history == [*OLD_RUN[:2], row(3, 33.0)]
    assert fake.command[-1] == "--resume"


def test_a_run_whose_metrics_read_back_unchanged_is_forwarded_when_it_ends(monkeypatch, tmp_path):
    """metrics.jsonl rewritten with the same size within the file system's time resolution looks
    untouched while the job runs; once torchrun has succeeded its rows are the run's."""
    out = tmp_path / "run"
    out.mkdir()
    write_jsonl(out / "metrics.jsonl", OLD_RUN)
    seen = []
    monkeypatch.setattr(subprocess, "Popen", FakeTorchrun(out / "metrics.jsonl", ["starting", "done"], seen))
    assert launch(config_for(out), nproc=2, callbacks=[seen.append], env=CPU_ONLY) == OLD_RUN
    assert seen == OLD_RUN
    write_jsonl(out / "metrics.jsonl", OLD_RUN)
    seen.clear()
    assert launch(config_for(out), nproc=2, resume=True, callbacks=[seen.append], env=CPU_ONLY) == OLD_RUN
    assert seen == []   # a resumed run's earlier rows are not handed out again


def test_a_failed_launch_raises_with_the_exit_status(monkeypatch, tmp_path):
    out = tmp_path / "run"
    monkeypatch.setattr(subprocess, "Popen", FakeTorchrun(out / "metrics.jsonl", ["Traceback ..."], returncode=3))
    with pytest.raises(RuntimeError) as err:
        launch(config_for(out), nproc=2, env=CPU_ONLY)
    assert str(err.value) == ("distributed training on 2 processes failed (torchrun exit status 3); "
                              "the failing rank's error is in the output above")
