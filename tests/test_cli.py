"""The command line as a user runs it: exit codes, messages and files."""
import json
import subprocess
import sys

import pytest

from nmeplib.cli import PASSTHROUGH, main

PASSTHROUGH_COMMANDS = list(PASSTHROUGH)
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


def _parsers_shown_by_help(monkeypatch, argv: list[str]) -> list:
    """The parsers whose help ``main(argv)`` prints (help printing is replaced by recording the parser)."""
    import argparse

    shown = []

    def record(parser, file=None):
        shown.append(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", record)
    with pytest.raises(SystemExit) as end:
        main(argv)
    assert end.value.code == 0
    return shown


@pytest.mark.parametrize("command", ["train", "predict", "summary", *PASSTHROUGH_COMMANDS, "check worksheet"])
def test_help_for_each_command_names_it_and_says_what_each_argument_is(monkeypatch, command):
    [parser] = _parsers_shown_by_help(monkeypatch, [*command.split(), "--help"])
    assert parser.prog == f"python -m nmeplib {command}"
    assert parser.description or command in ("train", "predict", "summary")
    undocumented = [a.dest for a in parser._actions if not a.help and a.dest not in ("help", "set", "opts")]
    if command not in ("train", "predict", "summary"):   # the old course's flags keep their old, bare form
        assert undocumented == []


def test_the_top_level_help_lists_every_command_with_what_it_does(capsys):
    import argparse

    from nmeplib import cli

    [commands] = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in commands._choices_actions}
    assert set(helps) == {"train", "predict", "summary", *cli.PASSTHROUGH}
    assert all(helps[name] == text for name, (_, text) in cli.PASSTHROUGH.items())
    assert all(helps.values())


def test_module_docstring_names_every_command():
    import argparse

    from nmeplib import cli

    [commands] = [action.choices for action in cli.parser()._actions if isinstance(action, argparse._SubParsersAction)]
    assert set(commands) >= set(cli.PASSTHROUGH)
    assert [name for name in commands if f"``{name}``" not in cli.__doc__] == []


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


def _junk(path):
    """Files that are not checkpoints, each the way a user meets one."""
    import pickle
    import zipfile

    import numpy as np
    import torch

    (path / "text.pth").write_bytes(b"hello world")
    (path / "number.pth").write_bytes(pickle.dumps(174812789))
    with zipfile.ZipFile(path / "archive.pth", "w") as z:
        z.writestr("a", "b")
    np.save(path / "array.npy", np.zeros(3))
    (path / "array.npy").rename(path / "array.pth")
    torch.save({"model": {"w": torch.zeros(10_000)}}, path / "whole.pt")
    (path / "cut.pth").write_bytes((path / "whole.pt").read_bytes()[:20_000])
    return ["text.pth", "number.pth", "archive.pth", "array.pth", "cut.pth"]


def test_a_file_that_is_not_a_checkpoint_says_so_in_words(tmp_path, capsys):
    for name in _junk(tmp_path):
        junk = tmp_path / name
        assert main(["train", "--resume", str(junk)]) == 2
        assert capsys.readouterr().err == (
            f"error: {junk} is not a readable nmeplib checkpoint: it is not a whole file written by torch.save "
            f"(another kind of file, or one damaged or cut short); give a checkpoint nmeplib's training wrote "
            f"(a run's checkpoint_last.pt or checkpoint_best.pt)\n"), name


def _run_with_checkpoints(tmp_path):
    """A 2-epoch digits run whose folder also keeps a copy of its epoch-1 checkpoint as ckpt_best.pth."""
    run = tmp_path / "run"
    assert main(["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=1", "--output", str(run)]) == 0
    (run / "ckpt_best.pth").write_bytes((run / "checkpoint_last.pt").read_bytes())
    assert main(["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=2", "--resume", "--output",
                 str(run)]) == 0
    (run / "copy.pt").write_bytes((run / "checkpoint_last.pt").read_bytes())
    return run


def test_resume_from_an_earlier_checkpoint_is_refused_and_a_copy_of_the_last_continues(tmp_path, capsys):
    run = _run_with_checkpoints(tmp_path)
    last = (run / "checkpoint_last.pt").read_bytes()
    capsys.readouterr()
    args = ["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=3", "--resume"]
    assert main([*args, str(run / "ckpt_best.pth")]) == 2
    assert capsys.readouterr().err == (
        f"error: --resume {run / 'ckpt_best.pth'} holds epoch 1 of the run in {run}, whose checkpoint_last.pt "
        f"holds epoch 2; a run continues from its last epoch, so this would drop epoch 2: give --resume {run} to "
        f"continue from epoch 2, or copy the file to NEW/checkpoint_last.pt and give --resume NEW to continue "
        f"from epoch 1 in another folder\n")
    assert (run / "checkpoint_last.pt").read_bytes() == last and len(read_metrics(run)) == 2
    assert main([*args, str(run / "copy.pt")]) == 0   # the very point the run is at: it continues
    assert "from its checkpoint_last.pt" in capsys.readouterr().out
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]


def _crafted(tmp_path, change):
    """A real one-epoch digits run folder whose checkpoints are edited by ``change(state)``."""
    import torch

    run = tmp_path / "run"
    if not run.is_dir():
        assert main(["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=1", "--output", str(run)]) == 0
        (run / "whole.pt").write_bytes((run / "checkpoint_last.pt").read_bytes())
    state = torch.load(run / "whole.pt", weights_only=True)
    change(state)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        (run / name).unlink()
        torch.save(state, run / name)
    return run


def _huge_classes(state):
    state["num_classes"] = 2 ** 40


def _wrong_shape(state):
    state["model"]["classifier.5.weight"] = state["model"]["classifier.5.weight"][:, :80].clone()


def _no_history(state):
    state["history"] = []


@pytest.mark.parametrize("change, message", [
    (_huge_classes, "its weights do not fit"),
    (_wrong_shape, "its weights do not fit"),
    (_no_history, "its history holds 0 epochs but it says it ends at epoch 1"),
], ids=["num_classes 2**40", "wrong weight shape", "empty history"])
def test_crafted_checkpoints_are_one_error_line_for_predict_eval_and_resume(tmp_path, capsys, change, message):
    run = _crafted(tmp_path, change)
    capsys.readouterr()
    for args in (["predict", "--checkpoint", str(run / "checkpoint_best.pt"), "--out", str(tmp_path / "s.csv")],
                 ["train", "--eval", "--resume", str(run / "checkpoint_best.pt")],
                 ["train", "--resume", "--output", str(run), "--set", "TRAIN.EPOCHS=2"],
                 ["train", "--config", "digits_lenet", "--output", str(run), "--set", "TRAIN.EPOCHS=2", "--resume"]):
        if change is _huge_classes and args[0] == "train" and "--eval" not in args:
            continue   # training builds its model from the data's class count, not the file's
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (args, err)


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


def test_train_hands_overwrite_and_resume_to_fit_and_reports_the_best_epoch(monkeypatch, tmp_path, capsys):
    from nmeplib import engine

    calls = []

    def fake_fit(config, resume=False, overwrite=False):
        calls.append((config.OUTPUT, resume, overwrite))
        return [{"epoch": 1, "val_acc": 40.0}, {"epoch": 2, "val_acc": 61.254}, {"epoch": 3, "val_acc": 55.0}]

    monkeypatch.setattr(engine, "fit", fake_fit)
    out = tmp_path / "run"
    assert main(["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=3", "--output", str(out),
                 "--overwrite"]) == 0
    assert capsys.readouterr().out == f"best val acc 61.25% (epoch 2); run folder {out}\n"
    assert main(["train", "--config", "digits_lenet", "--output", str(out), "--resume"]) == 0
    assert calls == [(str(out), False, True), (str(out), True, False)]


def test_resume_without_a_run_folder_says_what_it_needs(capsys):
    assert main(["train", "--resume"]) == 2
    assert capsys.readouterr().err == "error: --resume needs --output, the folder of the run to continue\n"


@pytest.mark.parametrize("split", ["train", "val", "test", None])
def test_predict_runs_the_checkpoint_on_the_split_asked_for(monkeypatch, tmp_path, capsys, split):
    from nmeplib import submission

    asked = []

    def fake_predict(checkpoint, overrides, split="test"):
        asked.append((checkpoint, overrides, split))
        return {"predictions": None, "num_images": 3, "num_classes": 10, "count": 0, "acc": None}

    monkeypatch.setattr(submission, "predict", fake_predict)
    monkeypatch.setattr(submission, "write_submission", lambda predictions, path, *sizes: path)
    args = ["predict", "--checkpoint", "run/checkpoint_best.pt", "--opts", "DATA.BATCH_SIZE", "8"]
    assert main(args + (["--split", split] if split else [])) == 0
    assert asked == [("run/checkpoint_best.pt", ["DATA.BATCH_SIZE=8"], split or "test")]
    assert capsys.readouterr().out == "wrote submission.csv: 3 rows\n"
