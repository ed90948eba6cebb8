"""Training throughput vs batch size, and the largest batch that fits in memory.

``measure_throughput("alexnet", img_size=70)`` times full training steps (forward, loss,
backward, optimizer step, as the engine runs them) on one random batch per batch size
1, 2, 4, ..., so data loading plays no part. On CUDA it stops at the first batch size
that runs out of memory.
"""
from __future__ import annotations

import argparse
import copy
import gc
from typing import Sequence

import torch
from torch import nn

from .config import load_config
from .engine import prepare_model, run_epoch
from .models.summary import input_size_error
from .optim import build_optimizer
from .runtime import default_device, peak_memory_mb, reset_peak_memory

CPU_MAX_BATCH_SIZE = 256     # max_batch_size=None on the CPU, where running out of memory is no signal
CUDA_MAX_BATCH_SIZE = 2**16  # safety cap for max_batch_size=None on CUDA


def _powers_of_two(limit: int) -> list[int]:
    return [2**i for i in range(limit.bit_length()) if 2**i <= limit]


def _run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               steps: int) -> float:
    """Seconds for ``steps`` training steps on the batch ``x, y`` (device synchronised at both ends)."""
    return run_epoch(model, [(x, y)] * steps, x.device, optimizer=optimizer)["time_s"]


def _measure(model: nn.Module, initial: dict, config, batch_size: int, img_size: int, num_classes: int,
             warmup_steps: int, timed_steps: int) -> dict:
    """One batch size from the initial weights with a fresh optimizer; may raise OutOfMemoryError."""
    device = next(model.parameters()).device
    model.load_state_dict(initial)
    model.zero_grad(set_to_none=True)
    optimizer = build_optimizer(config, model)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    reset_peak_memory(device)
    if warmup_steps:
        _run_steps(model, optimizer, x, y, warmup_steps)
    seconds = _run_steps(model, optimizer, x, y, timed_steps)
    return {"batch_size": batch_size, "img_per_s": batch_size * timed_steps / seconds,
            "step_ms": 1000 * seconds / timed_steps, "peak_mem_mb": peak_memory_mb(device), "oom": False}


def measure_throughput(model_or_name: nn.Module | str, *, img_size: int, num_classes: int = 10,
                       batch_sizes: Sequence[int] | None = None, max_batch_size: int | None = None,
                       device: torch.device | str | None = None, warmup_steps: int = 2, timed_steps: int = 5,
                       optimizer: str = "adamw") -> list[dict]:
    """Training speed per batch size: rows ``batch_size, img_per_s, step_ms, peak_mem_mb, oom``.

    Batch sizes are ``batch_sizes`` or 1, 2, 4, ... up to ``max_batch_size`` (None: until
    CUDA runs out of memory, at most 65536; 256 on the CPU). Each starts from the same
    initial weights with a fresh ``optimizer`` (adamw | adam | sgd | rmsprop) and times
    ``timed_steps`` steps after ``warmup_steps`` untimed ones; on CUDA it uses bf16 autocast
    and channels_last like the engine. The first batch size that runs out of memory gets a
    row with ``oom`` true and ends the measurement. ``peak_mem_mb`` is the CUDA peak of that
    batch size, but on the CPU the process's peak RSS so far, which never goes down.
    A model passed in is copied, not changed.
    """
    if timed_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need timed_steps >= 1 and warmup_steps >= 0, got {timed_steps} and {warmup_steps}")
    device = torch.device(device) if device is not None else default_device()
    overrides = {"TRAIN.OPTIMIZER": optimizer, "DATA.IMG_SIZE": img_size}
    if isinstance(model_or_name, str):
        config = load_config(None, {**overrides, "MODEL.NAME": model_or_name})
        model = prepare_model(config, num_classes, device)  # checks img_size, as training does
    else:
        config = load_config(None, overrides)
        model = copy.deepcopy(model_or_name)
        problem = input_size_error(model, img_size)
        if problem:
            raise ValueError(problem)
        model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
    if batch_sizes is None:
        limit = max_batch_size or (CUDA_MAX_BATCH_SIZE if device.type == "cuda" else CPU_MAX_BATCH_SIZE)
        batch_sizes = _powers_of_two(limit)
    rows = []
    for batch_size in batch_sizes:
        try:
            rows.append(_measure(model, initial, config, batch_size, img_size, num_classes,
                                 warmup_steps, timed_steps))
            continue
        except torch.cuda.OutOfMemoryError:
            pass
        # Out of the except block, the traceback (and the batch and optimizer it holds) is gone.
        model.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append({"batch_size": batch_size, "img_per_s": None, "step_ms": None, "peak_mem_mb": None,
                     "oom": True})
        break
    return rows


def largest_fitting_batch(rows: Sequence[dict]) -> int | None:
    """The largest batch size that ran without running out of memory, or None."""
    return max((row["batch_size"] for row in rows if not row.get("oom")), default=None)


def main(argv: list[str] | None = None) -> int:
    """Command line: measure one model and print the table (optionally save it as JSON/CSV)."""
    from .models import MODEL_NAMES
    from .sweeps import format_table, save_table

    parser = argparse.ArgumentParser(prog="python -m nmeplib throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet", choices=MODEL_NAMES)
    parser.add_argument("--img-size", type=int, help="input side; default: the model's base config's")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--max-batch-size", type=int,
                        help=f"largest batch size tried; default: until out of memory (CPU: {CPU_MAX_BATCH_SIZE})")
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "adam", "sgd", "rmsprop"))
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--timed-steps", type=int, default=5)
    parser.add_argument("--device", help="cuda, cuda:1 or cpu; default: CUDA when there is a GPU")
    parser.add_argument("--out", help="also write the rows to this .json or .csv file")
    args = parser.parse_args(argv)
    img_size = args.img_size or load_config(f"{args.model}_base").DATA.IMG_SIZE
    device = torch.device(args.device) if args.device else default_device()
    rows = measure_throughput(args.model, img_size=img_size, num_classes=args.num_classes,
                              max_batch_size=args.max_batch_size, device=device, optimizer=args.optimizer,
                              warmup_steps=args.warmup_steps, timed_steps=args.timed_steps)
    print(f"{args.model}, {img_size} px, {args.optimizer}, {device}")
    print(format_table(rows))
    best = largest_fitting_batch(rows)
    print(f"largest batch size that fits: {best}" if any(r["oom"] for r in rows) else
          f"no out-of-memory up to batch size {best}")
    if args.out:
        print(f"wrote {save_table(rows, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
