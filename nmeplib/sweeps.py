"""Hyper-parameter sweeps: several runs of one base config, one folder and W&B run each.

``run_sweep(base, members, output_root=...)`` trains the members one after another into
``output_root/<name>`` (one W&B group, one run per member) and returns a results table.
Finished members are read back instead of retrained and interrupted ones resume, so an
interrupted sweep is finished by calling it again; a member folder holding a finished run of
other settings is refused unless ``overwrite=True``, and one that another process trains in is
never touched. A runner trains each member: :class:`Runner`, the default, in this process with
``fit``; ``nmeplib.workbook.execute.NotebookRunner`` by executing a notebook per member.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import checkpoint as ckpt
from .config import Config, parse_override, from_dict, load_config
from .engine import TrainingDiverged, fit
from .files import read_json, read_metrics
from .runstate import PLACE, read_run

STATE_WORDS = {"done": "finished, skipped", "partial": "resuming", "new": "training"}
RESULT_COLUMNS = ("best_val_acc", "final_val_acc", "best_epoch", "epochs", "time_per_epoch_s", "total_time_s",
                  "output", "status")

Overrides = Mapping[str, Any] | Sequence[str]


def grid(key: str, values: Iterable[Any], fmt: str = "{name}={value}") -> dict[str, dict[str, Any]]:
    """Members that vary one config key: ``grid("TRAIN.LR", [1e-3, 1e-2])`` gives
    ``{"lr=0.001": {"TRAIN.LR": 0.001}, "lr=0.01": {"TRAIN.LR": 0.01}}``.

    ``fmt`` names each member from ``{value}``, ``{key}`` and ``{name}`` (the key's last part,
    lower case), e.g. ``"lr={value:.0e}"``.
    """
    name, values = key.rsplit(".", 1)[-1].lower(), list(values)
    members = {fmt.format(name=name, key=key, value=value): {key: value} for value in values}
    if len(members) < len(values):
        raise ValueError(f"fmt {fmt!r} gives several values the same name: {', '.join(members)}")
    return members


def _as_dict(overrides: Overrides | str) -> dict[str, Any]:
    """``{"TRAIN.LR": 0.01}`` from a mapping, ``["TRAIN.LR=0.01", ...]`` or one ``"KEY=VALUE"``."""
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        overrides = [overrides]
    return dict(parse_override(item) for item in overrides)


def _default_name(overrides: Mapping[str, Any]) -> str:
    return ",".join(f"{key.rsplit('.', 1)[-1].lower()}={value}" for key, value in overrides.items()) or "base"


def _named(members: Mapping[str, Overrides] | Sequence[Overrides]) -> dict[str, dict[str, Any]]:
    """Members as name -> overrides; a list of overrides is named after its values."""
    if isinstance(members, Mapping):
        return {str(name): _as_dict(overrides) for name, overrides in members.items()}
    named = {}
    for overrides in members:
        overrides = _as_dict(overrides)
        name = _default_name(overrides)
        if name in named:
            raise ValueError(f"two sweep members are both named {name!r}")
        named[name] = overrides
    return named


def safe_name(name: str) -> str:
    """A member name as a folder name: letters, digits and ``. = + - _`` only."""
    return re.sub(r"[^\w.=+-]+", "_", name).strip("._") or "run"


def _member_config(base: Config | Mapping | str | os.PathLike, overrides: Mapping[str, Any]) -> Config:
    if isinstance(base, Mapping):
        return from_dict(base, overrides)
    return load_config(base, overrides)


def _ignored(config: Config, keys: Sequence[str] | None, epochs: bool) -> tuple[str, ...]:
    """Settings left out of a member's comparison: the run's place (None: every other key counts)
    or every key but ``keys``; ``epochs=False`` also TRAIN.EPOCHS, which a continued run may raise."""
    ignore = () if epochs else ("TRAIN.EPOCHS",)
    return ignore + (PLACE if keys is None else tuple(k for k in config.flat() if k not in keys))


def _state(folder: Path, config: Config, keys: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """What ``folder`` holds for this member, and how a finished run there differs from ``config``.

    ``done`` (this very run, finished), ``partial`` (a checkpoint of these settings to continue
    up to as many or more epochs), ``other`` (a finished run of other settings, never replaced
    unasked) or ``new`` (nothing, or an unfinished run of other settings, trained afresh).
    Settings are compared as ``fit`` compares them (:meth:`runstate.StoredRun.changes`).
    """
    found = read_run(folder)
    changes = found.changes(config, _ignored(config, keys, epochs=True))
    same_training = found.changes(config, _ignored(config, keys, epochs=False)) == []
    if found.finished:
        if changes == []:
            return "done", []
        if same_training and (folder / ckpt.LAST).is_file() and found.epochs < config.TRAIN.EPOCHS:
            return "partial", []
        return "other", changes or ["unknown settings"]
    if found.checkpoint is not None:
        return ("partial" if same_training else "new"), []
    return "new", []


def _claim(name: str, folder: Path, config: Config, keys: Sequence[str] | None, *, resume: bool,
           overwrite: bool, clear: bool) -> str:
    """The member's state, read under its folder's lock; with ``clear``, its folder emptied for a
    fresh run under that same lock, so a folder another process trains in is never touched.

    OutputError when another process holds the folder, or when it holds a finished run of other
    settings and not ``overwrite``.
    """
    try:
        with ckpt.locked(folder):
            state, changes = _state(folder, config, keys)
            if state == "other" and not overwrite:
                raise ckpt.OutputError(f"{folder} holds a finished run of other settings ({'; '.join(changes)}); "
                                       f"overwrite=True replaces it, or choose another output_root")
            state = state if resume and state != "other" else "new"
            if clear and state == "new":
                ckpt.clear_run(folder)
            return state
    except ckpt.OutputError as err:
        raise ckpt.OutputError(f"sweep member {name!r}: {err}") from None


class Runner:
    """Trains one sweep member into its folder, ``config.OUTPUT``: this one in this process, with
    ``fit`` (resuming from the folder's checkpoint when ``resume``).

    The default runner and the base of others, which may also override :meth:`compared_keys`
    and :meth:`check`. Any function ``runner(config, overrides, resume=...)`` serves as well,
    with these two as here.
    """

    def compared_keys(self, overrides: Mapping[str, Any]) -> list[str] | None:
        """The settings a finished run in a member's folder must share with the member to be
        kept or resumed; None: every setting but the run's place (``runstate.PLACE``)."""
        return None

    def check(self, config: Config, overrides: Mapping[str, Any], *, resume: bool) -> None:
        """Refuse a member this runner cannot train, before any member of the sweep trains."""

    def __call__(self, config: Config, overrides: Mapping[str, Any], *, resume: bool) -> None:
        fit(config, resume=resume)


SweepRunner = Callable[..., None]  # a Runner, or any function runner(config, overrides, resume=...)


def _compared_keys(runner: SweepRunner, overrides: Mapping[str, Any]) -> list[str] | None:
    compared = getattr(runner, "compared_keys", None)
    return compared(overrides) if compared is not None else None


def _result_row(name: str, values: dict, folder: Path, status: str, **extra: Any) -> dict:
    """One results-table row: the member's values and its run's results (None for a failed member)."""
    if status != "failed" and read_json(folder / ckpt.SUMMARY) is None:
        raise RuntimeError(f"sweep member {name!r} finished without writing {folder / ckpt.SUMMARY}; "
                           f"does its run write into OUTPUT={folder}?")
    run = {} if status == "failed" else ckpt.read_run_row(folder, val_time=True)
    return {"name": name, **values, **{key: run.get(key) for key in RESULT_COLUMNS}, "output": str(folder),
            "status": status, **extra}


def run_sweep(base: Config | str | os.PathLike, members: Mapping[str, Overrides] | Sequence[Overrides], *,
              output_root: str | os.PathLike, group: str | None = None, runner: SweepRunner | None = None,
              resume: bool = True, overwrite: bool = False) -> list[dict]:
    """Train each member of a sweep in turn and return one results row per member.

    ``base`` is a Config or a config name/path; ``members`` maps a name to its overrides
    (``{"lr=1e-3": {"TRAIN.LR": 1e-3}}``, see :func:`grid`) or lists overrides, named after
    their values. Member ``name`` trains into ``output_root/<name>`` (see :func:`safe_name`)
    as W&B run ``name`` in group ``group`` (default: ``output_root``'s folder name).

    With ``resume`` (the default) a member whose folder holds its finished run (summary.json of
    the same settings and epochs) is not retrained but read back (status ``skipped``), and one
    with a checkpoint of its settings continues from it (also a finished run given more epochs);
    an interrupted run of other settings is trained afresh. ``resume=False`` trains every member
    afresh. A folder holding a finished run of other settings is refused with the differences
    (OutputError, before any member trains) unless ``overwrite=True``, which replaces it. A
    member folder is read and cleared only under its lock (``checkpoint.locked``), so a folder
    that another process trains in stops the sweep with OutputError naming that process, and
    nothing of its run is touched.
    A member whose loss diverges gets status ``failed`` and an ``error``; the sweep goes on.

    ``runner`` trains each member that is not read back: ``runner(config, overrides, resume=...)``
    with the member's full config (its folder is ``config.OUTPUT``); None is :class:`Runner`, which
    trains in this process. ``nmeplib.workbook.execute.NotebookRunner`` executes a notebook per
    member instead (the course's notebooks pick one by name: ``wb.sweep_runner("papermill")``).
    A runner's ``compared_keys`` says which settings make a finished run the member's own, and its
    ``check`` refuses a member before the first one trains.

    Rows hold ``name``, the overridden values, ``best_val_acc``, ``final_val_acc``, ``best_epoch``,
    ``epochs``, ``time_per_epoch_s`` and ``total_time_s`` (training plus validation, see
    ``checkpoint.run_row``), ``output`` and ``status`` (``ran``, ``skipped`` or ``failed``).
    """
    runner = Runner() if runner is None else runner
    if not callable(runner):
        raise TypeError(f"runner must be a callable such as sweeps.Runner(), not {runner!r}; the notebooks' "
                        f"runner names map to one through nmeplib.workbook.sweep_runner")
    check = getattr(runner, "check", None)
    root = Path(output_root)
    group = group or root.resolve().name
    named = _named(members)
    folders = {name: root / safe_name(name) for name in named}
    if len(set(folders.values())) < len(folders):
        raise ValueError(f"sweep member names clash as folder names: {', '.join(named)}")
    plan = []  # built and checked first, so a bad override or a refused folder stops the sweep before it trains
    for name, overrides in named.items():
        sweep_keys = {"OUTPUT": str(folders[name]), "WANDB.GROUP": group, "WANDB.NAME": name}
        config = _member_config(base, {**overrides, **sweep_keys})
        keys = _compared_keys(runner, overrides)
        state = _claim(name, folders[name], config, keys, resume=resume, overwrite=overwrite, clear=False)
        if check is not None:
            check(config, overrides, resume=state == "partial")
        plan.append((name, overrides, config, keys))

    results = []
    for number, (name, overrides, config, keys) in enumerate(plan, 1):
        folder, values = folders[name], {key: config.get_path(key) for key in overrides}
        # Read again under the lock: the folder may have changed while earlier members trained.
        state = _claim(name, folder, config, keys, resume=resume, overwrite=overwrite, clear=True)
        print(f"[{number}/{len(plan)}] {name}: {STATE_WORDS[state]} ({folder})", flush=True)
        if state == "done":
            results.append(_result_row(name, values, folder, "skipped"))
            continue
        try:
            runner(config, overrides, resume=state == "partial")
        except TrainingDiverged as err:
            print(f"{name}: {err}", flush=True)
            results.append(_result_row(name, values, folder, "failed", error=str(err)))
            continue
        results.append(_result_row(name, values, folder, "ran"))
    return results


def plot_sweep(results: Sequence[Mapping[str, Any]], path: str | os.PathLike | None = None,
               title: str | None = None):
    """Every member's loss and accuracy curves on shared axes (see ``plots.plot_history``)."""
    from .plots import plot_history

    runs = {row["name"]: read_metrics(row["output"]) for row in results
            if (Path(row["output"]) / ckpt.METRICS).is_file()}
    return plot_history(runs, path, title)
