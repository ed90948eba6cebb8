"""pytest set-up for the whole repository (tests/ and notebooks/ under nbval).

Notebooks run in smoke mode (bundled digits, one or two epochs) and W&B never reaches the
network; both can still be overridden from the environment. Runs that notebooks start in
relative folders (``runs/...``) go under ``$NMEPLIB_RUNS``, a temporary folder removed at the
end, not into the repository's ``runs/``; ``reproduce`` writes its results under
``$NMEPLIB_RESULTS``, another temporary folder, not into ``results/``. Every test has a time limit (pytest-timeout,
``timeout`` in pyproject.toml); slow tests and notebook cells get the longer ones below.
"""
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("NMEPLIB_SMOKE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
_RUNS = None if "NMEPLIB_RUNS" in os.environ else tempfile.mkdtemp(prefix="nmeplib-test-runs-")
if _RUNS:
    os.environ["NMEPLIB_RUNS"] = _RUNS
_RESULTS = None if "NMEPLIB_RESULTS" in os.environ else tempfile.mkdtemp(prefix="nmeplib-test-results-")
if _RESULTS:
    os.environ["NMEPLIB_RESULTS"] = _RESULTS

SLOW_TIMEOUT_S = 960           # tests marked slow (a papermill run may take 900 s on a busy machine)
NOTEBOOK_CELL_TIMEOUT_S = 300  # one notebook cell under nbval, the kernel's start included


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout"):
            continue
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
        elif str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.timeout(NOTEBOOK_CELL_TIMEOUT_S))


def pytest_unconfigure(config):
    for folder in (_RUNS, _RESULTS):
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
