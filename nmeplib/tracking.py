"""Experiment tracking: every epoch goes to ``metrics.jsonl`` and, when it works, to W&B.

``metrics.jsonl`` (one JSON object per epoch) is the record that plots and resumed runs
read, so it is written whatever happens to W&B: offline, disabled, no network or a bad
key only turn W&B off, with one warning. W&B is never allowed to prompt for a login.
"""
from __future__ import annotations

import netrc
import os
import warnings
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from .checkpoint import METRICS
from .errors import ConfigError
from .files import read_metrics, write_jsonl

MODES = ("online", "offline", "disabled")
INIT_TIMEOUT_S = 30.0  # how long an online wandb.init may wait for the server


def is_logged_in() -> bool:
    """Whether W&B credentials exist locally: ``$WANDB_API_KEY`` or a netrc entry for the host.

    Reads files only, so it neither touches the network nor prompts.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).netloc
    path = os.environ.get("NETRC") or Path.home() / ".netrc"
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str | None = None) -> str:
    """The W&B mode to use: ``mode`` if given, else ``$WANDB_MODE``, else online when logged in.

    Empty strings count as not given, so the config's default ``WANDB.MODE: ""`` defers.
    """
    for value, source in ((mode, "mode"), (os.environ.get("WANDB_MODE"), "WANDB_MODE")):
        if value is None or not value.strip():
            continue
        if value.strip().lower() not in MODES:
            raise ConfigError(f"invalid W&B {source} {value!r}: use one of {', '.join(MODES)}")
        return value.strip().lower()
    return "online" if is_logged_in() else "offline"


class Tracker:
    """Logs a run's epochs to ``output_dir/metrics.jsonl`` and to W&B.

    ``mode`` overrides ``config.WANDB.MODE`` (see :func:`resolve_mode`); ``resume_rows``
    are the epochs a resumed run already has; ``enabled=False`` (every process but rank 0
    under DDP) makes every method a no-op. ``run_dir`` is the W&B run folder, or None.
    Use it as a context manager so the run is finished (and marked failed on errors).
    """

    def __init__(self, config: Mapping, output_dir: str | os.PathLike, *, mode: str | None = None,
                 resume_rows: list[dict] | None = None, enabled: bool = True) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.metrics_path = self.output_dir / METRICS
        self.rows: list[dict] = [dict(row) for row in resume_rows or ()]
        self.summary: dict[str, Any] = {}
        self.enabled = enabled
        self.run = None
        self.run_dir: Path | None = None
        self.mode = "disabled"
        if enabled:
            self.mode = resolve_mode(mode or config["WANDB"]["MODE"])
            if self.mode != "disabled":
                self._start_wandb()

    def _start_wandb(self) -> None:
        if self.mode == "online" and not is_logged_in():
            warnings.warn("W&B: not logged in (run `wandb login` or set WANDB_API_KEY); "
                          "logging offline instead", RuntimeWarning, stacklevel=3)
            self.mode = "offline"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        wb = self.config["WANDB"]
        try:
            import wandb

            self.run = wandb.init(
                project=wb["PROJECT"], entity=wb["ENTITY"] or None, group=wb["GROUP"] or None,
                name=wb["NAME"] or self.output_dir.resolve().name,
                config=self.config.to_dict() if hasattr(self.config, "to_dict") else dict(self.config),
                dir=str(self.output_dir), mode=self.mode, reinit="finish_previous",
                settings=wandb.Settings(silent=True, init_timeout=INIT_TIMEOUT_S))
            # Chart everything against the epoch, so a resumed run lines up with the first.
            self.run.define_metric("epoch")
            self.run.define_metric("*", step_metric="epoch")
            self.run_dir = Path(self.run.dir).parent
            if self.mode == "online":
                print(f"W&B run: {self.run.url}")
        except Exception as err:  # no network, bad key, bad entity...: keep training
            self._wandb_failed("start", err)

    def _wandb_failed(self, action: str, err: Exception) -> None:
        warnings.warn(f"W&B could not {action} ({type(err).__name__}: {err}); continuing without it, "
                      f"metrics still go to {self.metrics_path}", RuntimeWarning, stacklevel=4)
        self.run, self.run_dir, self.mode = None, None, "disabled"

    def _log(self, data: dict) -> None:
        if self.run is not None:
            try:
                self.run.log(data, step=None)
            except Exception as err:
                self._wandb_failed("log", err)

    def log_epoch(self, row: Mapping) -> None:
        """Add one epoch's metrics (with an ``epoch`` key) to metrics.jsonl, then to W&B."""
        if not self.enabled:
            return
        self.rows.append(dict(row))
        write_jsonl(self.metrics_path, self.rows)
        self._log(dict(row))

    def log_summary(self, **values: Any) -> None:
        """Set final numbers (test accuracy, best epoch...) on the run's summary."""
        if not self.enabled:
            return
        self.summary.update(values)
        if self.run is not None:
            try:
                self.run.summary.update(values)
            except Exception as err:
                self._wandb_failed("update the summary", err)

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run; for an offline run, say how to upload it."""
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:
            warnings.warn(f"W&B could not finish the run ({type(err).__name__}: {err})",
                          RuntimeWarning, stacklevel=2)
        if self.mode == "offline":
            print(f"W&B offline run saved in {self.run_dir}\nUpload it with: wandb sync {self.run_dir}")

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)
