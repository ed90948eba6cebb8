"""Sweep members run as notebooks: ``run_sweep(..., runner=NotebookRunner())`` executes a notebook
(default ``04_alexnet.ipynb`` of :func:`settings.notebooks_dir`) once per member with papermill, its
settings passed as the notebook's parameters (``settings.PARAMETER_KEYS``) or in its ``overrides``
parameter. :func:`sweep_runner` maps the runner names of notebook 05's ``runner`` parameter to
runners."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..config import Config, ConfigError
from ..engine import TrainingDiverged
from ..sweeps import Runner
from .parameters import check_names
from .settings import PARAMETER_KEYS, notebooks_dir

DEFAULT_NOTEBOOK = "04_alexnet.ipynb"  # in notebooks_dir()
RUNNER_NAMES = ("library", "papermill")
# Config key -> the notebook parameter that papermill sets for it: the notebooks' own map
# (settings.PARAMETER_KEYS) read backwards. A key whose parameter the notebook does not
# declare goes into its ``overrides`` parameter; output_dir and epochs must be declared by name.
NOTEBOOK_PARAMETERS: dict[str, str] = {key: name for name, key in PARAMETER_KEYS.items()}
REQUIRED_NOTEBOOK_KEYS = ("TRAIN.EPOCHS", "OUTPUT")
OVERRIDES_PARAMETER = "overrides"
# Passed only when the notebook takes them (a resumed member also gets ``resume=True``).
OPTIONAL_NOTEBOOK_KEYS = ("WANDB.GROUP", "WANDB.NAME")


def declared_parameters(notebook: str | os.PathLike | None) -> tuple[Path, dict]:
    """The notebook to run (``None``: :data:`DEFAULT_NOTEBOOK` of :func:`settings.notebooks_dir`)
    and the parameters it declares."""
    import papermill as pm

    notebook = Path(notebook) if notebook is not None else notebooks_dir() / DEFAULT_NOTEBOOK
    if not notebook.is_file():
        raise FileNotFoundError(f"sweep notebook not found: {notebook}")
    return notebook, pm.inspect_notebook(str(notebook))


def notebook_parameters(notebook: Path, declared: Mapping, overrides: Mapping[str, Any], config: Config,
                         resume: bool) -> dict[str, Any]:
    """papermill parameters for one member: each key by its named parameter where the notebook
    declares one, the rest in its ``overrides`` parameter; :class:`ConfigError` names a key the
    notebook cannot take (no named parameter and no ``overrides``)."""
    takes_overrides = OVERRIDES_PARAMETER in declared
    keys = dict.fromkeys([*overrides, *REQUIRED_NOTEBOOK_KEYS])
    keys.update({key: None for key in OPTIONAL_NOTEBOOK_KEYS
                 if NOTEBOOK_PARAMETERS[key] in declared or takes_overrides})
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    missing = []
    for key in keys:
        name = NOTEBOOK_PARAMETERS.get(key)
        if name in declared:
            params[name] = config.get_path(key)
        elif takes_overrides and key not in REQUIRED_NOTEBOOK_KEYS:
            extra[key] = config.get_path(key)
        else:
            missing.append(f"{key} ({name})" if name else key)
    if missing:
        raise ConfigError(f"{notebook} declares no parameter for {', '.join(missing)}"
                         f"{'' if takes_overrides else ' and no overrides parameter'}")
    if extra:
        params[OVERRIDES_PARAMETER] = extra
    if resume and "resume" in declared:
        params["resume"] = True
    return params


def run_notebook(notebook: Path, folder: Path, parameters: dict, declared: Mapping | None = None) -> None:
    """Execute ``notebook`` with ``parameters``, keeping the executed copy in ``folder``; a member
    whose loss diverged raises :class:`TrainingDiverged` here too, as ``fit`` does.

    A parameter the notebook does not declare (``declared``, else read from the notebook) is a
    :class:`ConfigError` naming the close matches, before papermill starts: papermill itself
    would only warn and run the notebook on its default."""
    import papermill as pm

    if declared is None:
        notebook, declared = declared_parameters(notebook)
    check_names(parameters, declared, Path(notebook).name)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(notebook), str(folder / notebook.name), parameters=parameters, progress_bar=False)
    except pm.PapermillExecutionError as err:
        if err.ename == TrainingDiverged.__name__:
            raise TrainingDiverged(err.evalue) from None
        raise


class NotebookRunner(Runner):
    """Trains a sweep member by executing ``notebook`` (None: :data:`DEFAULT_NOTEBOOK`) with the
    member's settings as parameters, keeping the executed copy in the member's folder.

    The notebook holds the base settings: of the sweep's base config only TRAIN.EPOCHS is passed
    on (and the overridden keys' values), so only those decide whether a finished run is the
    member's. A member resumes only if the notebook declares a ``resume`` parameter; otherwise an
    interrupted member starts again. ``smoke`` (when not None) is passed as the notebook's
    ``smoke`` parameter, so members run in the sweeping notebook's mode.
    """

    def __init__(self, notebook: str | os.PathLike | None = None, *, smoke: bool | None = None) -> None:
        self.notebook, self.smoke = notebook, smoke
        self._declared: dict | None = None

    def declared(self) -> tuple[Path, dict]:
        """The notebook's path and declared parameters, read once."""
        if self._declared is None:
            self.notebook, self._declared = declared_parameters(self.notebook)
        return Path(self.notebook), self._declared

    def compared_keys(self, overrides: Mapping[str, Any]) -> list[str]:
        return [*overrides, "TRAIN.EPOCHS"]

    def parameters(self, config: Config, overrides: Mapping[str, Any], *, resume: bool) -> dict[str, Any]:
        """papermill parameters for one member (:func:`notebook_parameters`, and ``smoke``)."""
        notebook, declared = self.declared()
        params = notebook_parameters(notebook, declared, overrides, config, resume)
        if self.smoke is not None and "smoke" in declared:
            params["smoke"] = self.smoke
        return params

    def check(self, config: Config, overrides: Mapping[str, Any], *, resume: bool) -> None:
        self.parameters(config, overrides, resume=resume)

    def __call__(self, config: Config, overrides: Mapping[str, Any], *, resume: bool) -> None:
        notebook, declared = self.declared()
        run_notebook(notebook, Path(config.OUTPUT), self.parameters(config, overrides, resume=resume), declared)

    def __repr__(self) -> str:
        return f"NotebookRunner({self.notebook!r})"


def sweep_runner(name: str, *, notebook: str | os.PathLike | None = None, smoke: bool | None = None) -> Runner:
    """The runner that notebook 05's ``runner`` parameter names: ``"library"`` trains in the
    kernel (``sweeps.Runner``), ``"papermill"`` executes ``notebook`` per member
    (:class:`NotebookRunner`, in smoke mode when ``smoke``)."""
    if name == "library":
        return Runner()
    if name == "papermill":
        return NotebookRunner(notebook, smoke=smoke)
    raise ConfigError(f"unknown sweep runner {name!r}; use one of {', '.join(RUNNER_NAMES)}")
