"""Notebook parameter names: a name the notebook does not declare is an error naming the close
matches, inside a papermill run (the config cell sees papermill's injected cell) and before the
library launches papermill itself (``workbook.execute``)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nmeplib.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
PARAMETERS = "lr = 3e-4\nbatch_size = 256\nepochs = 2  # a comment\nsmoke = None\n"


def tiny_notebook(path: Path) -> Path:
    """A notebook laid out like the workbook's: a ``parameters`` cell, then the config cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata.tags = ["parameters"]
    config = nbformat.v4.new_code_cell(f'import nmeplib.workbook as wb\n\n'
                                       f'wb.check_parameters(globals(), "{path.name}")\n'
                                       'print(f"training at lr={lr}")')
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), params, config]
    nbformat.write(nb, path)
    return path


def papermill(notebook: Path, *params: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "papermill", "-k", "python3", "--no-progress-bar", str(notebook),
               str(notebook.with_name("out.ipynb"))]
    for param in params:
        command += ["-p", *param.split("=", 1)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)


@pytest.mark.timeout(110)
def test_papermill_run_with_a_mistyped_parameter_fails_naming_the_close_match(tmp_path):
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    result = papermill(notebook, "learning_rate=0.5", "epochs=1")
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert ("unknown notebook parameter 'learning_rate' (did you mean 'lr'?); "
            "tiny.ipynb takes: lr, batch_size, epochs, smoke") in text
    outputs = nbformat.read(notebook.with_name("out.ipynb"), as_version=4).cells[-1].outputs
    assert [(out.output_type, out.get("ename")) for out in outputs] == [("error", "ConfigError")]  # nothing trained
    good = papermill(notebook, "lr=0.5", "epochs=1")
    assert good.returncode == 0, good.stdout + good.stderr
    executed = nbformat.read(notebook.with_name("out.ipynb"), as_version=4)
    assert "training at lr=0.5" in executed.cells[-1].outputs[0].text


def history(*cells: str) -> dict:
    """A notebook's globals as IPython keeps them: ``In`` holds the cells run so far, this one last."""
    return {"In": ["", *cells, "wb.check_parameters(globals(), 'nb.ipynb')"], "lr": 3e-4}


def test_check_parameters_reads_the_injected_cell():
    from nmeplib.workbook import check_parameters

    with pytest.raises(ConfigError, match=r"^unknown notebook parameters 'learning_rate' \(did you mean 'lr'\?\), "
                                          r"'ephocs' \(did you mean 'epochs'\?\); nb.ipynb takes: lr, batch_size, "
                                          r"epochs, smoke$"):
        check_parameters(history(PARAMETERS, "# Parameters\nlearning_rate = 0.5\nephocs = 1\nlr = 0.1"), "nb.ipynb")
    with pytest.raises(ConfigError, match=r"'bs' \(did you mean 'batch_size'\?\)"):
        check_parameters(history(PARAMETERS, "# Parameters\nbs = 64"), "nb.ipynb")
    check_parameters(history(PARAMETERS, "# Parameters\nlr = 0.5\nsmoke = True"), "nb.ipynb")
    # no papermill cell just before (JupyterLab, nbval, a re-run with the notebook's own variables): nothing to check
    check_parameters(history(PARAMETERS), "nb.ipynb")
    check_parameters({**history(PARAMETERS, "out = 1\nconfig = None"), "out": 1, "config": None}, "nb.ipynb")
    check_parameters({"lr": 1}, "nb.ipynb")   # plain Python: no input history


def test_run_notebook_refuses_an_unknown_parameter_before_papermill_starts(tmp_path, monkeypatch):
    import papermill as pm

    from nmeplib.workbook import execute

    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: pytest.fail("papermill was started"))
    notebook = NOTEBOOK_DIR / "04_alexnet.ipynb"
    with pytest.raises(ConfigError, match=r"^unknown notebook parameter 'learning_rate' \(did you mean 'lr'\?\); "
                                          r"04_alexnet.ipynb takes: lr, batch_size, epochs, "):
        execute.run_notebook(notebook, tmp_path / "member", {"learning_rate": 0.5, "epochs": 1})
    assert not (tmp_path / "member").exists()


def test_run_notebook_executes_the_given_notebook_into_the_member_folder(tmp_path, monkeypatch):
    import papermill as pm

    from nmeplib.engine import TrainingDiverged
    from nmeplib.workbook import execute

    calls = []
    monkeypatch.setattr(pm, "execute_notebook", lambda *args, **kwargs: calls.append((args, kwargs)))
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    folder = tmp_path / "member"
    folder.mkdir()   # a member folder that already holds the sweep's lock
    execute.run_notebook(notebook, folder, {"lr": 0.5, "epochs": 1})
    assert calls == [((str(notebook), str(folder / "tiny.ipynb")),
                      {"parameters": {"lr": 0.5, "epochs": 1}, "progress_bar": False})]

    def diverges(*args, **kwargs):
        raise pm.PapermillExecutionError(2, 1, "fit(config)", "TrainingDiverged", "loss is nan at step 3", [])

    monkeypatch.setattr(pm, "execute_notebook", diverges)
    with pytest.raises(TrainingDiverged, match="^loss is nan at step 3$"):
        execute.run_notebook(notebook, tmp_path / "new", {"lr": 10.0})
    assert (tmp_path / "new").is_dir()
    with pytest.raises(FileNotFoundError, match=f"^sweep notebook not found: {tmp_path / 'none.ipynb'}$"):
        execute.declared_parameters(tmp_path / "none.ipynb")


def test_notebooks_dir_comes_from_the_setting_or_the_working_tree(tmp_path, monkeypatch):
    from nmeplib.workbook import execute
    from nmeplib.workbook.settings import NotebooksNotFound, notebooks_dir

    monkeypatch.delenv("NMEPLIB_NOTEBOOKS", raising=False)
    for where in (ROOT, ROOT / "nmeplib" / "workbook", NOTEBOOK_DIR):
        monkeypatch.chdir(where)
        assert notebooks_dir() == NOTEBOOK_DIR
    assert execute.declared_parameters(None)[0] == NOTEBOOK_DIR / "04_alexnet.ipynb"
    work = tmp_path.resolve()
    (work / "notebooks").mkdir()
    (work / "notebooks" / "notes.ipynb").touch()   # not a numbered notebook
    (work / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(work / "a" / "b")
    with pytest.raises(NotebooksNotFound, match="set NMEPLIB_NOTEBOOKS") as err:
        notebooks_dir()
    assert "\n" not in str(err.value)
    (work / "notebooks" / "01_x.ipynb").touch()
    assert notebooks_dir() == work / "notebooks"
    monkeypatch.setenv("NMEPLIB_NOTEBOOKS", str(NOTEBOOK_DIR))
    assert notebooks_dir() == NOTEBOOK_DIR
    monkeypatch.setenv("NMEPLIB_NOTEBOOKS", str(work / "none"))
    with pytest.raises(NotebooksNotFound, match="is not a folder"):
        notebooks_dir()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_checks_its_parameters(path):
    """The cell after the parameters checks the names papermill injected, under the notebook's own name."""
    first, second = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"][:2]
    assert f'wb.check_parameters(globals(), "{path.name}")' in second.source
    assert not first.source.startswith("# Parameters")   # papermill's header: the check looks for it


def test_reproduce_refuses_a_parameter_no_notebook_declares(tmp_path):
    from nmeplib.course import reproduce as rp

    with pytest.raises(rp.ReproduceError, match=r"^--param: unknown notebook parameter 'learning_rate' \(did you "
                                                r"mean 'alexnet_lr' or 'lenet_lr'\?\); no notebook of 03_training "
                                                r"declares it$"):
        rp.plan(tmp_path, only=["03"], params=["learning_rate=0.5", "epochs=1"])
    with pytest.raises(rp.ReproduceError, match=r"05_sweeps.ipynb has no parameter 'ephocs' "
                                                r"\(did you mean 'epochs'\?\); it takes "):
        rp.plan(tmp_path, params=["05_sweeps.ephocs=1"])
    steps = rp.plan(tmp_path, only=["03", "05"], params=["lr=0.5"])   # declared by 05 only: 03 goes without it
    assert [step["parameters"].get("lr") for step in steps] == [None] + [0.5] * 5   # 03, then 05's five pieces


def test_assigned_names_are_the_top_level_assignments_in_order():
    from nmeplib.workbook.parameters import assigned_names

    source = ("lr = 3e-4\nbatch_size: int = 256\nprint(lr)\nepochs += 1\nfor step in range(2):\n    inner = step\n"
              "config.lr: float = 0.1\na = b = 2\nlr = 0.5\n")
    assert assigned_names(source) == ["lr", "batch_size", "a", "b"]
    assert assigned_names("lr = (") == []


def test_check_parameters_needs_only_the_parameters_and_the_injected_cell_before_it():
    from nmeplib.workbook import check_parameters

    namespace = {"In": [PARAMETERS, "# Parameters\nlearning_rate = 0.5", "wb.check_parameters(globals(), 'nb.ipynb')"]}
    with pytest.raises(ConfigError, match=r"^unknown notebook parameter 'learning_rate' \(did you mean 'lr'\?\); "):
        check_parameters(namespace, "nb.ipynb")
    check_parameters({"In": ["# Parameters\nlearning_rate = 0.5", "wb.check_parameters(globals(), 'nb.ipynb')"]},
                     "nb.ipynb")


def test_check_sections_returns_the_choice_and_refuses_unknown_or_empty_ones():
    from nmeplib.workbook.parameters import SWEEP_SECTIONS, check_sections

    assert check_sections("lr", SWEEP_SECTIONS) == ["lr"]
    assert check_sections(("augment", "lr"), iter(SWEEP_SECTIONS)) == ["augment", "lr"]
    with pytest.raises(ConfigError, match=r"^unknown section\(s\) 'lrs' \(did you mean 'lr'\?\); "
                                          r"choose from lr, batch_size, throughput, augment, variations$"):
        check_sections(["lrs"], SWEEP_SECTIONS)
    with pytest.raises(ConfigError, match=r"^no section chosen; choose from lr, batch_size, throughput, augment, "
                                          r"variations$"):
        check_sections([], iter(SWEEP_SECTIONS))
