"""What a run folder holds, compared with the settings wanted: the one definition of "the same run".

``fit`` (reuse a finished run, resume an interrupted one, refuse the rest), sweeps (skip, resume
or train a member) and the notebooks' runs all read a folder with :func:`read_run` and compare
settings with :meth:`StoredRun.changes`. A setting counts as changed only where the stored run's
user or the new config set it: a default moved by a code update is reported by
:meth:`StoredRun.moved_defaults`, never taken for a change of the user's settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from . import checkpoint as ckpt
from . import config as settings
from .config import Config, from_stored
from .files import read_json

# Settings a resumed run may change: where things are and how they are run, not what is trained.
RESUMABLE = ("OUTPUT", "TRAIN.EPOCHS", "TRAIN.COMPILE", "DATA.ROOT", "DATA.NUM_WORKERS", "DATA.PRELOAD",
             "DATA.DOWNLOAD", "WANDB.")
# Settings two runs of the same training may differ in: the folder and the W&B run's name.
PLACE = ("OUTPUT", "WANDB.")


def user_settings(config: Config) -> list[str]:
    """The keys whose value is not the code's default: what the user set, by a file, an override or a
    notebook. Checkpoints and summaries record them, so that a default moved by a code update is
    not taken for a change of settings."""
    return [key for key, value in config.flat().items() if value != settings.VALID_KEYS.get(key)]


def _differences(stored: dict, config: Config, ignore: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    old, new = from_stored(stored).flat(), config.flat()
    return [(key, old.get(key), value) for key, value in new.items() if old.get(key) != value
            and not key.startswith(ignore)]


def config_changes(stored: dict, config: Config, ignore: tuple[str, ...] = (),
                   user_set: Iterable[str] | None = None) -> list[str]:
    """``KEY: old → new`` for every setting in which ``config`` differs from a stored config.

    With ``user_set``, the stored run's :func:`user_settings`, a key that neither that run's user
    nor ``config`` sets is no difference: both sides mean "the default", which may have moved.
    Without it (runs stored before the record existed), every key counts.
    """
    counted = None if user_set is None else {*user_set, *user_settings(config)}
    return [f"{key}: {old!r} → {new!r}" for key, old, new in _differences(stored, config, ignore)
            if counted is None or key in counted]


def moved_defaults(stored: dict, config: Config, user_set: Iterable[str] | None,
                   ignore: tuple[str, ...] = ()) -> list[str]:
    """``KEY's default changed (old → new)`` for each setting that a stored run left at a default
    the code has changed since: the differences :func:`config_changes` does not count."""
    if user_set is None:
        return []
    counted = {*user_set, *user_settings(config)}
    return [f"{key}'s default changed ({old!r} → {new!r}); set {key}={old!r} to keep the run's value"
            for key, old, new in _differences(stored, config, ignore) if key not in counted]


def stored_config(state: dict, overrides: Iterable[str] = ()) -> Config:
    """The config a stored run continues with when no config is given: the settings its user set
    (as recorded) over today's defaults, then ``overrides``; every stored value without a record."""
    stored, user_set = state["config"], state.get("config_set")
    if user_set is not None:
        stored = {key: value for key, value in Config(stored).flat().items() if key in user_set}
    return from_stored(stored, overrides)


@dataclass(frozen=True)
class StoredRun:
    """A run folder's record: its summary (a finished run) or else its last checkpoint (an
    interrupted one), and which files of a run it holds at all."""

    folder: Path
    summary: dict | None      # summary.json: the run finished
    checkpoint: dict | None   # checkpoint_last.pt, read only where there is no summary (or when asked)
    has_files: bool           # any of a run's files, even a metrics line without a checkpoint

    @property
    def record(self) -> dict | None:
        """The settings' source: the checkpoint where one was read (what a resume continues), else
        the summary."""
        return self.checkpoint if self.checkpoint is not None else self.summary

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def epochs(self) -> int:
        """Epochs done: those of the last checkpoint where one was read, else of the finished run; 0
        for none."""
        if self.checkpoint is not None:
            return int(self.checkpoint["epoch"])
        return int(self.summary.get("epochs", 0)) if self.summary is not None else 0

    def changes(self, config: Config, ignore: tuple[str, ...] = PLACE) -> list[str] | None:
        """``KEY: old → new`` for each setting, outside ``ignore``, in which ``config`` differs from
        the stored run; None where the folder records no readable settings."""
        record = self.record
        if record is None or not isinstance(record.get("config"), dict):
            return None
        return config_changes(record["config"], config, ignore, record.get("config_set"))

    def moved_defaults(self, config: Config, ignore: tuple[str, ...] = PLACE) -> list[str]:
        record = self.record
        if record is None or not isinstance(record.get("config"), dict):
            return []
        return moved_defaults(record["config"], config, record.get("config_set"), ignore)


def read_run(folder: str | Path, *, checkpoint: bool = False) -> StoredRun:
    """What ``folder`` holds (:class:`CheckpointError` for a damaged checkpoint). With
    ``checkpoint``, the last checkpoint is read even beside a summary (a run to continue)."""
    folder = Path(folder)
    summary = read_json(folder / ckpt.SUMMARY)
    last = folder / ckpt.LAST
    state = ckpt.load_checkpoint(last, map_location="cpu") if (checkpoint or summary is None) and last.is_file() \
        else None
    has_files = any((folder / name).exists() for name in ckpt.RUN_FILES)
    return StoredRun(folder, summary, state, has_files)
