"""Multi-process training launched from Python: ``fit(config, nproc=N)`` runs torchrun.

torchrun starts N copies of ``python -m nmeplib train`` (DistributedDataParallel; NCCL on
GPUs, gloo on CPUs). Their output streams here, rank 0's metrics reach the callbacks as
each epoch ends, and a rank that fails ends the whole job: torchrun stops the others.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable

import yaml

from .config import Config
from .tracking import read_metrics


def torchrun_command(config_path: str | Path, nproc: int, output: str | Path, resume: bool = False) -> list[str]:
    """The torchrun command line for a saved config (what a user would type)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "nmeplib", "train", "--config", str(config_path), "--output", str(output)]
    return command + ["--resume"] if resume else command


def launch(config: Config, nproc: int, *, resume: bool = False,
           callbacks: Iterable[Callable[[dict], None]] = ()) -> list[dict]:
    """Train ``config`` on ``nproc`` processes; returns rank 0's history like ``fit``."""
    out = Path(config.OUTPUT)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    metrics = out / "metrics.jsonl"
    seen = len(read_metrics(metrics)) if resume and metrics.exists() else 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    print("running:", " ".join(torchrun_command(config_path, nproc, out, resume)), flush=True)
    with subprocess.Popen(torchrun_command(config_path, nproc, out, resume), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("epoch ") and metrics.exists():
                rows = read_metrics(metrics)
                for row in rows[seen:]:
                    for callback in callbacks:
                        callback(row)
                seen = len(rows)
    if proc.returncode != 0:
        raise RuntimeError(f"distributed training on {nproc} processes failed (torchrun exit status "
                           f"{proc.returncode}); the failing rank's error is in the output above")
    return read_metrics(metrics)
