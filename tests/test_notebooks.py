"""The workbook notebooks: stored clean, papermill-ready parameters, real headless runs and
progress widgets when a front end runs them."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

from nmeplib.workbook.settings import runs_root

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_datasets", "02_models", "03_training", "04_alexnet", "05_sweeps", "06_resnet", "07_kaggle"]

# Parameters every notebook declares, and those of the notebooks that train (``overrides``: any
# other config setting, see workbook.settings.as_overrides).
COMMON = {"seed", "output_dir", "smoke"}
TRAINING = COMMON | {"data_root", "epochs", "batch_size", "wandb_mode"}
REQUIRED = {
    "01_datasets": COMMON | {"data_root", "img_size"},
    "02_models": COMMON | {"batch_size"},
    "03_training": TRAINING | {"img_size", "overrides"},
    "04_alexnet": TRAINING | {"lr", "img_size", "augment", "optimizer", "scheduler", "weight_decay", "dropout",
                              "activation", "overrides"},
    "05_sweeps": TRAINING | {"model", "lr", "img_size", "runner", "max_batch_size", "overrides"},
    "06_resnet": TRAINING | {"model", "lr", "img_size", "overrides"},
    "07_kaggle": TRAINING | {"model", "lr", "img_size", "overrides"},
}


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def parameters(nb) -> dict:
    """The first code cell's assignments as ``{name: value}``; fails unless each is a literal."""
    cell = code_cells(nb)[0]
    values = {}
    for statement in ast.parse(cell.source).body:
        assert isinstance(statement, ast.Assign), f"not an assignment: {ast.unparse(statement)}"
        assert len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name), ast.unparse(statement)
        try:
            values[statement.targets[0].id] = ast.literal_eval(statement.value)
        except ValueError:
            pytest.fail(f"parameter {ast.unparse(statement)!r} is not a literal; derive it in the next cell")
    return values


def test_all_notebooks_are_there():
    assert set(EXPECTED) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_holds_literal_parameters(path):
    nb = read(path)
    first, second = code_cells(nb)[:2]
    assert "parameters" in first.metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    values = parameters(nb)
    missing = REQUIRED.get(path.stem, COMMON) - set(values)
    assert not missing, f"{path.name} lacks parameter(s) {sorted(missing)}"
    assert values["smoke"] is None
    assert isinstance(values["output_dir"], str) and values["output_dir"].startswith("runs/")
    if "wandb_mode" in values:
        assert values["wandb_mode"] == ""
    assert "wb.smoke_mode(smoke)" in second.source, "the cell after the parameters resolves smoke mode"


def test_alexnet_notebook_exposes_every_knob():
    declared = parameters(read(NOTEBOOK_DIR / "04_alexnet.ipynb"))
    from nmeplib.workbook.execute import NOTEBOOK_PARAMETERS, notebook_parameters
    from nmeplib.workbook.settings import PARAMETER_KEYS

    assert NOTEBOOK_PARAMETERS == {key: name for name, key in PARAMETER_KEYS.items()}  # one map, read backwards
    assert {"lr", "batch_size", "epochs", "output_dir", "wandb_group", "wandb_name", "resume",
            "overrides"} <= set(declared)
    # every config key reaches the notebook: by its named parameter, else through overrides
    from nmeplib.config import VALID_KEYS, load_config

    config = load_config("alexnet_base")
    params = notebook_parameters(Path("04_alexnet.ipynb"), declared, dict.fromkeys(VALID_KEYS), config, False)
    named = {NOTEBOOK_PARAMETERS[key] for key in VALID_KEYS if NOTEBOOK_PARAMETERS.get(key) in declared}
    assert set(params) == named | {"overrides"}
    assert set(params["overrides"]) == {key for key in VALID_KEYS if NOTEBOOK_PARAMETERS.get(key) not in declared}
    assert params["overrides"]["DATA.DOWNLOAD"] is True and params["overrides"]["MODEL.NAME"] == "alexnet"


@pytest.mark.parametrize("given, expected", [
    (None, {}),
    ({}, {}),
    ({"DATA.AUGMENT": "none", "TRAIN.LABEL_SMOOTHING": 0.0}, {"DATA.AUGMENT": "none", "TRAIN.LABEL_SMOOTHING": 0.0}),
    (["DATA.AUGMENT=none", "TRAIN.LR=0.001"], {"DATA.AUGMENT": "none", "TRAIN.LR": 0.001}),
    ('{"DATA.AUGMENT": "none", "TRAIN.WEIGHT_DECAY": 0.01}', {"DATA.AUGMENT": "none", "TRAIN.WEIGHT_DECAY": 0.01}),
    ('["TRAIN.OPTIMIZER=sgd"]', {"TRAIN.OPTIMIZER": "sgd"}),
    ("TRAIN.OPTIMIZER=sgd TRAIN.MOMENTUM=0.8", {"TRAIN.OPTIMIZER": "sgd", "TRAIN.MOMENTUM": 0.8}),
    ("", {}),
])
def test_overrides_parameter_forms(given, expected):
    from nmeplib.workbook.settings import as_overrides

    assert as_overrides(given) == expected


def test_overrides_reach_the_config_and_are_checked(tmp_path):
    from nmeplib.config import ConfigError
    from nmeplib.workbook import notebook_config

    config = notebook_config("resnet18_medium_imagenet", smoke=True, lr=1e-3, output_dir=str(tmp_path),
                             overrides={"DATA.AUGMENT": "none", "TRAIN.LABEL_SMOOTHING": 0.0,
                                        "TRAIN.OPTIMIZER": "sgd", "TRAIN.WEIGHT_DECAY": 5e-4})
    assert (config.DATA.AUGMENT, config.TRAIN.LABEL_SMOOTHING, config.TRAIN.OPTIMIZER) == ("none", 0.0, "sgd")
    assert config.TRAIN.WEIGHT_DECAY == 5e-4 and config.TRAIN.LR == 1e-3
    assert notebook_config("alexnet_base", overrides=["TRAIN.LR=0.01"], lr=1e-3).TRAIN.LR == 0.01  # overrides win
    old = notebook_config("alexnet_base", overrides="MODEL.DROP_RATE=0.25 AUG.COLOR_JITTER=0.0")
    assert old.MODEL.DROPOUT == 0.25 and old.DATA.AUGMENT == "flip"
    with pytest.raises(ConfigError, match=r"unknown config key 'TRAIN.LABEL_SMOTHING'.*TRAIN\.LABEL_SMOOTHING"):
        notebook_config("alexnet_base", overrides={"TRAIN.LABEL_SMOTHING": 0.1})
    with pytest.raises(ConfigError, match="TRAIN.OPTIMIZER must be one of"):
        notebook_config("alexnet_base", overrides=["TRAIN.OPTIMIZER=adagrad"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE items or a mapping"):
        notebook_config("alexnet_base", overrides="TRAIN.LR")


def test_demo_hdf5_follows_the_medium_imagenet_schema(tmp_path):
    from nmeplib.data.hdf5 import inspect_hdf5, read_labels
    from nmeplib.workbook import make_demo_hdf5

    path = make_demo_hdf5(tmp_path / "demo.hdf5", img_size=16)
    info = inspect_hdf5(path)
    assert info["img_size"] == 16 and info["num_classes"] == 10
    assert info["num_samples"] == {"train": 1257, "val": 269, "test": 271}
    assert bool((read_labels(path, "test") == -1).all())
    assert make_demo_hdf5(path, img_size=16) == path  # reused


def test_smoke_config_keeps_explicit_choices(tmp_path):
    from nmeplib.workbook import notebook_config

    config = notebook_config("alexnet_base", smoke=True, lr=1e-3, epochs=30, batch_size=16, img_size=70,
                             output_dir=str(tmp_path), wandb_mode="")
    assert (config.DATA.DATASET, config.DATA.IMG_SIZE, config.TRAIN.EPOCHS) == ("digits", 64, 1)
    assert (config.TRAIN.LR, config.DATA.BATCH_SIZE, config.WANDB.MODE) == (1e-3, 16, "disabled")
    real = notebook_config("alexnet_base", lr=1e-3, output_dir="runs/x")
    assert real.DATA.DATASET == "cifar10" and real.TRAIN.EPOCHS == 30 and Path(real.OUTPUT).is_absolute()


def papermill(cwd: Path, output_dir: str, out_notebook: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NMEPLIB_SMOKE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "papermill", "-k", "python3", str(NOTEBOOK_DIR / "04_alexnet.ipynb"),
               str(out_notebook), "-p", "lr", "1e-3", "-p", "output_dir", output_dir]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["root", "notebooks"])
def test_papermill_run_of_alexnet_notebook(tmp_path, where):
    if where == "root":
        cwd, output_dir = ROOT, str(tmp_path / "run")
        run_dir = Path(output_dir)
    else:  # a relative output_dir counts from the repository root wherever papermill runs
        cwd, name = NOTEBOOK_DIR, f"test-notebooks-{uuid.uuid4().hex[:8]}"
        output_dir, run_dir = f"runs/{name}", runs_root() / "smoke" / name
    try:
        result = papermill(cwd, output_dir, tmp_path / "out.ipynb")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        assert rows[0]["lr"] == pytest.approx(1e-3)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["config"]["TRAIN"]["LR"] == pytest.approx(1e-3)
        assert summary["config"]["DATA"]["DATASET"] == "digits"
        assert (run_dir / "curves.png").stat().st_size > 0
        executed = read(tmp_path / "out.ipynb")
        assert not [o for c in code_cells(executed) for o in c.outputs if o.output_type == "error"]
    finally:
        if where != "root":
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.slow
def test_papermill_overrides_land_in_the_run_config(tmp_path):
    """07_kaggle's augmentation, optimizer, weight decay and label smoothing set from papermill."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "NMEPLIB_SMOKE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    overrides = json.dumps({"DATA.AUGMENT": "none", "TRAIN.OPTIMIZER": "sgd", "TRAIN.WEIGHT_DECAY": 5e-4,
                            "TRAIN.LABEL_SMOOTHING": 0.05})
    command = [sys.executable, "-m", "papermill", "-k", "python3", str(NOTEBOOK_DIR / "07_kaggle.ipynb"),
               str(tmp_path / "out.ipynb"), "-p", "output_dir", str(run_dir), "-p", "overrides", overrides]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((run_dir / "summary.json").read_text())["config"]
    assert (config["DATA"]["AUGMENT"], config["TRAIN"]["OPTIMIZER"]) == ("none", "sgd")
    assert (config["TRAIN"]["WEIGHT_DECAY"], config["TRAIN"]["LABEL_SMOOTHING"]) == (5e-4, 0.05)
    assert (run_dir / "submission.csv").is_file()
    outputs = [out for cell in code_cells(read(tmp_path / "out.ipynb")) for out in cell.outputs]
    tables = [out for out in outputs if "text/html" in out.get("data", {}) and "<table>" in out.data["text/html"]]
    assert tables and all("text/plain" in out.data and "<" not in out.data["text/plain"] for out in tables)


WIDGET = "application/vnd.jupyter.widget-view+json"


def execute(name: str, *, front_end: bool) -> list:
    """Run a notebook (smoke mode, from conftest) and return its outputs. ``front_end=True``
    sends the execute requests with stdin allowed, as JupyterLab does; papermill and nbval do not."""
    from nbclient import NotebookClient

    nb = read(NOTEBOOK_DIR / f"{name}.ipynb")
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    if front_end:
        client.on_notebook_start = lambda **_: setattr(client.kc, "allow_stdin", True)
    client.execute()
    return [out for cell in code_cells(nb) for out in cell.outputs]


def test_progress_is_widgets_in_jupyterlab_and_quiet_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("NMEPLIB_RUNS", str(tmp_path))   # its own runs: a finished one would be read back, untrained
    shown = execute("03_training", front_end=True)
    assert sum(WIDGET in out.get("data", {}) for out in shown) >= 2   # a bar per training and per validation
    headless = execute("03_training", front_end=False)
    assert not any(WIDGET in out.get("data", {}) for out in headless)
    for outputs in (shown, headless):
        assert not [o for o in outputs if o.output_type == "error"]
        assert not [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
