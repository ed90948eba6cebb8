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


def test_old_course_flags_are_aliases(tmp_path, capsys):
    """--cfg, --opts KEY VALUE, --batch-size and --data-path as the old main.py took them."""
    out = tmp_path / "run"
    assert main(["train", "--cfg", "digits_lenet", "--opts", "TRAIN.EPOCHS", "1", "TRAIN.OPTIMIZER.NAME", "sgd",
                 "--set", "SEED=4", "--batch-size", "128", "--data-path", str(tmp_path / "unused"),
                 "--output", str(out)]) == 0
    stored = json.loads((out / "summary.json").read_text())["config"]
    assert (stored["TRAIN"]["EPOCHS"], stored["TRAIN"]["OPTIMIZER"], stored["SEED"]) == (1, "sgd", 4)
    assert stored["DATA"]["BATCH_SIZE"] == 128 and stored["DATA"]["ROOT"] == str(tmp_path / "unused")
    capsys.readouterr()

    # --eval validates a checkpoint (the old EVAL_MODE): --resume CHECKPOINT, a run folder, or --output
    for args in (["--resume", str(out / "checkpoint_best.pt")], ["--resume", str(out)], ["--output", str(out)]):
        assert main(["train", "--eval", *args]) == 0
        assert "val acc" in capsys.readouterr().out
    # --resume PATH continues the run in PATH's folder
    assert main(["train", "--resume", str(out / "checkpoint_last.pt"), "--opts", "TRAIN.EPOCHS", "2"]) == 0
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2]
    assert main(["train", "--resume", "--output", str(out), "--set", "TRAIN.EPOCHS=3"]) == 0  # the flag alone
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


@pytest.mark.parametrize("args, message", [
    (["train", "--eval"], "--eval needs the checkpoint"),
    (["train", "--throughput"], "--throughput needs --config"),
    (["train", "--resume", "/nonexistent/ckpt_best.pth"], "no such checkpoint or run folder"),
    (["train", "--cfg", "digits_lenet", "--opts", "SAVE_FREQ", "1", "TRAIN.EPOCHZ", "1"],
     "unknown config key 'TRAIN.EPOCHZ'"),
])
def test_old_flag_errors_are_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_old_checkpoint_and_clashing_output_refused(tmp_path, capsys):
    old = tmp_path / "output" / "ckpt_best.pth"
    old.parent.mkdir()
    import torch

    torch.save({"model": {}, "epoch": 3, "max_accuracy": 50.0}, old)
    assert main(["train", "--resume", str(old)]) == 2
    assert "not an nmeplib checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", str(old.parent), "--output", str(tmp_path / "elsewhere")]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_resume_from_a_real_checkpoint_under_another_name_never_trains_from_scratch(tmp_path, capsys):
    run, moved = tmp_path / "run", tmp_path / "moved"
    assert main(["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=1", "--output", str(run)]) == 0
    moved.mkdir()
    (run / "checkpoint_last.pt").rename(moved / "ckpt_best.pth")
    capsys.readouterr()
    assert main(["train", "--config", "digits_lenet", "--resume", str(moved / "ckpt_best.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume {moved / 'ckpt_best.pth'}: a run continues from its folder's "
                          f"checkpoint_last.pt, and {moved} has none") and err.count("\n") == 1
    assert sorted(p.name for p in moved.iterdir()) == ["ckpt_best.pth"]   # nothing trained there


def test_a_file_that_is_not_a_checkpoint_says_so_in_words(tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello world")
    assert main(["train", "--resume", str(junk)]) == 2
    assert capsys.readouterr().err == (f"error: {junk} is not a readable nmeplib checkpoint: it is not a file "
                                       f"torch.save wrote (another kind of file, or damaged); give the run's "
                                       f"checkpoint_last.pt or its folder\n")


def test_opts_needs_pairs_and_throughput_runs_for_the_config():
    result = run("train", "--cfg", "digits_lenet", "--opts", "TRAIN.EPOCHS")
    assert result.returncode == 2 and "KEY VALUE pairs" in result.stderr
    result = run("train", "--cfg", "digits_lenet", "--throughput", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "lenet, 32 px, adamw" in result.stdout and "img_per_s" in result.stdout


@pytest.mark.parametrize("command, args, hint", [
    ("train", ["--config", "digits_lenet"], "interrupted; continue the run with the same command and --resume\n"),
    ("summary", ["--config", "digits_lenet"], "interrupted\n"),
])
def test_ctrl_c_exits_130_and_says_how_to_go_on(monkeypatch, capsys, command, args, hint):
    import nmeplib.cli as cli

    def interrupted(_):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, f"_{command}", interrupted)
    assert main([command, *args]) == 130
    assert capsys.readouterr().err == hint
