"""Sweeps on the bundled digits data: running, skipping finished members, resuming, papermill."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import nmeplib.checkpoint as ckpt

from nmeplib import sweeps
from nmeplib.config import load_config
from nmeplib.engine import TrainingDiverged
from nmeplib.sweeps import grid, plot_sweep, run_sweep, safe_name
from nmeplib.workbook import execute
from nmeplib.tracking import read_metrics

FAST = ["TRAIN.EPOCHS=1", "DATA.BATCH_SIZE=128"]
MEMBERS = grid("TRAIN.LR", [1e-2, 3e-3])


def quiet_env(monkeypatch, home):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NMEPLIB_PROGRESS", "0")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(home))


@pytest.fixture(autouse=True)
def no_wandb(tmp_path, monkeypatch):
    quiet_env(monkeypatch, tmp_path / "wandb_home")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One real two-member sweep (1 epoch each), shared by the tests that only read or copy it."""
    root = tmp_path_factory.mktemp("sweeps") / "lr_sweep"
    with pytest.MonkeyPatch.context() as mp:
        quiet_env(mp, root.parent / "wandb_home")
        results = run_sweep(load_config("digits_lenet", FAST), MEMBERS, output_root=root)
    return root, results


def copy_sweep(swept, tmp_path):
    root = tmp_path / "lr_sweep"
    shutil.copytree(swept[0], root)  # copy2 keeps modification times
    return root


def test_grid_and_names():
    assert MEMBERS == {"lr=0.01": {"TRAIN.LR": 0.01}, "lr=0.003": {"TRAIN.LR": 0.003}}
    assert list(grid("DATA.BATCH_SIZE", [32, 64], fmt="bs{value}")) == ["bs32", "bs64"]
    assert grid("SEED", [0, 1]) == {"seed=0": {"SEED": 0}, "seed=1": {"SEED": 1}}
    with pytest.raises(ValueError, match="same name"):
        grid("TRAIN.LR", [1e-3, 1.1e-3], fmt="lr={value:.0e}")
    assert list(sweeps._named([{"TRAIN.LR": 0.1}, ["SEED=1", "DATA.AUGMENT=flip"]])) == ["lr=0.1", "seed=1,augment=flip"]
    assert safe_name("lr=1e-3, wd/0.1") == "lr=1e-3_wd_0.1"


def test_sweep_trains_each_member_into_its_folder(swept):
    root, results = swept
    assert [r["name"] for r in results] == ["lr=0.01", "lr=0.003"]
    assert [r["TRAIN.LR"] for r in results] == [0.01, 0.003]
    for row in results:
        assert row["status"] == "ran" and row["epochs"] == 1 and row["best_epoch"] == 1
        assert 0 <= row["best_val_acc"] <= 100 and row["final_val_acc"] == row["best_val_acc"]
        assert row["time_per_epoch_s"] > 0 and row["total_time_s"] == pytest.approx(row["time_per_epoch_s"])
        folder = root / row["name"]
        assert row["output"] == str(folder) and (folder / "checkpoint_last.pt").is_file()
        wandb = json.loads((folder / "summary.json").read_text())["config"]["WANDB"]
        assert (wandb["GROUP"], wandb["NAME"]) == ("lr_sweep", row["name"])
        assert len(read_metrics(folder)) == 1


def test_rerun_skips_finished_members(swept, tmp_path):
    root = copy_sweep(swept, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in root.glob("*/*") if p.is_file() and p.name != ckpt.LOCK}
    again = run_sweep(load_config("digits_lenet", FAST), MEMBERS, output_root=root)
    assert [r["status"] for r in again] == ["skipped", "skipped"]
    for old, new in zip(swept[1], again):
        assert new["best_val_acc"] == old["best_val_acc"] and new["total_time_s"] == old["total_time_s"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing retrained or rewritten


def test_a_default_moved_by_a_code_update_does_not_make_a_finished_member_other(swept, tmp_path, monkeypatch):
    """Sweeps compare settings as fit does: only what the member's user set counts."""
    import copy

    import nmeplib.config as config_module

    root = copy_sweep(swept, tmp_path)
    defaults = copy.deepcopy(config_module.DEFAULTS)
    defaults["TRAIN"]["MIN_LR"] = 1e-5            # the code's default moves; no member set it
    monkeypatch.setattr(config_module, "DEFAULTS", defaults)
    monkeypatch.setattr(config_module, "VALID_KEYS", dict(config_module._flatten(defaults)))
    rows = run_sweep(load_config("digits_lenet", FAST), MEMBERS, output_root=root)
    assert [r["status"] for r in rows] == ["skipped", "skipped"]


def test_finished_member_of_other_settings_is_refused_unless_overwrite(swept, tmp_path):
    root = copy_sweep(swept, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in root.glob("*/*") if p.is_file() and p.name != ckpt.LOCK}
    flip = load_config("digits_lenet", [*FAST, "DATA.AUGMENT=flip"])
    members = {"new": {"TRAIN.LR": 0.02}, **MEMBERS}
    for resume in (True, False):
        with pytest.raises(ckpt.OutputError, match=r"^sweep member 'lr=0.01': .*lr=0.01 holds a finished run of "
                           r"other settings \(DATA.AUGMENT: 'none' → 'flip'\); overwrite=True replaces it"):
            run_sweep(flip, members, output_root=root, resume=resume)
    assert not (root / "new" / ckpt.LAST).exists()  # refused before any member trained
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    with pytest.raises(ckpt.OutputError, match=r"TRAIN.EPOCHS: 1 → 2"):  # a longer run needs its checkpoint
        (root / "lr=0.01" / ckpt.LAST).unlink()
        run_sweep(load_config("digits_lenet", ["TRAIN.EPOCHS=2", "DATA.BATCH_SIZE=128"]), MEMBERS, output_root=root)
    results = run_sweep(flip, MEMBERS, output_root=root, overwrite=True)
    assert [r["status"] for r in results] == ["ran", "ran"]
    assert ckpt.read_json(root / "lr=0.01" / "summary.json")["config"]["DATA"]["AUGMENT"] == "flip"


SWEEP_A = """
import sys
from nmeplib.config import load_config
from nmeplib.sweeps import run_sweep
run_sweep(load_config("digits_lenet", ["TRAIN.EPOCHS=200", "DATA.BATCH_SIZE=128"]), {"m": {"TRAIN.LR": 0.01}},
          output_root=sys.argv[1])
"""


@pytest.mark.timeout(90)
def test_second_sweep_on_a_member_folder_in_training_is_refused(tmp_path):
    root = tmp_path / "shared"
    env = {**os.environ, "NMEPLIB_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          *filter(None, [os.environ.get("PYTHONPATH")])])}
    a = subprocess.Popen([sys.executable, "-c", SWEEP_A, str(root)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (root / "m" / ckpt.LAST).is_file():
            assert a.poll() is None, a.stderr.read().decode()
            assert time.monotonic() < deadline, "sweep A wrote no checkpoint within 60 s"
            time.sleep(0.1)
        with pytest.raises(ckpt.OutputError) as refused:
            run_sweep(load_config("digits_lenet", FAST), {"m": {"TRAIN.LR": 0.003}}, output_root=root)
        assert (root / "m" / ckpt.LAST).is_file() and a.poll() is None  # A still trains, its checkpoint in place
        assert str(refused.value).startswith(f"sweep member 'm': {root / 'm'} is in use by another training "
                                             f"process (pid {a.pid})")
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        a.stderr.close()
    assert ckpt.load_checkpoint(root / "m" / ckpt.LAST)["config"]["TRAIN"]["LR"] == 0.01
    assert read_metrics(root / "m")


def test_interrupted_member_with_changed_settings_trains_afresh(swept, tmp_path):
    root = copy_sweep(swept, tmp_path)
    (root / "lr=0.003" / "summary.json").unlink()  # interrupted, then the base setting changes
    again = run_sweep(load_config("digits_lenet", [*FAST, "DATA.AUGMENT=flip"]), {"lr=0.003": {"TRAIN.LR": 0.003}},
                      output_root=root)
    assert again[0]["status"] == "ran"
    assert ckpt.read_json(root / "lr=0.003" / "summary.json")["config"]["DATA"]["AUGMENT"] == "flip"


def test_interrupted_member_resumes_alone(swept, tmp_path):
    root = copy_sweep(swept, tmp_path)
    (root / "lr=0.003" / "summary.json").unlink()
    done = (root / "lr=0.01" / "metrics.jsonl").stat().st_mtime_ns
    again = run_sweep(load_config("digits_lenet", FAST), MEMBERS, output_root=root)
    assert [r["status"] for r in again] == ["skipped", "ran"]
    assert again[1]["best_val_acc"] == swept[1][1]["best_val_acc"]  # read back from the checkpoint's history
    assert (root / "lr=0.01" / "metrics.jsonl").stat().st_mtime_ns == done
    # More epochs than the summary holds: the member continues from its checkpoint.
    first = read_metrics(root / "lr=0.01")
    longer = run_sweep(load_config("digits_lenet", ["TRAIN.EPOCHS=2", "DATA.BATCH_SIZE=128"]),
                       {"lr=0.01": {"TRAIN.LR": 0.01}}, output_root=root)
    assert longer[0]["status"] == "ran" and longer[0]["epochs"] == 2
    rows = read_metrics(root / "lr=0.01")
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0] == first[0]


def test_diverged_member_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    def diverge(config, resume=False):
        raise TrainingDiverged("loss is nan at step 3 (train 1); lower TRAIN.LR")

    monkeypatch.setattr(sweeps, "fit", diverge)
    results = run_sweep("digits_lenet", [{"TRAIN.LR": 10.0}, {"TRAIN.LR": 1.0}], output_root=tmp_path / "s")
    assert [(r["name"], r["status"], r["best_val_acc"]) for r in results] == [("lr=10.0", "failed", None),
                                                                            ("lr=1.0", "failed", None)]
    assert "lower TRAIN.LR" in results[0]["error"]
    assert capsys.readouterr().out.splitlines() == [
        f"[1/2] lr=10.0: training ({tmp_path / 's' / 'lr=10.0'})",
        "lr=10.0: loss is nan at step 3 (train 1); lower TRAIN.LR",
        f"[2/2] lr=1.0: training ({tmp_path / 's' / 'lr=1.0'})",
        "lr=1.0: loss is nan at step 3 (train 1); lower TRAIN.LR"]


def test_a_runner_compares_only_its_keys_so_a_finished_member_given_more_epochs_continues(swept, tmp_path):
    """With a runner's compared_keys (a notebook holds its own base settings), a base setting outside
    them does not make the finished member another run: it is kept, or continued for more epochs."""
    root = copy_sweep(swept, tmp_path)
    calls = []

    class NotebookLike(sweeps.Runner):
        def compared_keys(self, overrides):
            return [*overrides, "TRAIN.EPOCHS"]

        def __call__(self, config, overrides, *, resume):
            calls.append((config.TRAIN.EPOCHS, resume))
            raise TrainingDiverged("stopped")

    member = {"lr=0.01": {"TRAIN.LR": 0.01}}
    [kept] = run_sweep(load_config("digits_lenet", [*FAST, "DATA.AUGMENT=flip"]), member, output_root=root,
                       runner=NotebookLike())
    assert kept["status"] == "skipped" and calls == []
    longer = load_config("digits_lenet", ["TRAIN.EPOCHS=2", "DATA.BATCH_SIZE=128", "DATA.AUGMENT=flip"])
    run_sweep(longer, member, output_root=root, runner=NotebookLike())
    assert calls == [(2, True)]
    with pytest.raises(ckpt.OutputError, match=r"DATA.AUGMENT: 'none' → 'flip'"):   # the default runner compares all
        run_sweep(longer, member, output_root=root)


def write_notebook(path):
    params = nbformat.v4.new_code_cell('lr = 0.01\nepochs = 1\noutput_dir = "runs/nb"\n'
                                       'wandb_group = ""\nwandb_name = ""')
    params.metadata["tags"] = ["parameters"]
    train = nbformat.v4.new_code_cell(
        "from nmeplib.config import load_config\nfrom nmeplib.engine import fit\n"
        'config = load_config("digits_lenet", {"TRAIN.LR": lr, "TRAIN.EPOCHS": epochs, "DATA.BATCH_SIZE": 128,\n'
        '                     "OUTPUT": output_dir, "WANDB.GROUP": wandb_group, "WANDB.NAME": wandb_name})\n'
        "history = fit(config)")
    nb = nbformat.v4.new_notebook(cells=[params, train])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_papermill_runner_executes_the_notebook_per_member(tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb")
    base = load_config("digits_lenet", FAST)
    runner = execute.NotebookRunner(notebook)
    with pytest.raises(ValueError, match="MODEL.NAME"):
        run_sweep(base, {"a": {"MODEL.NAME": "alexnet"}}, output_root=tmp_path / "s", runner=runner)
    with pytest.raises(ValueError, match=r"DATA.BATCH_SIZE \(batch_size\)"):
        run_sweep(base, {"a": {"DATA.BATCH_SIZE": 64}}, output_root=tmp_path / "s", runner=runner)
    [row] = run_sweep(base, {"lr=0.005": {"TRAIN.LR": 0.005}}, output_root=tmp_path / "nb_sweep", runner=runner)
    folder = tmp_path / "nb_sweep" / "lr=0.005"
    assert row["status"] == "ran" and row["epochs"] == 1 and 0 <= row["best_val_acc"] <= 100
    assert (folder / "train.ipynb").is_file() and len(read_metrics(folder)) == 1
    config = json.loads((folder / "summary.json").read_text())["config"]
    assert config["TRAIN"]["LR"] == 0.005 and config["WANDB"]["GROUP"] == "nb_sweep"
    assert config["WANDB"]["NAME"] == "lr=0.005"


def test_any_function_is_a_runner(tmp_path):
    calls = []

    def runner(config, overrides, *, resume):
        calls.append((config.OUTPUT, dict(overrides), resume))
        raise TrainingDiverged("loss is nan at step 0 (train 1); lower TRAIN.LR")

    [row] = run_sweep("digits_lenet", {"a": {"TRAIN.LR": 0.5}}, output_root=tmp_path / "s", runner=runner)
    assert calls == [(str(tmp_path / "s" / "a"), {"TRAIN.LR": 0.5}, False)] and row["status"] == "failed"


def test_runner_names_map_to_runners(tmp_path):
    assert type(execute.sweep_runner("library")) is sweeps.Runner
    runner = execute.sweep_runner("papermill", notebook="nb.ipynb", smoke=True)
    assert isinstance(runner, execute.NotebookRunner) and runner.smoke is True
    with pytest.raises(ValueError, match="unknown sweep runner 'notebook'; use one of library, papermill"):
        execute.sweep_runner("notebook")
    with pytest.raises(TypeError, match="sweep_runner"):   # a name is not a runner
        run_sweep("digits_lenet", [{"TRAIN.LR": 0.5}], output_root=tmp_path / "s", runner="papermill")


def test_notebook_runner_compares_the_overridden_keys_and_the_epochs():
    runner = execute.NotebookRunner("nb.ipynb")
    assert runner.compared_keys({"TRAIN.LR": 0.1, "DATA.AUGMENT": "flip"}) == [
        "TRAIN.LR", "DATA.AUGMENT", "TRAIN.EPOCHS"]
    assert runner.compared_keys({}) == ["TRAIN.EPOCHS"]


def test_notebook_runner_passes_smoke_mode_to_a_notebook_that_takes_it(tmp_path):
    config = load_config("digits_lenet", [*FAST, f"OUTPUT={tmp_path / 'm'}"])
    alexnet = Path(__file__).resolve().parents[1] / "notebooks" / "04_alexnet.ipynb"
    params = execute.NotebookRunner(alexnet, smoke=True).parameters(config, {}, resume=False)
    assert params["smoke"] is True and params["output_dir"] == str(tmp_path / "m")
    assert "smoke" not in execute.NotebookRunner(alexnet).parameters(config, {}, resume=False)
    plain = write_notebook(tmp_path / "train.ipynb")   # declares no smoke parameter
    assert "smoke" not in execute.NotebookRunner(plain, smoke=True).parameters(config, {}, resume=False)


def test_the_library_does_not_import_the_notebook_layer():
    code = "import sys, nmeplib.sweeps; print(sorted(m for m in sys.modules if m.startswith('nmeplib.workbook')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_plot_sweep(swept, tmp_path):
    import matplotlib.pyplot as plt

    fig = plot_sweep(swept[1], tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert {line.get_label() for line in fig.axes[1].lines} >= {"lr=0.01 val", "lr=0.003 val"}
    plt.close(fig)


def test_papermill_parameters_pass_unnamed_keys_through_overrides(tmp_path):
    from pathlib import Path

    base = load_config("digits_lenet", [*FAST, f"OUTPUT={tmp_path / 'm'}", "WANDB.GROUP=g", "WANDB.NAME=m"])
    member = {"TRAIN.LR": 0.005, "TRAIN.LABEL_SMOOTHING": 0.1, "DATA.AUGMENT": "flip"}
    config = load_config("digits_lenet", [*FAST, f"OUTPUT={tmp_path / 'm'}", "WANDB.GROUP=g", "WANDB.NAME=m",
                                          "TRAIN.LR=0.005", "TRAIN.LABEL_SMOOTHING=0.1", "DATA.AUGMENT=flip"])
    declared = dict.fromkeys(["lr", "epochs", "output_dir", "overrides", "resume"])
    params = execute.notebook_parameters(Path("nb.ipynb"), declared, member, config, resume=True)
    assert params == {"lr": 0.005, "epochs": 1, "output_dir": str(tmp_path / "m"), "resume": True,
                      "overrides": {"TRAIN.LABEL_SMOOTHING": 0.1, "DATA.AUGMENT": "flip", "WANDB.GROUP": "g",
                                    "WANDB.NAME": "m"}}
    # without an overrides parameter a key needs its named parameter; epochs and output_dir always do
    with pytest.raises(ValueError, match=r"TRAIN.LABEL_SMOOTHING \(label_smoothing\).*no overrides parameter"):
        execute.notebook_parameters(Path("nb.ipynb"), {"lr": 1, "epochs": 1, "output_dir": 1}, member, config, False)
    with pytest.raises(ValueError, match=r"OUTPUT \(output_dir\)"):
        execute.notebook_parameters(Path("nb.ipynb"), {"epochs": 1, "overrides": {}}, {}, base, False)


def test_a_run_continued_without_a_config_keeps_its_users_settings_over_todays_defaults():
    """The stored config a finished member or run continues with (``train --resume --output``): the
    settings its user set, today's defaults for the rest; every stored value for a run stored
    before the user's settings were recorded."""
    from nmeplib.runstate import stored_config, user_settings

    config = load_config("digits_lenet", ["TRAIN.EPOCHS=1", "TRAIN.LR=0.02"])
    stored = config.to_dict()
    stored["TRAIN"]["MIN_LR"] = 1e-3   # the default when the run was stored; its user did not set it
    continued = stored_config({"config": stored, "config_set": user_settings(config)}, ["TRAIN.EPOCHS=3"])
    assert (continued.TRAIN.LR, continued.TRAIN.MIN_LR, continued.TRAIN.EPOCHS) == (0.02, 0.0, 3)
    old = stored_config({"config": stored}, ["TRAIN.EPOCHS=3"])
    assert (old.TRAIN.LR, old.TRAIN.MIN_LR, old.TRAIN.EPOCHS) == (0.02, 1e-3, 3)
