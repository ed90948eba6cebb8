"""Parameter counts and per-layer output shapes, to inspect a model and to check an image size early."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values (shared parameters once); only ``requires_grad`` ones if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode without gradients, then each submodule's own training flag back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def _probe_input(model: nn.Module, shape: tuple[int, ...]) -> Tensor:
    """A zero batch on the model's device, in its floating dtype."""
    ref = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    if ref is None:
        return torch.zeros(shape)
    return torch.zeros(shape, device=ref.device, dtype=ref.dtype)


def _shape(output: Any) -> tuple:
    if isinstance(output, Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return tuple(_shape(o) for o in output)
    return ()


def model_summary(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32),
                  batch_size: int = 1) -> list[dict]:
    """One row per call of a leaf module in a forward pass: ``name``, ``type``, ``output_shape``, ``params``.

    ``output_shape`` includes the batch dimension. The pass runs in eval mode without
    gradients, so it changes no BatchNorm statistics; training flags are restored after.
    """
    rows: list[dict] = []

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            rows.append({"name": name or type(module).__name__, "type": type(module).__name__,
                         "output_shape": _shape(output),
                         "params": sum(p.numel() for p in module.parameters(recurse=False))})
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if next(m.children(), None) is None]
    try:
        with _inference(model):
            model(_probe_input(model, (batch_size, *input_size)))
    finally:
        for handle in handles:
            handle.remove()
    return rows


def format_summary(rows: list[dict]) -> str:
    """An aligned text table of ``model_summary`` rows, ending with the total parameter count."""
    header = ("Layer", "Type", "Output shape", "Params")
    table = [header] + [(r["name"], r["type"], str(r["output_shape"]), f"{r['params']:,}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(row: tuple) -> str:
        return "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths)), row[-1].rjust(widths[-1])])

    total = sum({r["name"]: r["params"] for r in rows}.values())  # a module called twice counts once
    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, table[1:]), rule, f"Total parameters: {total:,}"])


def _fits_on_meta(model: nn.Module, tensors: dict[str, Tensor], size: int, channels: int) -> bool:
    """Whether a ``size`` px input passes through, checked on the meta device (shapes only, no compute)."""
    try:
        functional_call(model, tensors, (torch.empty(1, channels, size, size, device="meta"),))
        return True
    except Exception:
        return False


def _nearest_fit(model: nn.Module, size: int, channels: int, reach: int = 256) -> str:
    """A hint naming the closest image size that fits, or '' if none within ``reach`` px does."""
    tensors = {n: torch.empty_like(t, device="meta")
               for n, t in (*model.named_parameters(), *model.named_buffers())}
    with _inference(model):
        for d in range(1, reach + 1):
            for candidate in (size - d, size + d):
                if candidate >= 1 and _fits_on_meta(model, tensors, candidate, channels):
                    if candidate > size and d >= size - 1:  # every smaller size failed too
                        return f"; it needs at least {candidate} px"
                    return f"; the nearest size that fits is {candidate} px"
    return ""


def input_size_error(model: nn.Module, img_size: int, channels: int = 3) -> str | None:
    """None if one ``img_size`` x ``img_size`` forward pass works, else a message saying why and what fits.

    Lets training reject an image size the model cannot take (AlexNet needs at least 63 px,
    LeNet exactly 32) before any data is loaded.
    """
    try:
        with _inference(model):
            model(_probe_input(model, (1, channels, img_size, img_size)))
        return None
    except (RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (f"{type(model).__name__} cannot take {img_size}x{img_size} inputs ({reason})"
                f"{_nearest_fit(model, img_size, channels)}")
