"""The training engine: one loop shared by ``train_one_epoch``, ``validate`` and ``evaluate``.

``fit(config)`` builds data, model, optimizer and schedule from the config, runs the
epochs, writes ``metrics.jsonl`` and checkpoints into ``OUTPUT`` and returns the history.
It runs on CUDA when there is a GPU (bf16 autocast, channels_last, fused optimizer) and on
the CPU otherwise; nothing here names a device.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint as ckpt
from .config import Config
from .data import build_loader
from .errors import ConfigError, DatasetError, NmeplibError
from .models import build_model_from_config
from .optim import Schedule, build_optimizer
from .runstate import RESUMABLE, PLACE, read_run, user_settings
from .runtime import (barrier, default_device, peak_memory_mb, progress, rank_and_world, reset_peak_memory,
                      seed_everything, synchronize)
from .files import read_metrics, write_json, write_jsonl
from .tracking import Tracker

LOG_EVERY = 50  # steps between progress-bar updates (each one reads the loss back from the device)


DIVERGED = 10  # an epoch whose mean training loss exceeds this many times ln(classes) has diverged


class TrainingDiverged(NmeplibError, RuntimeError):
    """The loss became NaN, infinite, or far above an untrained model's; the last good checkpoint is kept."""


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _all_reduce(*values: torch.Tensor) -> list[torch.Tensor]:
    if dist.is_available() and dist.is_initialized():
        for v in values:
            dist.all_reduce(v)
    return list(values)


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor in rank order (each rank holds a contiguous shard)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def run_epoch(model: nn.Module, loader, device: torch.device, *, optimizer: torch.optim.Optimizer | None = None,
              schedule: Schedule | None = None, label_smoothing: float = 0.0, desc: str = "",
              keep_predictions: bool = False, show_progress: bool = True) -> dict:
    """One pass over ``loader``: trains when given an optimizer, else only measures.

    Returns ``loss`` (mean over labelled images), ``acc`` (percent), ``count``, ``time_s``,
    ``img_per_s`` and, with ``keep_predictions``, ``predictions`` and ``labels`` in loader
    order. Labels of -1 (hidden) count in neither loss nor accuracy. ``show_progress=False``
    keeps the progress bar (``runtime.progress``) off even where one would show.
    """
    training = optimizer is not None
    model.train(training)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    labelled = torch.zeros((), device=device, dtype=torch.long)
    seen, predictions, labels = 0, [], []
    synchronize(device)
    start = time.perf_counter()
    bar = progress(loader, desc, total=len(loader), show=show_progress)
    with torch.set_grad_enabled(training):
        for step, (x, y) in enumerate(bar):
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=-1, label_smoothing=label_smoothing,
                                   reduction="sum")
            n_labelled = (y >= 0).sum()
            if training:
                optimizer.zero_grad(set_to_none=True)
                (loss / n_labelled.clamp(min=1)).backward()
                optimizer.step()
                if schedule is not None:
                    schedule.step_batch()
            pred = logits.argmax(1)
            loss_sum += loss.detach()
            correct += ((pred == y) & (y >= 0)).sum()
            labelled += n_labelled
            seen += len(y)
            if keep_predictions:
                predictions.append(pred)
                labels.append(y)
            if step % LOG_EVERY == 0:  # the only host syncs in the loop
                mean_loss = (loss_sum / labelled.clamp(min=1)).item()
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(f"loss is {mean_loss} at step {step} ({desc}); lower TRAIN.LR")
                bar.set_postfix(loss=f"{mean_loss:.3f}")
    synchronize(device)
    elapsed = time.perf_counter() - start
    loss_sum, correct, labelled = _all_reduce(loss_sum, correct, labelled)
    count = int(labelled)
    result = {"loss": (loss_sum / max(count, 1)).item() if count else float("nan"),
              "acc": 100.0 * int(correct) / count if count else float("nan"),
              "count": count, "time_s": elapsed, "img_per_s": seen * rank_and_world()[1] / max(elapsed, 1e-9)}
    if training and count and not result["loss"] <= DIVERGED * math.log(max(2, logits.shape[1])):
        raise TrainingDiverged(f"the training loss is {result['loss']:.4g} ({desc}), over {DIVERGED} times an "
                               f"untrained model's ln(classes); the run diverged: lower TRAIN.LR")
    if keep_predictions:
        result["predictions"] = _gather(torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long))
        result["labels"] = _gather(torch.cat(labels) if labels else torch.empty(0, dtype=torch.long))
    return result


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device, *,
                    schedule: Schedule | None = None, label_smoothing: float = 0.0, epoch: int = 0) -> dict:
    """Train for one epoch; returns loss, accuracy and throughput of the epoch."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    return run_epoch(model, loader, device, optimizer=optimizer, schedule=schedule,
                     label_smoothing=label_smoothing, desc=f"train {epoch}")


@torch.no_grad()
def validate(model: nn.Module, loader, device: torch.device, *, label_smoothing: float = 0.0) -> dict:
    """Loss and accuracy on a labelled split (the whole split under torchrun)."""
    return run_epoch(model, loader, device, label_smoothing=label_smoothing, desc="validate")


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device) -> dict:
    """Predictions for every image of a split in its order, plus loss/accuracy where labelled."""
    return run_epoch(model, loader, device, desc="evaluate", keep_predictions=True)


def num_classes_for(config: Config, train_split, *others) -> int:
    """``MODEL.NUM_CLASSES`` if set, else the dataset's own class count (CIFAR-10's ten, an HDF5
    file's class names). Every split must hold images and only labels below that count, checked
    before the first step, so bad data can neither grow the model nor end a run after an epoch."""
    num_classes = config.MODEL.NUM_CLASSES or train_split.num_classes
    for split in (train_split, *others):
        where = split.path or config.DATA.DATASET
        if len(split) == 0:
            raise DatasetError(f"the {split.split} split of {where} holds no images; training and validation "
                               f"need at least one each")
        labels = split.labels[split.labels >= 0]  # -1: hidden
        if len(labels) and int(labels.max()) >= num_classes and config.MODEL.NUM_CLASSES:
            raise ConfigError(f"MODEL.NUM_CLASSES={num_classes} but the {config.DATA.DATASET} labels go up to "
                              f"{int(labels.max())}")
        if len(labels) and int(labels.max()) >= num_classes:
            raise DatasetError(f"the {split.split} split of {where} has label {int(labels.max())}, but "
                               f"the dataset has {num_classes} classes (0-{num_classes - 1}); fix the file or "
                               f"the class names")
    return num_classes


def _open_run(config: Config, resume: bool, overwrite: bool, writer: bool) -> tuple[dict | None, list | None]:
    """Decide what ``OUTPUT`` holds for this run: ``(checkpoint to resume or None, finished history or None)``.

    A folder with a run is never replaced unless ``overwrite``; the same settings finished
    there are reused; ``resume`` accepts only :data:`~nmeplib.runstate.RESUMABLE` changes.
    ``writer`` (rank 0) cleans the folder; every rank reaches the same decision.
    """
    out = Path(config.OUTPUT)
    found = None if overwrite else read_run(out, checkpoint=resume)
    if found is None or not found.has_files:
        if writer:
            ckpt.clear_run(out)
        return None, None
    if resume:
        state = found.checkpoint
        if state is None:
            print(f"{out} has no {ckpt.LAST} (the run stopped in its first epoch): starting it again", flush=True)
            if writer:
                ckpt.clear_run(out)
            return None, None
        if writer:
            ckpt.remove_temporaries(out)
        changes = found.changes(config, RESUMABLE)
        if changes:
            raise ConfigError(f"cannot resume {out} with other settings ({'; '.join(changes)}); resume with the "
                              f"run's settings, or train into another OUTPUT")
        done, planned = state["epoch"], state["config"]["TRAIN"]["EPOCHS"]
        if config.TRAIN.EPOCHS < done:
            raise ConfigError(f"{out} already has {done} epochs; TRAIN.EPOCHS={config.TRAIN.EPOCHS} cannot "
                              f"undo them (give at least {done}, or train into another OUTPUT)")
        if config.TRAIN.EPOCHS != planned:
            print(f"extending {out} from {planned} to {config.TRAIN.EPOCHS} epochs: epochs {done + 1}.. follow "
                  f"the {config.TRAIN.EPOCHS}-epoch learning-rate schedule", flush=True)
        for moved in found.moved_defaults(config, RESUMABLE):
            print(f"{out}: {moved}; epochs {done + 1}.. use the new default", flush=True)
        return state, None
    changes = found.changes(config, PLACE)
    changes = ["unknown settings"] if changes is None else changes
    if found.finished and not changes and found.epochs == config.TRAIN.EPOCHS:
        print(f"{out} already holds this finished run ({found.epochs} epochs, best val acc "
              f"{found.summary['best_val_acc']:.2f}%): reusing it; overwrite=True (--overwrite) trains it again",
              flush=True)
        return None, read_metrics(out)
    what = f"a run with other settings ({'; '.join(changes)})" if changes else "an unfinished run of these settings"
    raise ckpt.OutputError(f"{out} already holds {what}; resume=True (--resume) continues it, overwrite=True "
                           f"(--overwrite) replaces it, or choose another OUTPUT")


def _print_epoch(row: dict, epochs: int) -> None:
    print(f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.2e}  train loss {row['train_loss']:.4f} "
          f"acc {row['train_acc']:.2f}%  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2f}%  "
          f"{row['train_img_per_s']:.0f} img/s", flush=True)


def _restore(state: dict, model: nn.Module, optimizer, schedule: Schedule, out: Path, writer: bool) -> list[dict]:
    """Load a checkpoint's weights, optimizer, schedule and random state; returns its history.

    The writer also brings the other run files in line with it: a run killed between its
    checkpoint and its metrics line or best checkpoint gets them now.
    """
    ckpt.check_weights(out / ckpt.LAST, state["model"], model)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    ckpt.set_rng_state(state["rng"])
    history = state["history"]
    if writer:
        write_jsonl(out / ckpt.METRICS, history)
        if ckpt.best_row(history)["epoch"] == state["epoch"] and not ckpt.is_best_current(out):
            ckpt.link_best(out)
    return history


def _end_epoch(out: Path, state: dict, tracker: Tracker, callbacks, epochs: int) -> None:
    """Rank 0's files for a finished epoch, the checkpoint first: it is what a resumed run trusts."""
    history = state["history"]
    ckpt.save_checkpoint(state, out / ckpt.LAST)
    if ckpt.best_row(history) is history[-1]:
        ckpt.link_best(out)
    tracker.log_epoch(history[-1])
    for callback in callbacks:
        callback(history[-1])
    _print_epoch(history[-1], epochs)


def _write_summary(out: Path, history: list[dict], num_classes: int, config: Config, tracker: Tracker) -> None:
    row = ckpt.run_row(history)
    summary = {**{key: row[key] for key in ckpt.SUMMARY_KEYS}, "num_classes": num_classes, "config": config.to_dict(),
               "config_set": user_settings(config)}
    write_json(out / ckpt.SUMMARY, summary)
    tracker.log_summary(**{k: v for k, v in summary.items() if k not in ("config", "config_set")})


def fit(config: Config, *, resume: bool = False, overwrite: bool = False,
        callbacks: Iterable[Callable[[dict], None]] = (), device: torch.device | str | None = None,
        nproc: int = 1) -> list[dict]:
    """Train ``config`` for ``TRAIN.EPOCHS`` epochs into ``OUTPUT``; returns one metrics dict per epoch.

    ``resume`` continues the run in ``OUTPUT`` from ``checkpoint_last.pt`` (or starts it when it
    stopped before its first checkpoint). A folder that holds another run is refused unless
    ``overwrite``; the same settings already finished there are read back, not retrained.
    ``callbacks`` get each epoch's metrics (a live plot, say). ``nproc > 1`` launches torchrun
    with that many processes; under torchrun itself, every rank calls ``fit``.
    """
    if nproc > 1 and not (dist.is_available() and dist.is_initialized()):
        from .distributed import launch
        return launch(config, nproc, resume=resume, callbacks=callbacks, **({"overwrite": True} if overwrite else {}))
    rank, world = rank_and_world()
    out = Path(config.OUTPUT)
    with ckpt.locked(out) if rank == 0 else nullcontext():
        state, finished = _open_run(config, resume, overwrite, writer=rank == 0)
        for row in finished or ():
            for callback in callbacks:
                callback(row)
        if finished is not None:
            return finished
        device = torch.device(device) if device is not None else default_device()
        seed_everything(config.SEED)
        train_loader = build_loader(config, "train", device=device)
        val_loader = build_loader(config, "val", device=device)
        num_classes = num_classes_for(config, train_loader.split, val_loader.split)
        model = build_model_from_config(config, num_classes, device)
        optimizer = build_optimizer(config, model)
        schedule = Schedule(config, optimizer, len(train_loader))
        history = _restore(state, model, optimizer, schedule, out, rank == 0) if state else []
        trained = distribute(torch.compile(model) if config.TRAIN.COMPILE else model, device)
        smoothing = config.TRAIN.LABEL_SMOOTHING
        with Tracker(config, out, resume_rows=history, enabled=rank == 0) as tracker:
            for epoch in range(len(history) + 1, config.TRAIN.EPOCHS + 1):
                lr = schedule.lr
                reset_peak_memory(device)
                train = train_one_epoch(trained, train_loader, optimizer, device, schedule=schedule,
                                        label_smoothing=smoothing, epoch=epoch)
                val = validate(trained, val_loader, device, label_smoothing=smoothing)
                schedule.step_epoch(val["loss"])
                history.append({"epoch": epoch, "lr": lr, "train_loss": train["loss"], "train_acc": train["acc"],
                                "val_loss": val["loss"], "val_acc": val["acc"], "train_time_s": train["time_s"],
                                "val_time_s": val["time_s"], "train_img_per_s": train["img_per_s"],
                                "peak_mem_mb": peak_memory_mb(device)})
                if rank == 0:
                    _end_epoch(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "schedule": schedule.state_dict(), "epoch": epoch,
                                     "best_acc": ckpt.best_row(history)["val_acc"], "history": history,
                                     "rng": ckpt.rng_state(), "config": config.to_dict(),
                                     "config_set": user_settings(config),
                                     "class_names": list(train_loader.split.class_names), "num_classes": num_classes},
                               tracker, callbacks, config.TRAIN.EPOCHS)
            if rank == 0 and history:
                _write_summary(out, history, num_classes, config, tracker)
    barrier()  # every rank leaves once rank 0's files are written
    return history


def distribute(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel under torchrun, else itself."""
    if rank_and_world()[1] == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
