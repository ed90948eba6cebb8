"""Where the code runs: device, seeding, process rank and memory figures."""
from __future__ import annotations

import gc
import os
import random
import resource
import sys
import warnings
from typing import Iterable

import numpy as np
import torch

from .errors import ConfigError


def default_device() -> torch.device:
    """CUDA when there is a GPU (this process's ``LOCAL_RANK`` one under torchrun), else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def usable_cpus() -> int:
    """CPU cores this process may use (its affinity), shared among the processes torchrun
    started on this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:       # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


_WARNED: set[tuple[int, int]] = set()


SMALL_MACHINE = 2  # cores: with this few, reading in the training process beats any worker


def worker_count(requested: int) -> int:
    """Loader worker processes for ``DATA.NUM_WORKERS=requested``. Asked for more than the cores
    this process may use (:func:`usable_cpus`), the loader starts one per core, since more only
    take turns on them; on a machine of ``SMALL_MACHINE`` cores or fewer it reads in the training
    process instead (0), where a worker would compete with training for the same cores and the
    hand-over of its batches costs more than reading them (on 2 cores: about 16,000 img/s read
    in-process against 10,000 with one or two workers). Says so once per process."""
    usable = usable_cpus()
    if requested <= usable:
        return requested
    fitted = usable if usable > SMALL_MACHINE else 0
    if (requested, fitted) not in _WARNED:
        _WARNED.add((requested, fitted))
        how = f"starts {fitted} worker(s)" if fitted else "reads in this process (as DATA.NUM_WORKERS=0)"
        warnings.warn(f"DATA.NUM_WORKERS={requested} but this process may use {usable} CPU core(s); "
                      f"the loader {how}", RuntimeWarning, stacklevel=2)
    return fitted


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device`` as training runs it: on CUDA in channels_last, with cuDNN autotuning
    and TF32 matmuls (bf16 autocast is the engine's). The one place these settings are made."""
    model = model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        model = model.to(memory_format=torch.channels_last)
    return model


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak memory allocated by tensors since the last reset. CPU: the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def release_memory(device: torch.device) -> None:
    """Free what unreachable tensors still hold: collect garbage, and on CUDA hand the cached
    blocks back to the driver (after an out-of-memory error, say, so training can go on)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_gpus_for_processes(nproc: int, local_rank: int = 0) -> None:
    """Raise ConfigError when ``nproc`` processes (one per GPU) need more GPUs than this machine
    shows, before any process waits for the others."""
    count = torch.cuda.device_count()
    if max(nproc, local_rank + 1) > count:
        raise ConfigError(
            f"{max(nproc, local_rank + 1)} processes on this machine need one GPU each, but only {count} "
            f"GPU{'s are' if count != 1 else ' is'} visible (process LOCAL_RANK {local_rank}): start at most "
            f"{count} (torchrun --nproc_per_node={count}, or fit(config, nproc={count})), or set "
            f"CUDA_VISIBLE_DEVICES= (empty) to train on the CPU with gloo")


def init_distributed() -> bool:
    """Join the process group when started by torchrun (NCCL on GPUs, gloo on CPUs).

    On CUDA each process takes the GPU of its ``LOCAL_RANK``; more processes per machine than
    GPUs end at once with a ConfigError that says what to do. Returns True when this call
    started it; outside torchrun it does nothing.
    """
    import datetime

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if torch.cuda.is_available():
        check_gpus_for_processes(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                            timeout=datetime.timedelta(minutes=30))
    return True


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def in_kernel() -> bool:
    """Whether this runs inside an IPython kernel (JupyterLab, papermill, nbval), without importing IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


def in_notebook() -> bool:
    """True in a JupyterLab kernel that a person watches; False in a terminal, pytest, and headless runs.

    papermill and nbval execute cells with ``allow_stdin`` off, a front end with it on, so
    headless runs keep their saved notebooks and logs free of progress widgets.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    kernel = getattr(shell, "kernel", None)
    return type(shell).__name__ == "ZMQInteractiveShell" and bool(getattr(kernel, "_allow_stdin", True))


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None, *, show: bool = True,
             **kwargs):
    """A tqdm bar in a terminal or JupyterLab (a widget); none in logs, headless notebook runs and
    ranks other than 0, where the per-epoch line says enough. ``NMEPLIB_PROGRESS=0`` hides it
    everywhere, and ``show=False`` for this loop (a caller that runs many tiny ones)."""
    from tqdm.auto import tqdm

    interactive = in_notebook() or sys.stderr.isatty()
    quiet = (not show or os.environ.get("NMEPLIB_PROGRESS", "1") == "0" or not interactive
             or rank_and_world()[0] != 0)
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=quiet, mininterval=1.0, dynamic_ncols=True,
                **kwargs)
