"""The command line as a user runs it: exit codes, messages and files."""
import json
import subprocess
import sys

import pytest

from nmeplib.cli import main
from nmeplib.tracking import read_metrics


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nmeplib", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_train_then_resume_appends(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=2", "--output", str(out)]) == 0
    assert "best val acc" in capsys.readouterr().out
    assert main(["train", "--output", str(out), "--resume", "--set", "TRAIN.EPOCHS=3"]) == 0
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


def test_bad_key_exits_2_with_message(tmp_path):
    result = run("train", "--config", "digits_lenet", "--set", "TRAIN.LRR=1", "--output", str(tmp_path))
    assert result.returncode == 2
    assert "error: unknown config key 'TRAIN.LRR'" in result.stderr and "TRAIN.LR" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "nope"], "config 'nope' not found"),
    (["train", "--config", "lenet_base", "--set", "DATA.ROOT=/nonexistent", "DATA.DOWNLOAD=false"],
     "CIFAR-10 not found in /nonexistent"),
    (["train", "--resume", "--output", "/nonexistent/run"], "checkpoint not found"),
    (["predict", "--checkpoint", "/nonexistent.pt"], "checkpoint not found"),
    (["train", "--config", "digits_lenet", "--set", "TRAIN.OPTIMIZER=adagrad"], "TRAIN.OPTIMIZER must be one of"),
])
def test_errors_are_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_summary_prints_layers_and_total():
    result = run("summary", "--config", "alexnet_base")
    assert result.returncode == 0
    assert "57,044,810" in result.stdout and "9216" in result.stdout


def test_help_for_each_command():
    for command in ("train", "predict", "summary", "make-hdf5"):
        result = run(command, "--help")
        assert result.returncode == 0 and "usage" in result.stdout.lower()


def test_predict_writes_submission(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=1", "--output", str(out)]) == 0
    csv = tmp_path / "submission.csv"
    assert main(["predict", "--checkpoint", str(out / "checkpoint_best.pt"), "--out", str(csv)]) == 0
    assert "271 rows" in capsys.readouterr().out
    assert csv.read_text().splitlines()[0] == "Id,Category"
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
