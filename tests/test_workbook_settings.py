"""Notebook settings: smoke mode from its parameter or the environment, the workbook's folders,
the smoke changes to a config and the hyperparameter table."""
from __future__ import annotations

from pathlib import Path

import pytest

from nmeplib.config import load_config
from nmeplib.workbook import settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("env, expected", [
    (None, False), ("", False), ("1", True), ("True", True), (" YES ", True), ("on", True),
    ("0", False), ("no", False), ("false", False),
])
def test_smoke_mode_reads_the_environment_when_not_given(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv("NMEPLIB_SMOKE", raising=False)
    else:
        monkeypatch.setenv("NMEPLIB_SMOKE", env)
    assert settings.smoke_mode() is expected
    assert settings.smoke_mode(None) is expected
    assert settings.smoke_mode("  ") is expected   # an empty papermill parameter: the environment decides


def test_smoke_mode_given_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("NMEPLIB_SMOKE", "1")
    assert settings.smoke_mode(False) is False
    assert settings.smoke_mode("0") is False
    monkeypatch.setenv("NMEPLIB_SMOKE", "0")
    assert settings.smoke_mode(True) is True
    assert settings.smoke_mode("TRUE") is True
    assert settings.smoke_mode("Yes") is True


def test_repo_root_is_found_from_the_working_directory_upwards(tmp_path, monkeypatch):
    for where in (ROOT, ROOT / "notebooks", ROOT / "nmeplib" / "workbook"):
        monkeypatch.chdir(where)
        assert settings.repo_root() == ROOT
    workbook = tmp_path.resolve() / "workbook"
    (workbook / "notebooks").mkdir(parents=True)
    (workbook / "nmeplib").mkdir()
    (workbook / "nmeplib" / "__init__.py").touch()
    (workbook / "notebooks" / "deeper").mkdir()
    monkeypatch.chdir(workbook / "notebooks" / "deeper")
    assert settings.repo_root() == workbook
    (workbook / "nmeplib" / "__init__.py").unlink()   # a notebooks/ folder alone is not a workbook
    assert settings.repo_root() == ROOT   # the checkout this package is imported from


def test_output_path_puts_runs_under_the_runs_folder_and_the_rest_under_the_workbook(tmp_path, monkeypatch):
    workbook = tmp_path.resolve() / "workbook"
    (workbook / "notebooks").mkdir(parents=True)
    (workbook / "nmeplib").mkdir()
    (workbook / "nmeplib" / "__init__.py").touch()
    monkeypatch.chdir(workbook / "notebooks")
    monkeypatch.delenv("NMEPLIB_RUNS", raising=False)
    assert settings.runs_root() == workbook / "runs"
    assert settings.output_path("runs/04_alexnet") == workbook / "runs" / "04_alexnet"
    assert settings.output_path("results/04_alexnet") == workbook / "results" / "04_alexnet"
    smoke_results = settings.output_path("results/04_alexnet", smoke=True)
    assert smoke_results == workbook / "runs" / "smoke" / "results" / "04_alexnet"
    assert settings.output_path(tmp_path / "elsewhere", smoke=True) == tmp_path / "elsewhere"
    monkeypatch.setenv("NMEPLIB_RUNS", str(tmp_path / "all-runs"))
    assert settings.output_path("runs/x") == tmp_path / "all-runs" / "x"
    assert settings.output_path("runs/x", smoke=True) == tmp_path / "all-runs" / "smoke" / "x"
    assert settings.output_path("other/x") == workbook / "other" / "x"


def test_smoke_overrides_switch_to_digits_and_cap_the_sizes():
    config = load_config("alexnet_base")
    assert settings.smoke_overrides(config) == {
        "DATA.IMG_SIZE": 64, "DATA.NUM_WORKERS": 0, "DATA.DOWNLOAD": False, "DATA.CLASS_NAMES": "",
        "DATA.BATCH_SIZE": 128, "TRAIN.EPOCHS": 1, "TRAIN.WARMUP_EPOCHS": 0, "DATA.TRAIN_SUBSET": 0,
        "DATA.DATASET": "digits", "DATA.ROOT": "", "WANDB.MODE": "disabled",
    }
    small = load_config("digits_lenet", ["DATA.BATCH_SIZE=16", "TRAIN.EPOCHS=1"])
    assert settings.smoke_overrides(small, {"wandb_mode": "offline"}) == {
        "DATA.IMG_SIZE": 32, "DATA.NUM_WORKERS": 0, "DATA.DOWNLOAD": False, "DATA.CLASS_NAMES": "",
        "DATA.BATCH_SIZE": 16, "TRAIN.EPOCHS": 1, "TRAIN.WARMUP_EPOCHS": 0, "DATA.TRAIN_SUBSET": 0,
        "DATA.DATASET": "digits", "DATA.ROOT": "",
    }


def test_hyperparameters_table_has_a_row_per_setting_and_a_column_per_run():
    lenet = load_config("digits_lenet")
    table = settings.hyperparameters(lenet)
    assert [row["key"] for row in table] == list(settings.HYPERPARAMETERS)
    assert table[:3] == [{"key": "MODEL.NAME", "value": "lenet"}, {"key": "DATA.DATASET", "value": "digits"},
                         {"key": "DATA.IMG_SIZE", "value": 32}]
    both = settings.hyperparameters({"a": lenet, "b": load_config("alexnet_base")})
    assert both[0] == {"key": "MODEL.NAME", "a": "lenet", "b": "alexnet"}
    assert both[-1] == {"key": "SEED", "a": 0, "b": 0}
