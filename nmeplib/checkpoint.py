"""A run folder's files: their names, checkpoints, the best epoch and the lock.

Every file is written whole or not at all (:func:`nmeplib.files.atomic_write`). A checkpoint
holds plain data only (state dicts, the config as nested dicts, the history, the epoch, RNG
states as bytes, the class names) and is read with ``torch.load(weights_only=True)``, so
loading one never runs code.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from .errors import CheckpointError, OutputError
from .files import METRICS, atomic_write, describe, read_json, read_metrics, write_json, write_jsonl

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
SUMMARY = "summary.json"
LOCK = ".lock"
RUN_FILES = (LAST, BEST, METRICS, SUMMARY)
SUMMARY_KEYS = ("best_val_acc", "best_epoch", "final_val_acc", "epochs", "train_time_s")  # and num_classes, config
STATE_KEYS = ("model", "optimizer", "schedule", "epoch", "history", "rng", "config", "num_classes")


def best_row(history: list[dict]) -> dict | None:
    """The epoch with the highest validation accuracy (the earliest of equals)."""
    return max(history, key=lambda r: r["val_acc"]) if history else None


def run_row(run: Sequence[Mapping[str, Any]] | Mapping[str, Any], *, val_time: bool = False) -> dict:
    """A run's results-table row from its history (metrics.jsonl rows) or summary.json: :data:`SUMMARY_KEYS`,
    ``total_time_s`` (with validation; a summary has training only), ``time_per_epoch_s`` (of the total with
    ``val_time``, else of training); a history adds ``final_train_acc``, mean ``img_per_s``, ``peak_mem_mb``."""
    if isinstance(run, Mapping):  # a summary
        run = {**{key: run[key] for key in SUMMARY_KEYS}, "total_time_s": run["train_time_s"]}
    else:
        best = best_row(run)
        run = {"best_val_acc": best["val_acc"], "best_epoch": best["epoch"], "final_val_acc": run[-1]["val_acc"],
               "epochs": len(run), "train_time_s": sum(r["train_time_s"] for r in run),
               "total_time_s": sum(r["train_time_s"] + r.get("val_time_s", 0.0) for r in run),
               "final_train_acc": run[-1]["train_acc"], "peak_mem_mb": max(r["peak_mem_mb"] for r in run),
               "img_per_s": sum(r["train_img_per_s"] for r in run) / len(run)}
    return {**run, "time_per_epoch_s": run["total_time_s" if val_time else "train_time_s"] / max(run["epochs"], 1)}


def read_run_row(folder: str | os.PathLike, *, val_time: bool = False) -> dict | None:
    """:func:`run_row` from a run folder's metrics.jsonl, else its summary.json; None without either."""
    run = (read_metrics(folder) if (Path(folder) / METRICS).is_file() else []) or read_json(Path(folder) / SUMMARY)
    return run_row(run, val_time=val_time) if run else None


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` of ``state`` to ``path``, written whole or not at all."""
    return atomic_write(path, lambda f: torch.save(state, f))


def link_best(folder: str | os.PathLike) -> None:
    """Make ``checkpoint_best.pt`` the same file as ``checkpoint_last.pt`` (a hard link where the
    file system allows one, else a copy), replacing it atomically."""
    src, dst = Path(folder) / LAST, Path(folder) / BEST
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"could not write {dst}: {describe(err, dst)}") from None


def is_best_current(folder: str | os.PathLike) -> bool:
    """Whether ``checkpoint_best.pt`` is the very file ``checkpoint_last.pt`` is."""
    src, dst = Path(folder) / LAST, Path(folder) / BEST
    return dst.is_file() and os.path.samefile(src, dst)


NOT_TORCH_SAVE = ("it is not a whole file written by torch.save (another kind of file, or one damaged or cut short); "
                  f"give a checkpoint nmeplib's training wrote (a run's {LAST} or {BEST})")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint written by ``fit``; :class:`CheckpointError` for anything else, including
    contents no training writes (an epoch without its history, a class count below one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        # torch's own words for a foreign or cut file are internals ("Unsupported operand 110", an
        # errno, a bare number from a garbage pickle), so only two causes are told apart
        if isinstance(err, PermissionError):
            reason = "you may not read it (its permissions)"
        elif "Unsupported global" in str(err):
            reason = "it holds objects other than tensors and plain data, which nmeplib does not load " \
                     "(unpickling them could run code)"
        else:
            reason = NOT_TORCH_SAVE
        raise CheckpointError(f"{path} is not a readable nmeplib checkpoint: {reason}") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        what = "a bare state dict" if isinstance(state, dict) and all(torch.is_tensor(v) for v in state.values()) \
            else f"no {', '.join(missing)}"
        raise CheckpointError(f"{path} is not an nmeplib checkpoint ({what}); train with nmeplib to get one, or "
                              f"load plain weights with model.load_state_dict(torch.load(path, weights_only=True))")
    problem = _impossible(state)
    if problem:
        raise CheckpointError(f"{path} is damaged or was edited: {problem}; use a checkpoint as nmeplib's training "
                              f"wrote it (a run's {LAST} or {BEST}), or train again")
    return state


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _impossible(state: dict) -> str | None:
    """What in a checkpoint's bookkeeping no training writes: ``fit`` saves after each epoch, with
    one history row per epoch done and at least one class."""
    epoch, history, classes = state["epoch"], state["history"], state["num_classes"]
    if not _whole(classes):
        return f"its num_classes must be a whole number of at least 1, got {classes!r}"
    if not _whole(epoch):
        return f"its epoch must be a whole number of at least 1, got {epoch!r}"
    if not isinstance(history, list) or len(history) != epoch:
        return f"its history holds {len(history) if isinstance(history, list) else 0} epochs but it says it " \
               f"ends at epoch {epoch}"
    if not all(isinstance(row, dict) and "epoch" in row and "val_acc" in row for row in history):
        return "its history rows lack epoch or val_acc"
    return None


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "a scalar"


def check_weights(path: str | os.PathLike, weights: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """:class:`CheckpointError` naming the first weight of ``path`` that ``model`` (built from its config
    and class count, on the ``meta`` device for a look that allocates nothing) has not, or has in
    another shape, instead of ``load_state_dict``'s traceback or an allocation of a crafted size."""
    expected = model.state_dict()
    lacks = [key for key in expected if key not in weights]
    extra = [key for key in weights if key not in expected]
    wrong = [key for key in expected if key in weights and tuple(weights[key].shape) != tuple(expected[key].shape)]
    if not (lacks or extra or wrong):
        return
    if wrong:
        key = wrong[0]
        detail = f"{key} is {_shape(weights[key])} in the file but {_shape(expected[key])} in the model"
    else:
        detail = f"the file lacks {', '.join(lacks[:3])}" if lacks else f"the file has {', '.join(extra[:3])}, " \
                                                                         f"which the model lacks"
    raise CheckpointError(f"{path}: its weights do not fit the model ({detail}); the file was damaged or edited, or "
                          f"its MODEL settings or class count differ from the model's: use the checkpoint as "
                          f"training wrote it, with the data it was trained on")


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.cpu().numpy().tobytes()


def _byte_tensor(value: bytes | torch.Tensor) -> torch.Tensor:
    """A CPU uint8 tensor from saved bytes (or from a tensor that ``map_location`` moved)."""
    if isinstance(value, torch.Tensor):
        return value.to("cpu", torch.uint8)
    return torch.frombuffer(bytearray(value), dtype=torch.uint8)


def rng_state() -> dict:
    """Every random state a training epoch draws from, as plain data (bytes and ints), so that
    ``map_location`` cannot move it to a device."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": _bytes(torch.get_rng_state()), "python": random.getstate(),
             "numpy": [kind, keys.astype(np.uint32).tobytes(), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = [_bytes(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`; CUDA generators only when the GPU count is the one saved."""
    torch.set_rng_state(_byte_tensor(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = np.frombuffer(bytes(keys), dtype=np.uint32) if isinstance(keys, (bytes, bytearray)) \
        else np.asarray(keys.cpu()).astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, gauss))
    saved = state.get("cuda")
    if saved is None or not torch.cuda.is_available():
        return
    if len(saved) != torch.cuda.device_count():
        warnings.warn(f"the checkpoint holds the random state of {len(saved)} GPU(s) but this machine has "
                      f"{torch.cuda.device_count()}; GPU random numbers will not repeat the interrupted run",
                      RuntimeWarning, stacklevel=2)
        return
    torch.cuda.set_rng_state_all([_byte_tensor(s) for s in saved])


def check_writable(folder: str | os.PathLike) -> None:
    """:class:`OutputError` before a run that will write into ``folder`` starts, where it cannot (a
    read-only file system, or permissions): a finished run there can still be read back."""
    folder = Path(folder)
    if not folder.is_dir() or os.access(folder, os.W_OK):
        return
    read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    why = "it is on a read-only file system" if read_only else "you may not write there (its permissions)"
    raise OutputError(f"cannot write to {folder}: {why}; copy the run to a folder you can write and give that as "
                      f"OUTPUT, or train into another OUTPUT")


def clear_run(folder: str | os.PathLike) -> None:
    """Remove a run's files from ``folder`` (not the folder, nor files nmeplib did not write)."""
    folder = Path(folder)
    check_writable(folder)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    remove_temporaries(folder)


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Temporary files left by a writer that was killed before its rename."""
    check_writable(folder)
    for name in RUN_FILES:
        for tmp in Path(folder).glob(f".{name}.*tmp"):
            tmp.unlink(missing_ok=True)


@contextmanager
def locked(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder``'s lock: one training process per run folder at a time.

    The lock is an ``flock`` on ``folder/.lock``; the kernel releases it when the process
    ends, however it ends, so a killed run never leaves its folder locked.
    """
    import fcntl

    folder = Path(folder)
    fd, writable = _open_lock(folder)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise OutputError(f"{folder} is in use by another training process (pid {owner}); wait for it to "
                              f"finish or choose another OUTPUT") from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _open_lock(folder: Path) -> tuple[int | None, bool]:
    """``folder/.lock`` opened (created if need be) and whether it could be opened for writing. In a
    folder that cannot be written (a read-only mount, no permission) an existing lock file is opened
    to read, and without one there is nothing to lock: no process can write there either."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644), True
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not folder.is_dir():
            raise OutputError(f"cannot use {folder} as a run folder: {describe(err, folder / LOCK)}") from None
    try:
        return os.open(folder / LOCK, os.O_RDONLY), False
    except FileNotFoundError:
        return None, False
    except OSError as err:
        raise OutputError(f"cannot use {folder} as a run folder: {describe(err, folder / LOCK)}") from None
