"""Multi-process training launched from Python: ``fit(config, nproc=N)`` runs torchrun.

torchrun starts N copies of ``python -m nmeplib train`` (DistributedDataParallel; NCCL on
GPUs, gloo on CPUs). Their output streams here, rank 0's metrics reach the callbacks as
each epoch's row lands in ``metrics.jsonl``, and a rank that fails ends the whole job:
torchrun stops the others.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping

import yaml

from .checkpoint import METRICS
from .config import Config
from .errors import ConfigError
from .files import read_metrics


def torchrun_command(config_path: str | Path, nproc: int, output: str | Path, resume: bool = False,
                     overwrite: bool = False) -> list[str]:
    """The torchrun command line for a saved config (what a user would type)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "nmeplib", "train", "--config", str(config_path), "--output", str(output)]
    return command + ["--resume"] * resume + ["--overwrite"] * overwrite


def _uses_gpus(env: Mapping[str, str]) -> bool:
    """Whether processes started with ``env`` see this process's GPUs (not hidden by
    ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    if env.get("CUDA_VISIBLE_DEVICES") != os.environ.get("CUDA_VISIBLE_DEVICES"):
        return str(env.get("CUDA_VISIBLE_DEVICES", "")).strip() not in ("", "-1")
    return torch.cuda.is_available()


class _MetricsFile:
    """The rows a run appends to ``metrics.jsonl``, each handed out once.

    A file there before the run counts only once it has been rewritten (a fresh run replaces
    it; a resumed run appends to the rows it had, which are not handed out again).
    """

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.start = self._state()
        self.seen = len(read_metrics(path)) if resume and self.start is not None else 0

    def _state(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def new_rows(self, final: bool = False) -> list[dict]:
        """Rows written since the last call; ``final``: also those of a run read back unchanged."""
        state = self._state()
        if state is None or (state == self.start and not final):
            return []
        rows = read_metrics(self.path)
        new, self.seen = rows[self.seen:], max(self.seen, len(rows))
        return new


def launch(config: Config, nproc: int, *, resume: bool = False, overwrite: bool = False,
           callbacks: Iterable[Callable[[dict], None]] = (), env: Mapping[str, str] | None = None) -> list[dict]:
    """Train ``config`` on ``nproc`` processes; returns rank 0's history like ``fit``.

    ``callbacks`` get each epoch's row as it is written to ``OUTPUT/metrics.jsonl``. ``env``
    adds to (or overrides) the processes' environment, e.g. ``{"CUDA_VISIBLE_DEVICES": ""}``
    to train on the CPU with gloo on a machine with GPUs. On GPUs, ``nproc`` may not exceed
    the number of GPUs (ConfigError). An error in a callback, or an interrupt, stops the job.
    """
    if nproc < 1:
        raise ConfigError(f"nproc must be at least 1, got {nproc}")
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if _uses_gpus(child_env):
        from .runtime import check_gpus_for_processes
        check_gpus_for_processes(nproc)
    out = Path(config.OUTPUT)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    metrics = _MetricsFile(out / METRICS, resume)
    callbacks = list(callbacks)

    def forward(final: bool = False) -> None:
        for row in metrics.new_rows(final):
            for callback in callbacks:
                callback(row)

    command = torchrun_command(config_path, nproc, out, resume, overwrite)
    print("running:", " ".join(command), flush=True)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=child_env) as proc:
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                forward()
            proc.wait()
        except BaseException:
            proc.terminate()   # torchrun passes it on to every rank
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"distributed training on {nproc} processes failed (torchrun exit status "
                           f"{proc.returncode}); the failing rank's error is in the output above")
    forward(final=True)
    return read_metrics(out / METRICS)
