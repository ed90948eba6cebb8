"""Training throughput vs batch size, and the largest batch that fits in memory (``python -m nmeplib
throughput``; ``benchmarks/pipeline.py`` is the data-pipeline benchmark, not this).

``measure_throughput("alexnet", img_size=70)`` times full training steps (forward, loss,
backward, optimizer step, as the engine runs them) on one random batch per batch size
1, 2, 4, ..., so data loading plays no part. On CUDA it stops at the first batch size
that runs out of memory. Each batch size gets a time budget (``seconds_per_size``, warm-up
and cuDNN autotuning included), so large batches time fewer steps and a whole sweep stays
short; rows arrive one at a time (:func:`iter_throughput`, or ``callback``) as each batch
size is measured.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .config import load_config
from .engine import run_epoch
from .models import build_model_from_config
from .models.summary import input_size_error
from .optim import OPTIMIZERS, build_optimizer
from .runtime import default_device, peak_memory_mb, place_model, release_memory, reset_peak_memory

CPU_MAX_BATCH_SIZE = 256     # max_batch_size=None on the CPU, where running out of memory is no signal
CUDA_MAX_BATCH_SIZE = 2**16  # safety cap for max_batch_size=None on CUDA
# Time for one batch size, warm-up included. On an H100 a ResNet18 step at 32 px takes ~0.7 s
# at batch 32,768 and ~0.25 s at 16,384, so a whole sweep up to out-of-memory (1 ... 65,536)
# spends at most a few seconds on each of its largest sizes.
SECONDS_PER_SIZE = 2.0
COLUMNS = ("batch_size", "img_per_s", "step_ms", "peak_mem_mb", "steps", "oom")

_now = time.perf_counter  # the clock of the time budget (tests replace it)


def _powers_of_two(limit: int) -> list[int]:
    return [2**i for i in range(limit.bit_length()) if 2**i <= limit]


def _run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               steps: int) -> float:
    """Seconds for ``steps`` training steps on the batch ``x, y`` (device synchronised at both ends),
    without the engine's progress bar: a sweep runs hundreds of these tiny 'epochs'."""
    return run_epoch(model, [(x, y)] * steps, x.device, optimizer=optimizer, show_progress=False)["time_s"]


def _is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def _measure(model: nn.Module, initial: dict, config, batch_size: int, img_size: int, num_classes: int,
             warmup_steps: int, timed_steps: int, budget_s: float) -> dict:
    """One batch size from the initial weights with a fresh optimizer; may raise OutOfMemoryError.

    Within ``budget_s`` seconds (measured from the start, allocation and warm-up included):
    warm-up steps run one at a time until ``warmup_steps`` are done or half the budget is
    spent (at least one); then one timed step, then as many more of ``timed_steps`` as the
    rest of the budget holds at that step's speed (at least the one).
    """
    start = _now()
    device = next(model.parameters()).device
    model.load_state_dict(initial)
    model.zero_grad(set_to_none=True)
    optimizer = build_optimizer(config, model)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    reset_peak_memory(device)
    for _ in range(warmup_steps):   # the first step also autotunes cuDNN for this shape
        _run_steps(model, optimizer, x, y, 1)
        if _now() - start >= budget_s / 2:
            break
    seconds, steps = _run_steps(model, optimizer, x, y, 1), 1
    room = budget_s - (_now() - start)
    more = timed_steps - 1 if room >= seconds * (timed_steps - 1) else math.floor(room / max(seconds, 1e-9))
    if more > 0:
        seconds += _run_steps(model, optimizer, x, y, more)
        steps += more
    seconds = max(seconds, 1e-9)
    return {"batch_size": batch_size, "img_per_s": batch_size * steps / seconds, "step_ms": 1000 * seconds / steps,
            "peak_mem_mb": peak_memory_mb(device), "steps": steps, "oom": False}


def iter_throughput(model_or_name: nn.Module | str, *, img_size: int, num_classes: int = 10,
                    batch_sizes: Sequence[int] | None = None, max_batch_size: int | None = None,
                    device: torch.device | str | None = None, warmup_steps: int = 2, timed_steps: int = 5,
                    optimizer: str = "adamw", seconds_per_size: float = SECONDS_PER_SIZE) -> Iterator[dict]:
    """:func:`measure_throughput`, one row at a time: each row is yielded as soon as its batch
    size is measured, before the next one starts (a table or plot can grow live)."""
    if timed_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need timed_steps >= 1 and warmup_steps >= 0, got {timed_steps} and {warmup_steps}")
    if not seconds_per_size >= 0:
        raise ValueError(f"seconds_per_size must be >= 0, got {seconds_per_size}")
    device = torch.device(device) if device is not None else default_device()
    overrides = {"TRAIN.OPTIMIZER": optimizer, "DATA.IMG_SIZE": img_size}
    if isinstance(model_or_name, str):
        config = load_config(None, {**overrides, "MODEL.NAME": model_or_name})
        model = build_model_from_config(config, num_classes, device)  # checks img_size, as training does
    else:
        config = load_config(None, overrides)
        model = copy.deepcopy(model_or_name)
        problem = input_size_error(model, img_size)
        if problem:
            raise ValueError(problem)
        model = place_model(model, device)
    initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
    if batch_sizes is None:
        limit = max_batch_size or (CUDA_MAX_BATCH_SIZE if device.type == "cuda" else CPU_MAX_BATCH_SIZE)
        batch_sizes = _powers_of_two(limit)
    oom_at = None
    try:
        for batch_size in batch_sizes:
            try:
                row = _measure(model, initial, config, batch_size, img_size, num_classes, warmup_steps,
                               timed_steps, seconds_per_size)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                if not _is_out_of_memory(err):
                    raise
                oom_at = batch_size
                # Leave the except block first: its traceback holds the batch and the optimizer.
            else:
                yield row
                continue
            break
    finally:
        # The model copy, its gradients and the cached blocks go before the caller sees the
        # out-of-memory row, so the device is usable again (to train, say).
        del model, initial
        release_memory(device)
    if oom_at is not None:
        yield {"batch_size": oom_at, "img_per_s": None, "step_ms": None, "peak_mem_mb": None, "steps": 0,
               "oom": True}


def measure_throughput(model_or_name: nn.Module | str, *, img_size: int, num_classes: int = 10,
                       batch_sizes: Sequence[int] | None = None, max_batch_size: int | None = None,
                       device: torch.device | str | None = None, warmup_steps: int = 2, timed_steps: int = 5,
                       optimizer: str = "adamw", seconds_per_size: float = SECONDS_PER_SIZE,
                       callback: Callable[[dict], None] | None = None) -> list[dict]:
    """Training speed per batch size: rows ``batch_size, img_per_s, step_ms, peak_mem_mb, steps, oom``.

    Batch sizes are ``batch_sizes`` or 1, 2, 4, ... up to ``max_batch_size`` (None: until
    CUDA runs out of memory, at most 65536; 256 on the CPU). Each starts from the same
    initial weights with a fresh ``optimizer`` (adamw | adam | sgd | rmsprop). Within
    ``seconds_per_size`` per batch size it runs up to ``warmup_steps`` untimed steps (at
    least one, and for at most half the budget), then times up to ``timed_steps`` steps (at
    least one); ``steps`` says how many were timed. On CUDA it uses bf16 autocast and
    channels_last like the engine. The first batch size that runs out of memory gets a row
    with ``oom`` true and ends the measurement; its memory is released first. ``peak_mem_mb``
    is the CUDA peak of that batch size, but on the CPU the process's peak RSS so far, which
    never goes down. ``callback(row)`` is called with each row as soon as it is measured
    (the command line prints each with :func:`format_row`). A model passed in is copied,
    not changed.
    """
    rows = []
    for row in iter_throughput(model_or_name, img_size=img_size, num_classes=num_classes, batch_sizes=batch_sizes,
                               max_batch_size=max_batch_size, device=device, warmup_steps=warmup_steps,
                               timed_steps=timed_steps, optimizer=optimizer, seconds_per_size=seconds_per_size):
        rows.append(row)
        if callback is not None:
            callback(row)
    return rows


def largest_fitting_batch(rows: Sequence[dict]) -> int | None:
    """The largest batch size that ran without running out of memory, or None."""
    return max((row["batch_size"] for row in rows if not row.get("oom")), default=None)


WIDTHS = {"batch_size": 10, "img_per_s": 12, "step_ms": 10, "peak_mem_mb": 11, "steps": 5, "oom": 5}


def format_row(row: dict | None = None) -> str:
    """One fixed-width table line for ``row`` (the header line when None), so rows can be
    printed one by one as they are measured."""
    if row is None:
        return "  ".join(name.rjust(width) for name, width in WIDTHS.items())

    def cell(name: str) -> str:
        value = row.get(name)
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
    return "  ".join(cell(name).rjust(width) for name, width in WIDTHS.items())


def main(argv: list[str] | None = None) -> int:
    """Command line: measure one model, printing each row as it is measured (optionally save them as JSON/CSV)."""
    from .models import MODEL_NAMES
    from .tables import save_table

    parser = argparse.ArgumentParser(prog="python -m nmeplib throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet", choices=MODEL_NAMES, help="the model to time (default: lenet)")
    parser.add_argument("--img-size", type=int, help="input side; default: the model's base config's")
    parser.add_argument("--num-classes", type=int, default=10, help="outputs of its last layer (default: 10)")
    parser.add_argument("--max-batch-size", type=int,
                        help=f"largest batch size tried; default: until out of memory (at most {CUDA_MAX_BATCH_SIZE}; "
                             f"CPU: {CPU_MAX_BATCH_SIZE})")
    parser.add_argument("--optimizer", default="adamw", choices=tuple(OPTIMIZERS),
                        help="the optimizer each training step uses (default: adamw)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per batch size (at most)")
    parser.add_argument("--timed-steps", type=int, default=5, help="timed steps per batch size (at most)")
    parser.add_argument("--seconds-per-size", type=float, default=SECONDS_PER_SIZE,
                        help="time budget per batch size, warm-up included; larger batches time fewer steps "
                             f"(default {SECONDS_PER_SIZE:g})")
    parser.add_argument("--device", help="cuda, cuda:1 or cpu; default: CUDA when there is a GPU")
    parser.add_argument("--out", help="also write the rows to this .json or .csv file")
    args = parser.parse_args(argv)
    img_size = args.img_size or load_config(f"{args.model}_base").DATA.IMG_SIZE
    device = torch.device(args.device) if args.device else default_device()
    print(f"{args.model}, {img_size} px, {args.optimizer}, {device}", flush=True)
    print(format_row(), flush=True)
    rows: list[dict] = []

    def show(row: dict) -> None:
        rows.append(row)
        print(format_row(row), flush=True)

    try:
        measure_throughput(args.model, img_size=img_size, num_classes=args.num_classes,
                           max_batch_size=args.max_batch_size, device=device, optimizer=args.optimizer,
                           warmup_steps=args.warmup_steps, timed_steps=args.timed_steps,
                           seconds_per_size=args.seconds_per_size, callback=show)
    except KeyboardInterrupt:
        print(f"interrupted; largest batch size measured: {largest_fitting_batch(rows)}")
        return 130
    best = largest_fitting_batch(rows)
    print(f"largest batch size that fits: {best}" if any(r["oom"] for r in rows) else
          f"no out-of-memory up to batch size {best}")
    if args.out:
        print(f"wrote {save_table(rows, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
