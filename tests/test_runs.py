"""Run folders: never replaced unasked, one process at a time, resumed only with the same settings,
written atomically; checkpoints restore their random state wherever they were loaded to."""
import contextlib
import errno
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import nmeplib.checkpoint as ckpt
import nmeplib.engine as engine
from nmeplib.cli import main
from nmeplib.config import ConfigError, load_config
from nmeplib.data import DatasetError, build_loader
from nmeplib.engine import TrainingDiverged, fit
from nmeplib.submission import load_model
from nmeplib.tracking import read_metrics

from helpers import write_cifar


def draws():
    return torch.rand(3).tolist(), random.random(), np.random.rand(), torch.randint(0, 10**6, (2,)).tolist()


def test_rng_state_survives_a_map_location_that_moves_tensors_off_the_cpu(tmp_path):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    ckpt.save_checkpoint({"rng": ckpt.rng_state()}, tmp_path / "c.pt")
    expected = draws()
    state = torch.load(tmp_path / "c.pt", map_location="meta", weights_only=True)  # as map_location=cuda would
    ckpt.set_rng_state(state["rng"])
    assert draws() == expected


def test_gpu_count_change_warns_and_keeps_the_cpu_state(monkeypatch):
    state = ckpt.rng_state()
    state["cuda"] = [state["torch"]]  # saved on one GPU
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", calls.append)
    expected = draws()
    with pytest.warns(RuntimeWarning, match="1 GPU.*this machine has 2"):
        ckpt.set_rng_state(state)
    assert draws() == expected and calls == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    ckpt.set_rng_state(state)
    assert len(calls) == 1 and calls[0][0].dtype == torch.uint8 and calls[0][0].device.type == "cpu"


def test_a_finished_run_is_reused_or_refused_never_replaced(digits_config, capsys):
    config = digits_config("TRAIN.EPOCHS=2")
    first = fit(config)
    stamp = os.stat(f"{config.OUTPUT}/{ckpt.LAST}").st_mtime_ns
    seen = []
    assert fit(config, callbacks=[seen.append]) == first  # same settings: read back, not retrained
    assert "reusing it" in capsys.readouterr().out and seen == first
    assert os.stat(f"{config.OUTPUT}/{ckpt.LAST}").st_mtime_ns == stamp
    assert fit(digits_config("TRAIN.EPOCHS=2", "WANDB.NAME=other", "WANDB.MODE=offline")) == first  # not what is trained
    with pytest.raises(ckpt.OutputError, match=r"other settings \(TRAIN.LR: 0.01 → 0.003\).*overwrite"):
        fit(digits_config("TRAIN.EPOCHS=2", "TRAIN.LR=0.003"))
    assert read_metrics(config.OUTPUT) == first
    again = fit(digits_config("TRAIN.EPOCHS=1", "TRAIN.LR=0.003"), overwrite=True)
    assert read_metrics(config.OUTPUT) == again and len(again) == 1


@pytest.mark.slow
def test_an_unfinished_run_is_not_restarted_unasked(digits_config):
    config = digits_config("TRAIN.EPOCHS=3")

    def stop(row):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(config, callbacks=[stop])
    with pytest.raises(ckpt.OutputError, match="unfinished run.*resume"):
        fit(config)
    assert len(fit(config, resume=True)) == 3


LOCK_HOLDER = "import sys, time, nmeplib.checkpoint as c\nwith c.locked(sys.argv[1]):\n    print('locked', flush=True)\n" \
              "    time.sleep(120)\n"


def test_one_process_per_run_folder_and_a_killed_one_frees_it(digits_config):
    config = digits_config("TRAIN.EPOCHS=1")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, config.OUTPUT], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ckpt.OutputError, match=f"in use by another training process \\(pid {holder.pid}\\)"):
            fit(config)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert len(fit(config)) == 1


@pytest.mark.parametrize("change, message", [
    ("TRAIN.LR=0.003", r"TRAIN.LR: 0.01 → 0.003"),
    ("DATA.DATASET=cifar10", r"DATA.DATASET: 'digits' → 'cifar10'"),
    ("MODEL.NAME=resnet18", r"MODEL.NAME: 'lenet' → 'resnet18'"),
    ("TRAIN.EPOCHS=1", r"already has 2 epochs; TRAIN.EPOCHS=1"),
])
def test_resume_refuses_other_settings(digits_config, change, message):
    fit(digits_config("TRAIN.EPOCHS=2"))
    with pytest.raises(ConfigError, match=message):
        fit(digits_config("TRAIN.EPOCHS=2", change), resume=True)


def test_resume_may_extend_a_run_and_says_how(digits_config, capsys):
    fit(digits_config("TRAIN.EPOCHS=2"))
    capsys.readouterr()
    history = fit(digits_config("TRAIN.EPOCHS=4", "DATA.NUM_WORKERS=0", "WANDB.MODE=disabled"), resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert "extending" in capsys.readouterr().out
    assert history[2]["lr"] > 0  # the 4-epoch cosine, not the finished 2-epoch one


def test_finite_divergence_stops_the_run(digits_config):
    with pytest.raises(TrainingDiverged, match="over 10 times an untrained model"):
        fit(digits_config("TRAIN.LR=1e6", "TRAIN.EPOCHS=2"))


def test_a_bad_label_in_the_validation_split_stops_before_the_first_step(tmp_path, monkeypatch):
    folder = write_cifar(tmp_path / "c10")
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f)
    batch[b"labels"][3] = 12
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **k: pytest.fail("trained before checking labels"))
    config = load_config("lenet_base", [f"DATA.ROOT={tmp_path / 'c10'}", f"OUTPUT={tmp_path / 'run'}",
                                        "TRAIN.EPOCHS=1", "DATA.BATCH_SIZE=10"])
    with pytest.raises(DatasetError, match=r"test_batch \((val|test)\) has label 12; CIFAR-10.s labels are 0-9"):
        fit(config)


def test_fit_validates_on_the_validation_split(digits_config):
    config = digits_config("TRAIN.EPOCHS=1")
    row = fit(config)[-1]
    model, _, _ = load_model(f"{config.OUTPUT}/{ckpt.LAST}")
    device = next(model.parameters()).device  # the one fit used
    on = {split: engine.validate(model, build_loader(config, split, device=device), device)
          for split in ("val", "test")}
    assert row["val_loss"] == pytest.approx(on["val"]["loss"], rel=1e-5)
    assert row["val_loss"] != pytest.approx(on["test"]["loss"], rel=1e-5)


@pytest.mark.parametrize("target", ["checkpoint", "metrics", "summary"])
def test_every_run_file_keeps_its_old_version_when_a_write_fails(digits_config, monkeypatch, target):
    config = digits_config("TRAIN.EPOCHS=1")
    fit(config)
    names = {"checkpoint": ckpt.LAST, "metrics": ckpt.METRICS, "summary": ckpt.SUMMARY}
    path = f"{config.OUTPUT}/{names[target]}"
    before = open(path, "rb").read()
    real = os.replace

    def fail_between_write_and_rename(src, dst):
        if str(dst) == path:
            raise OSError(errno.EIO, "simulated failure")
        real(src, dst)
    monkeypatch.setattr(ckpt.os, "replace", fail_between_write_and_rename)
    with pytest.raises(ckpt.OutputError, match=names[target]):
        fit(digits_config("TRAIN.EPOCHS=2"), resume=True)
    assert open(path, "rb").read() == before
    assert not [p for p in os.listdir(config.OUTPUT) if p.endswith("tmp")]


def test_full_disk_is_one_error_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mount / "run"
        args = ["train", "--config", "digits_lenet", "--output", str(out), "--set", "TRAIN.EPOCHS=1"]
        assert main(args) == 0  # one LeNet checkpoint (~1 MB) fits, not a second one beside it
        before = open(out / ckpt.LAST, "rb").read()
        capsys.readouterr()
        assert main(["train", "--output", str(out), "--resume", "--set", "TRAIN.EPOCHS=2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: could not write") and "is full" in err and err.count("\n") == 1
        assert open(out / ckpt.LAST, "rb").read() == before
        assert not [p for p in os.listdir(out) if p.endswith("tmp")]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_output_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--config", "digits_lenet", "--output", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "file is a file, not a folder" in err and "Traceback" not in err


def test_checkpoint_holding_only_a_state_dict(tmp_path, capsys):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "weights.pt")
    assert main(["predict", "--checkpoint", str(tmp_path / "weights.pt")]) == 2
    err = capsys.readouterr().err
    assert "bare state dict" in err and "weights_only=False" not in err and "Traceback" not in err


def test_untrusted_checkpoint_is_refused_without_bad_advice(tmp_path):
    torch.save({"model": {}, "x": ckpt.OutputError("hi")}, tmp_path / "evil.pt")
    with pytest.raises(ckpt.CheckpointError, match="could run code") as info:
        ckpt.load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(info.value)


def test_summary_with_an_image_size_the_model_cannot_take(capsys):
    assert main(["summary", "--config", "lenet_base", "--set", "DATA.IMG_SIZE=64"]) == 2
    assert "DATA.IMG_SIZE=64 does not suit MODEL.NAME=lenet" in capsys.readouterr().err


def test_internal_bugs_keep_their_traceback(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("an internal bug")
    monkeypatch.setattr(engine, "fit", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["train", "--config", "digits_lenet", "--output", str(tmp_path / "run")])


def test_a_run_row_comes_from_the_epochs_else_the_summary(tmp_path):
    import nmeplib.workbook as wb

    epochs = [{"epoch": e, "val_acc": acc, "train_acc": 50.0 + e, "train_time_s": 2.0, "val_time_s": 1.0,
               "train_img_per_s": 100.0 * e, "peak_mem_mb": 10.0 * e} for e, acc in ((1, 60.0), (2, 70.0), (3, 70.0))]
    summary = {"best_val_acc": 70.0, "best_epoch": 2, "final_val_acc": 70.0, "epochs": 3, "train_time_s": 6.0,
               "num_classes": 10, "config": {}}
    assert ckpt.read_run_row(tmp_path) is None
    ckpt.write_json(tmp_path / ckpt.SUMMARY, summary)  # no metrics.jsonl: the summary's row, without speed
    from_summary = ckpt.read_run_row(tmp_path, val_time=True)
    assert from_summary == {**{k: summary[k] for k in ckpt.SUMMARY_KEYS}, "total_time_s": 6.0, "time_per_epoch_s": 2.0}
    assert wb.summary_row("a", summary) == {"run": "a", **from_summary}
    assert wb.with_speed([{"name": "a", "output": str(tmp_path)}])[0]["img_per_s"] is None
    ckpt.write_jsonl(tmp_path / ckpt.METRICS, epochs)
    row = ckpt.read_run_row(tmp_path, val_time=True)  # time per epoch with validation, as sweeps report it
    assert row == {**from_summary, "total_time_s": 9.0, "time_per_epoch_s": 3.0, "final_train_acc": 53.0,
                   "img_per_s": 200.0, "peak_mem_mb": 30.0}
    assert wb.run_row("a", epochs) == {"run": "a", **row, "time_per_epoch_s": 2.0}  # training time only
    assert wb.with_speed([{"name": "a", "output": str(tmp_path)}]) == [{"name": "a", "output": str(tmp_path),
                                                                        "img_per_s": 200.0}]


def test_write_errors_say_what_is_wrong_with_the_path(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ckpt.OutputError, match=rf"^could not write {tmp_path / 'folder'}: "
                                               rf"{tmp_path / 'folder'} is a folder; give a file name$"):
        ckpt.write_json(tmp_path / "folder", {})
    long = tmp_path / ("x" * 300)
    with pytest.raises(ckpt.OutputError, match=rf"^could not write {long}: File name too long$"):
        ckpt.write_json(long, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_rng_state_saved_as_tensors_restores_too():
    torch.manual_seed(4)
    state = ckpt.rng_state()
    expected = draws()
    state["torch"] = torch.frombuffer(bytearray(state["torch"]), dtype=torch.uint8)   # as older checkpoints hold it
    ckpt.set_rng_state(state)
    assert draws() == expected


def test_a_run_rows_time_per_epoch_is_of_training_unless_asked(tmp_path):
    ckpt.write_jsonl(tmp_path / ckpt.METRICS, [{"epoch": 1, "val_acc": 1.0, "train_acc": 1.0, "train_time_s": 2.0,
                                                "val_time_s": 1.0, "train_img_per_s": 1.0, "peak_mem_mb": 1.0}])
    assert ckpt.read_run_row(tmp_path)["time_per_epoch_s"] == 2.0
    assert ckpt.read_run_row(tmp_path, val_time=True)["time_per_epoch_s"] == 3.0


@pytest.mark.parametrize("best_epoch, linked", [(2, True), (1, False)])
def test_a_resumed_run_links_best_to_last_only_when_last_is_best(tmp_path, best_epoch, linked):
    """A run killed between its checkpoint and its best link gets the link on resuming; a run whose
    best epoch is an earlier one keeps that epoch's file."""
    from nmeplib.config import load_config
    from nmeplib.engine import _restore
    from nmeplib.optim import Schedule

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = Schedule(load_config(), optimizer, 3)
    history = [{"epoch": e, "val_acc": 50.0 + 10 * (e == best_epoch)} for e in (1, 2)]
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "rng": ckpt.rng_state(), "history": history, "epoch": 2}
    ckpt.save_checkpoint(state, tmp_path / ckpt.LAST)
    ckpt.save_checkpoint({"epoch": 1}, tmp_path / ckpt.BEST)      # the earlier epoch's file
    assert _restore(state, model, optimizer, schedule, tmp_path, writer=True) == history
    assert ckpt.is_best_current(tmp_path) is linked
    assert torch.load(tmp_path / ckpt.BEST, weights_only=True)["epoch"] == (2 if linked else 1)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]


def test_a_folder_name_too_long_is_named_as_such_not_as_a_file(tmp_path):
    long = tmp_path / ("y" * 300) / "a.json"
    with pytest.raises(ckpt.OutputError, match=rf"^could not write {long}: File name too long$"):
        ckpt.write_json(long, {})


def test_json_files_are_indented_and_take_tensors_numpy_and_paths(tmp_path):
    ckpt.write_json(tmp_path / "s.json", {"a": np.float32(1.5), "t": torch.tensor([1, 2]), "p": tmp_path})
    text = (tmp_path / "s.json").read_text()
    assert text.startswith('{\n  "a": 1.5') and ckpt.read_json(tmp_path / "s.json") == {
        "a": 1.5, "t": [1, 2], "p": str(tmp_path)}


def test_a_best_checkpoint_that_cannot_be_replaced_is_named(tmp_path):
    ckpt.save_checkpoint({"epoch": 1}, tmp_path / ckpt.LAST)
    (tmp_path / ckpt.BEST).mkdir()
    (tmp_path / ckpt.BEST / "x").write_text("x")
    with pytest.raises(ckpt.OutputError, match=rf"^could not write {tmp_path / ckpt.BEST}: "
                                               rf"{tmp_path / ckpt.BEST} is a folder; give a file name$"):
        ckpt.link_best(tmp_path)


NOT_A_CHECKPOINT = (": it is not a whole file written by torch.save (another kind of file, or one damaged or cut "
                    "short); give a checkpoint nmeplib's training wrote (a run's checkpoint_last.pt or "
                    "checkpoint_best.pt)")


def test_unreadable_and_incomplete_checkpoints_say_why(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    assert str(info.value) == f"{tmp_path / 'junk.pt'} is not a readable nmeplib checkpoint{NOT_A_CHECKPOINT}"
    torch.save({"model": {}, "x": ckpt.OutputError("hi")}, tmp_path / "evil.pt")
    with pytest.raises(ckpt.CheckpointError, match=r": it holds objects other than tensors and plain data, which "
                                                   r"nmeplib does not load \(unpickling them could run code\)$"):
        ckpt.load_checkpoint(tmp_path / "evil.pt")
    torch.save({"model": {}, "epoch": 1, "history": [], "rng": {}, "config": {}, "num_classes": 2},
               tmp_path / "part.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"is not an nmeplib checkpoint \(no optimizer, schedule\); "):
        ckpt.load_checkpoint(tmp_path / "part.pt")


def test_a_truncated_checkpoint_says_what_it_is_not_and_what_to_do(tmp_path):
    """A file cut short (copied while it was written, say): torch's own words are an errno or a number."""
    torch.save({"model": {"w": torch.zeros(1000)}}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    for size in (len(data) // 2, 100, 10):
        cut.write_bytes(data[:size])
        with pytest.raises(ckpt.CheckpointError) as info:
            ckpt.load_checkpoint(cut)
        assert str(info.value) == f"{cut} is not a readable nmeplib checkpoint{NOT_A_CHECKPOINT}", size


def _plain_state(**changes):
    model = torch.nn.Linear(2, 3)
    state = {"model": model.state_dict(), "optimizer": {}, "schedule": {}, "epoch": 2, "rng": {}, "config": {},
             "num_classes": 3, "history": [{"epoch": 1, "val_acc": 1.0}, {"epoch": 2, "val_acc": 2.0}]}
    return {**state, **changes}


@pytest.mark.parametrize("changes, message", [
    ({"history": []}, "its history holds 0 epochs but it says it ends at epoch 2"),
    ({"history": [{"epoch": 1}]}, "its history holds 1 epochs but it says it ends at epoch 2"),
    ({"history": [{"epoch": 1}, {"epoch": 2}]}, "its history rows lack epoch or val_acc"),
    ({"epoch": 0, "history": []}, "its epoch must be a whole number of at least 1, got 0"),
    ({"num_classes": 0}, "its num_classes must be a whole number of at least 1, got 0"),
    ({"num_classes": "10"}, "its num_classes must be a whole number of at least 1, got '10'"),
])
def test_a_checkpoint_with_impossible_contents_is_refused(tmp_path, changes, message):
    torch.save(_plain_state(**changes), tmp_path / "crafted.pt")
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(tmp_path / "crafted.pt")
    assert str(info.value).startswith(f"{tmp_path / 'crafted.pt'} is damaged or was edited: {message}; ")


def test_weights_that_do_not_fit_the_model_are_named(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    weights = {"0.weight": torch.zeros(3, 5), "0.bias": torch.zeros(3), "extra": torch.zeros(1)}
    with pytest.raises(ckpt.CheckpointError, match=r"^f.pt: its weights do not fit the model \(0.weight is 3×5 in "
                                                   r"the file but 3×4 in the model\)"):
        ckpt.check_weights("f.pt", weights, model)
    with pytest.raises(ckpt.CheckpointError, match=r"\(the file has extra, which the model lacks\)"):
        ckpt.check_weights("f.pt", {**weights, "0.weight": torch.zeros(3, 4)}, model)
    with pytest.raises(ckpt.CheckpointError, match=r"\(the file lacks 0.bias\)"):
        ckpt.check_weights("f.pt", {"0.weight": torch.zeros(3, 4)}, model)
    ckpt.check_weights("f.pt", dict(model.state_dict()), model)


KILLED_MID_WRITE = """
import os, signal, sys
from nmeplib import checkpoint as ckpt

def write(f):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
ckpt.atomic_write(sys.argv[1], write)
"""


def test_a_writer_killed_before_its_rename_keeps_the_old_file_and_leaves_a_temporary_that_is_cleared(tmp_path):
    target = ckpt.atomic_write(tmp_path / ckpt.LAST, lambda f: f.write(b"old"))
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(target)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert target.read_bytes() == b"old"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0].startswith(f".{ckpt.LAST}.") and left[1] == ckpt.LAST
    ckpt.remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.LAST]


def test_written_files_get_the_permissions_an_ordinary_open_gives(tmp_path):
    ckpt.write_json(tmp_path / "written.json", {})
    (tmp_path / "opened.json").write_text("{}")
    modes = {name: os.stat(tmp_path / name).st_mode & 0o777 for name in ("written.json", "opened.json")}
    assert modes["written.json"] == modes["opened.json"]


def test_metrics_rows_take_tensors_and_numpy_values(tmp_path):
    rows = [{"loss": torch.tensor(0.5), "epoch": np.int64(3)}, {"acc": np.float32(1.5)}]
    ckpt.write_jsonl(tmp_path / ckpt.METRICS, rows)
    assert read_metrics(tmp_path) == [{"loss": 0.5, "epoch": 3}, {"acc": 1.5}]


# ----------------------------------------------------------------------------- runs stored before a code update

def _code_update(monkeypatch, change):
    """Simulate pulling a new version of nmeplib: ``change(defaults)`` edits a copy of the defaults,
    which then become the code's defaults and its known keys."""
    import copy

    import nmeplib.config as config_module

    defaults = copy.deepcopy(config_module.DEFAULTS)
    change(defaults)
    monkeypatch.setattr(config_module, "DEFAULTS", defaults)
    monkeypatch.setattr(config_module, "VALID_KEYS", dict(config_module._flatten(defaults)))


def _add_knob(defaults):
    defaults["TRAIN"]["OLD_KNOB"] = 3


def test_a_stored_run_survives_a_setting_the_code_no_longer_has(digits_config, monkeypatch, capsys, tmp_path):
    with monkeypatch.context() as old_code:     # the run is trained by a version that had TRAIN.OLD_KNOB
        _code_update(old_code, _add_knob)
        config = digits_config("TRAIN.EPOCHS=1")
        first = fit(config)
    assert torch.load(f"{config.OUTPUT}/{ckpt.LAST}", weights_only=True)["config"]["TRAIN"]["OLD_KNOB"] == 3
    copy = tmp_path / "copy"
    shutil.copytree(config.OUTPUT, copy)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"TRAIN.OLD_KNOB is no longer a setting of nmeplib; left out"):
        assert fit(digits_config("TRAIN.EPOCHS=1")) == first                         # re-run: read back
    with pytest.warns(UserWarning, match="TRAIN.OLD_KNOB"):
        assert main(["predict", "--checkpoint", f"{config.OUTPUT}/{ckpt.BEST}", "--out", str(tmp_path / "s.csv")]) == 0
    with pytest.warns(UserWarning, match="TRAIN.OLD_KNOB"):
        assert main(["train", "--resume", "--output", config.OUTPUT, "--set", "TRAIN.EPOCHS=2"]) == 0
    assert [r["epoch"] for r in read_metrics(config.OUTPUT)] == [1, 2]
    with pytest.warns(UserWarning, match="TRAIN.OLD_KNOB"):
        assert len(fit(digits_config("TRAIN.EPOCHS=2", f"OUTPUT={copy}"), resume=True)) == 2
    assert "OLD_KNOB" not in torch.load(copy / ckpt.LAST, weights_only=True)["config"]["TRAIN"]


def _raise_min_lr(defaults):
    defaults["TRAIN"]["MIN_LR"] = 1e-5


def test_a_default_that_moved_is_not_a_change_of_the_users_settings(digits_config, monkeypatch, capsys):
    config = digits_config("TRAIN.EPOCHS=1")
    first = fit(config)
    _code_update(monkeypatch, _raise_min_lr)
    capsys.readouterr()
    assert fit(digits_config("TRAIN.EPOCHS=1")) == first                            # the finished run: read back
    assert "reusing it" in capsys.readouterr().out
    assert main(["train", "--config", "digits_lenet", "--output", config.OUTPUT, "--set", "TRAIN.EPOCHS=2",
                 "--resume"]) == 0
    assert "TRAIN.MIN_LR's default changed (0.0 → 1e-05)" in capsys.readouterr().out
    assert [r["epoch"] for r in read_metrics(config.OUTPUT)] == [1, 2]
    with pytest.raises(ConfigError, match=r"other settings \(TRAIN.LR: 0.01 → 0.003\)"):   # what the user sets counts
        fit(digits_config("TRAIN.EPOCHS=3", "TRAIN.LR=0.003"), resume=True)
    with pytest.raises(ConfigError, match=r"other settings \(TRAIN.MIN_LR: 1e-05 → 0.0001\)"):
        fit(digits_config("TRAIN.EPOCHS=3", "TRAIN.MIN_LR=1e-4"), resume=True)


def test_a_run_folder_without_the_record_of_user_settings_compares_every_setting(digits_config, monkeypatch):
    config = digits_config("TRAIN.EPOCHS=1")
    fit(config)
    for name in (ckpt.LAST, ckpt.BEST):     # as a version that did not record them wrote it
        state = torch.load(f"{config.OUTPUT}/{name}", weights_only=True)
        state.pop("config_set")
        ckpt.save_checkpoint(state, f"{config.OUTPUT}/{name}")
    summary = ckpt.read_json(f"{config.OUTPUT}/{ckpt.SUMMARY}")
    summary.pop("config_set")
    ckpt.write_json(f"{config.OUTPUT}/{ckpt.SUMMARY}", summary)
    _code_update(monkeypatch, _raise_min_lr)
    with pytest.raises(ckpt.OutputError, match=r"other settings \(TRAIN.MIN_LR: 0.0 → 1e-05\)"):
        fit(digits_config("TRAIN.EPOCHS=1"))
    with pytest.raises(ConfigError, match=r"other settings \(TRAIN.MIN_LR: 0.0 → 1e-05\)"):
        fit(digits_config("TRAIN.EPOCHS=2"), resume=True)


def test_an_output_that_is_a_dangling_symlink_is_named_as_one(tmp_path, capsys):
    (tmp_path / "run").symlink_to(tmp_path / "gone")
    for output in (tmp_path / "run", tmp_path / "run" / "sub"):
        assert main(["train", "--config", "digits_lenet", "--output", str(output)]) == 2
        assert capsys.readouterr().err == (f"error: cannot use {output} as a run folder: {tmp_path / 'run'} is a "
                                           f"symlink to {tmp_path / 'gone'}, which does not exist; create "
                                           f"{tmp_path / 'gone'} or give another path\n")


@contextlib.contextmanager
def read_only(folder):
    """``folder`` made read-only for real: chmod -R a-w for an ordinary user; as root (whom file modes do
    not stop) a read-only bind mount of the folder over itself. Skips the test where neither works."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
        try:
            if os.access(folder, os.W_OK):
                pytest.skip("chmod a-w does not stop this user from writing")
            yield
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
        return
    if subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount a folder read-only here")
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("the read-only bind mount is writable")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_finished_run_on_a_read_only_file_system_is_read_back(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", "digits_lenet", "--output", str(out), "--set", "TRAIN.EPOCHS=1"]
    assert main(args) == 0
    (out / ckpt.LOCK).unlink()        # a copy of the run that never had a lock file
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    with read_only(out):
        assert main(args) == 0
        assert "reusing it" in capsys.readouterr().out
        assert main([*args[:-1], "TRAIN.EPOCHS=2", "--resume"]) == 2         # what must write says so at once
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write to {out}: ") and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
