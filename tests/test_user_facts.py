"""What a user sees, pinned fact by fact: the config file read, the optimizer class built, the loss the
schedule is given, the exit code W&B gets, the files a release ships, the numbers a worksheet shows.

Each test fails on one plausible one-line bug that the rest of the fast suite lets through; the
fixtures (``helpers``) make the confusable things differ: best epoch ≠ last, train loss ≠ val loss,
channels that differ, class counts that differ.
"""
from __future__ import annotations

import io
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from nmeplib import checkpoint as ckpt, engine, grading, sweeps, throughput
from nmeplib.course import release, reproduce
from nmeplib.course import worksheet as ws
from nmeplib.config import DEFAULTS, load_config
from nmeplib.data import DatasetError, build_loader
from nmeplib.engine import TrainingDiverged, fit
from nmeplib.models import build as model_build
from nmeplib.models.resnet import ResNet18
from nmeplib.optim import Schedule, build_optimizer
from nmeplib.submission import check_classes
from nmeplib.tracking import Tracker, read_metrics

from helpers import (CIFAR_RGB_MEAN, CIFAR_RGB_STD, channel_images, history_best_not_last, image_split,
                     tiny_cifar_config, write_cifar_images, write_run)

ROOT = Path(__file__).resolve().parents[1]
MACHINE = {"gpu": "NVIDIA H100 80GB HBM3", "cpu": None, "cores": 16, "torch": "2.11.0", "python": "3.12"}


@pytest.fixture
def one_thread():
    """Tiny trainings run on one thread: on a shared 2-core machine two threads only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- configs

def test_a_config_file_in_the_current_folder_wins_over_the_shipped_one_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "lenet_base.yaml").write_text("TRAIN:\n  LR: 0.0123\nOUTPUT: runs/mine\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("lenet_base.yaml")
    assert config.TRAIN.LR == 0.0123 and config.OUTPUT == "runs/mine"
    assert load_config("lenet_base").TRAIN.LR == 3e-3          # the bare name is still the shipped file


def test_the_old_base_lr_is_the_learning_rate(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("TRAIN:\n  BASE_LR: 0.0321\n  EPOCHS: 3\nPRINT_FREQ: 10\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_file = load_config(old)
        from_override = load_config(None, ["TRAIN.BASE_LR=0.0321"])
    for config in (from_file, from_override):
        assert config.TRAIN.LR == 0.0321
        assert config.TRAIN.WARMUP_LR == DEFAULTS["TRAIN"]["WARMUP_LR"]


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam),
                                       ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)])
def test_each_optimizer_name_builds_exactly_that_optimizer(name, cls):
    optimizer = build_optimizer(load_config(None, {"TRAIN.OPTIMIZER": name}), nn.Linear(3, 2))
    assert type(optimizer) is cls            # AdamW subclasses Adam: isinstance would not tell them apart


# ----------------------------------------------------------------------------- data

def test_cifar_is_normalised_with_its_rgb_statistics_in_rgb_order(tmp_path):
    """A pixel at CIFAR-10's mean becomes 0 in every channel, one at mean + std becomes 1: R, G
    and B each get their own statistics (R 0.491, G 0.482, B 0.447), not BGR's."""
    mean_plus_std = tuple(m + s for m, s in zip(CIFAR_RGB_MEAN, CIFAR_RGB_STD))
    write_cifar_images(tmp_path, channel_images([CIFAR_RGB_MEAN, mean_plus_std]), [0, 1])
    config = load_config(None, ["DATA.DATASET=cifar10", f"DATA.ROOT={tmp_path}", "DATA.DOWNLOAD=false",
                                "DATA.BATCH_SIZE=2", "DATA.AUGMENT=none"])
    x, _ = next(iter(build_loader(config, "val", device="cpu")))
    per_channel = x.mean(dim=(2, 3))
    assert per_channel[0] == pytest.approx([0.0, 0.0, 0.0], abs=0.02)
    assert per_channel[1] == pytest.approx([1.0, 1.0, 1.0], abs=0.03)


def test_a_checkpoint_is_refused_on_data_with_fewer_or_more_classes():
    for trained, data in ((3, 2), (2, 3)):
        with pytest.raises(DatasetError, match=f"has {trained} classes but .* has {data}"):
            check_classes("model.pt", {"num_classes": trained, "class_names": None}, image_split(data))
    check_classes("model.pt", {"num_classes": 2, "class_names": None}, image_split(2))   # same count: fine


# ----------------------------------------------------------------------------- training and resuming

def test_the_plateau_schedule_is_given_the_validation_loss(tmp_path, monkeypatch, one_thread):
    seen = []
    step_epoch = Schedule.step_epoch
    monkeypatch.setattr(Schedule, "step_epoch", lambda self, loss: (seen.append(loss), step_epoch(self, loss)))
    history = fit(tiny_cifar_config(tmp_path, "TRAIN.SCHEDULER=plateau"))
    assert [r["val_loss"] for r in history] != [r["train_loss"] for r in history]
    assert seen == [r["val_loss"] for r in history]


def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, one_thread):
    """Dropout draws from the global generators: a resume that did not restore them would train
    its second epoch on other masks."""
    overrides = ("MODEL.DROPOUT=0.5", "DATA.AUGMENT=crop+flip")
    whole = fit(tiny_cifar_config(tmp_path, *overrides, f"OUTPUT={tmp_path / 'whole'}"))
    config = tiny_cifar_config(tmp_path, *overrides, f"OUTPUT={tmp_path / 'split'}")

    def stop(row):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(config, callbacks=[stop])
    resumed = fit(config, resume=True)
    keys = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in whole]


def test_resume_continues_from_the_last_epoch_not_the_best(tmp_path, one_thread, capsys):
    history = history_best_not_last()                    # best epoch 2 of 4
    write_run(tiny_cifar_config(tmp_path, "TRAIN.EPOCHS=4"), history, steps_per_epoch=5)
    resumed = fit(tiny_cifar_config(tmp_path, "TRAIN.EPOCHS=5"), resume=True)
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 5]
    assert resumed[:4] == history                         # epochs 3 and 4 kept, not trained again
    assert "extending" in capsys.readouterr().out


def test_a_run_row_tells_the_best_epoch_from_the_final_one():
    row = ckpt.run_row(history_best_not_last())
    assert (row["best_val_acc"], row["best_epoch"], row["final_val_acc"], row["epochs"]) == (71.0, 2, 58.0, 4)


class FakeRun:
    """What ``Tracker`` uses of a wandb run; ``finish`` records its exit code."""

    def __init__(self, folder: Path) -> None:
        self.dir, self.url, self.summary, self.exit_codes = str(folder / "files"), "https://w", {}, []

    def define_metric(self, *args, **kwargs) -> None:
        pass

    def log(self, *args, **kwargs) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        self.exit_codes.append(exit_code)


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    run = FakeRun(tmp_path / "wandb-run")
    module = types.SimpleNamespace(init=lambda **kwargs: run, Settings=lambda **kwargs: None)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return run


@pytest.mark.parametrize("error, code", [(None, 0), (TrainingDiverged("loss is nan"), 1), (RuntimeError("x"), 1)])
def test_wandb_gets_the_exit_code_of_how_the_run_ended(fake_wandb, tmp_path, error, code):
    try:
        with Tracker(load_config(), tmp_path / "run", mode="offline"):
            if error is not None:
                raise error
    except type(error) if error is not None else ():
        pass
    assert fake_wandb.exit_codes == [code]


def test_a_diverged_fit_is_a_failed_wandb_run(fake_wandb, tmp_path, monkeypatch, one_thread):
    def diverge(*args, **kwargs):
        raise TrainingDiverged("loss is nan at step 0; lower TRAIN.LR")
    monkeypatch.setattr(engine, "train_one_epoch", diverge)
    with pytest.raises(TrainingDiverged):
        fit(tiny_cifar_config(tmp_path, "WANDB.MODE=offline"))
    assert fake_wandb.exit_codes == [1]


def test_a_sweep_without_resume_retrains_its_finished_members(tmp_path, one_thread):
    base, root = tiny_cifar_config(tmp_path), tmp_path / "sweep"
    assert [r["status"] for r in sweeps.run_sweep(base, {"a": {"SEED": 1}}, output_root=root)] == ["ran"]
    assert [r["status"] for r in sweeps.run_sweep(base, {"a": {"SEED": 1}}, output_root=root)] == ["skipped"]
    (root / "a" / "stale-marker").write_text("")   # clear_run leaves other files: the metrics show the retrain
    ckpt.write_jsonl(root / "a" / ckpt.METRICS, [{"epoch": 1, "stale": True}])
    rows = sweeps.run_sweep(base, {"a": {"SEED": 1}}, output_root=root, resume=False)
    assert [r["status"] for r in rows] == ["ran"]
    assert [r["epoch"] for r in read_metrics(root / "a")] == [1, 2]
    assert not any("stale" in r for r in read_metrics(root / "a"))


@pytest.mark.parametrize("optimizer, cls", [("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)])
def test_throughput_times_the_optimizer_it_is_asked_for(monkeypatch, capsys, optimizer, cls, one_thread):
    built = []
    build = throughput.build_optimizer
    monkeypatch.setattr(throughput, "build_optimizer", lambda config, model: built.append(build(config, model))
                        or built[-1])
    assert throughput.main(["--model", "lenet", "--optimizer", optimizer, "--max-batch-size", "1", "--device", "cpu",
                             "--warmup-steps", "0", "--timed-steps", "1", "--seconds-per-size", "0"]) == 0
    assert built and all(type(o) is cls for o in built)
    assert f"lenet, 32 px, {optimizer}, cpu" in capsys.readouterr().out


# ----------------------------------------------------------------------------- grading

class ResNetActivatedLogits(ResNet18):
    """A student's ResNet18 with one extra function after its last Linear layer."""
    after = staticmethod(torch.relu)

    def forward(self, x: Tensor) -> Tensor:
        return self.after(super().forward(x))


@pytest.mark.parametrize("after", [torch.relu, lambda t: torch.softmax(t, dim=1)], ids=["relu", "softmax"])
def test_check_fails_a_model_with_anything_after_its_last_linear(monkeypatch, after):
    grading.load_reference("resnet18")
    monkeypatch.setattr(ResNetActivatedLogits, "after", staticmethod(after))
    monkeypatch.setitem(model_build.MODELS, "resnet18", ResNetActivatedLogits)
    [result] = grading.grade("resnet18", ("forward",))
    assert result.status == "FAIL"
    assert result.message.startswith("every layer matches but the logits differ") and "end of forward" in result.message


# ----------------------------------------------------------------------------- release, reproduce, worksheet

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))   # binary: no text marker to find


def test_the_release_ships_no_answer_figures(tmp_path):
    """The measured answers include binary figures, which no text-marker search finds."""
    if (ROOT / ".git").exists():   # this checkout (not a copy of its files, as mutmut runs the tests in)
        shipped = release.tracked_files(ROOT)
        in_repo = subprocess.run(["git", "ls-files", "worksheet_figures"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
        assert any(p.endswith(".png") for p in in_repo)
        assert not [p for p in shipped if p.startswith("worksheet_figures/") or p.endswith(".png")]

    repo = tmp_path / "repo"
    files = {"worksheet.md": b"# Worksheet\n", "README.md": b"read me\n", "nmeplib/x.py": b"x = 1\n",
             "worksheet_figures/lr.png": PNG, "results/03_training/training.png": PNG,
             "notebooks/figures/curves.png": PNG}
    for path, data in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(data)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    built, _ = release.build_release(repo)
    assert set(built) == {"worksheet.md", "README.md", "nmeplib/x.py"}
    assert not any(PNG in data for data in built.values())


def _table(text: str, first_header: str) -> list[dict[str, str]]:
    """The markdown table of ``text`` whose header starts with ``first_header``, as header -> cell rows."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]   # noqa: E731
    header, rows = cells(lines[start]), []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, cells(line))))
    return rows


def _run(history: list[dict], model: str) -> dict:
    """A run as the worksheet reads it from a results folder (``results.collect``)."""
    return {**{k: v for k, v in ckpt.run_row(history).items() if k in ckpt.SUMMARY_KEYS}, "num_classes": 10,
            "history": history, "settings": {"model": model, "dataset": "cifar10", "img_size": 32}}


def test_the_worksheet_shows_the_final_and_the_best_epoch_each_in_its_column(tmp_path):
    history = history_best_not_last()
    runs = {"runs/lenet": _run(history, "lenet"), "runs/alexnet": _run(history, "alexnet")}
    results = {"03_training": {"experiment": "03_training", "machine": MACHINE, "runs": runs},
               "06_resnet": {"experiment": "06_resnet", "machine": MACHINE,
                             "runs": {"runs": _run(history, "resnet18")}}}
    training, _ = ws.region_training(results, tmp_path, "training")
    resnet, _ = ws.region_resnet(results, tmp_path, "resnet")
    for text in (training, resnet):
        for row in _table(text, "model"):
            assert row["final val acc"] == "58.00%" and row["best val acc"] == "71.00% (epoch 2)"
    assert {row["val loss"] for row in _table(training, "model")} == {"1.900"}      # epoch 4's, not its train loss
    assert {row["train loss"] for row in _table(training, "model")} == {"0.500"}


def test_a_reproduced_experiment_replaces_the_worksheets_stale_table(tmp_path, monkeypatch):
    history = history_best_not_last()
    config = tiny_cifar_config(tmp_path / "data").to_dict()

    def execute(step, resume):   # what the notebook leaves: its runs, as fit writes them, and papermill's record
        folder = Path(step["folder"])
        ckpt.write_json(folder / step["notebook"], {"cells": [], "metadata": {"papermill": {
            "parameters": step["parameters"], "end_time": "2026-12-01T00:00:00", "exception": None}}})
        for name in ("lenet", "alexnet"):
            run = folder / "runs" / name
            run.mkdir(parents=True)
            ckpt.write_jsonl(run / ckpt.METRICS, history)
            ckpt.write_json(run / ckpt.SUMMARY, {**{k: v for k, v in ckpt.run_row(history).items()
                                                    if k in ckpt.SUMMARY_KEYS}, "num_classes": 10, "config": config})
    monkeypatch.setattr(reproduce, "_execute", execute)
    out = tmp_path / "results"
    rows = reproduce.reproduce(out, only=["03"], results_dir=tmp_path / "results-folder", stream=io.StringIO())
    assert [r["status"] for r in rows] == ["finished"]
    sheet = tmp_path / "worksheet.md"
    sheet.write_text("<!-- BEGIN RESULTS training -->\nstale table\n<!-- END RESULTS training -->\n")
    fates = ws.regenerate(tmp_path / "results-folder", sheet, stream=io.StringIO())
    text = sheet.read_text()
    assert fates["training"].startswith("rewritten") and "stale table" not in text
    assert [row["final val acc"] for row in _table(text, "model")] == ["58.00%", "58.00%"]


def test_smoke_runs_never_land_in_the_real_run_folders(tmp_path, monkeypatch):
    from nmeplib.workbook import notebook_config, output_path

    monkeypatch.setenv("NMEPLIB_RUNS", str(tmp_path))
    assert output_path("runs/lenet", smoke=True) == tmp_path / "smoke" / "lenet"
    assert output_path("runs/lenet") == tmp_path / "lenet"
    smoke = notebook_config("lenet_base", smoke=True, output_dir="runs/lenet")
    assert Path(smoke.OUTPUT) == tmp_path / "smoke" / "lenet"
    assert Path(notebook_config("lenet_base", output_dir="runs/lenet").OUTPUT) == tmp_path / "lenet"


def test_the_prediction_grid_counts_the_wrong_predictions(monkeypatch):
    from nmeplib import submission
    from nmeplib.workbook import prediction_grid

    data = image_split(4, per_class=1)                         # labels 0, 1, 2, 3
    monkeypatch.setattr(submission, "predict", lambda *args, **kwargs: {
        "dataset": data, "config": load_config(), "acc": 25.0, "predictions": torch.tensor([0, 0, 0, 0])})
    fig, result = prediction_grid("model.pt", n=4)
    assert "3 of 4 shown are wrong" in fig._suptitle.get_text()
    assert sorted(ax.title.get_color() for ax in fig.axes) == ["green", "red", "red", "red"]
