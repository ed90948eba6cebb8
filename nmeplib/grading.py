"""``python -m nmeplib check [alexnet|resnet18|all]`` and ``wb.check``: grade the student's models.

Five parts per model, offline on a CPU: ``params`` (the parameter count and each tensor's shape),
``shapes`` (logits at the course's image sizes), ``grads`` (every parameter gets a gradient),
``forward`` (outputs against the reference) and ``train`` (a few steps fit a handful of digits).

The forward check needs no reference code: every floating-point tensor of the student's state
dict gets fixed pseudo-random values chosen by its position and shape (``fixed_weights``), so a
correct model computes exactly the reference's numbers on a fixed input. ``REFERENCE_FILE``
stores, for each layer with weights, a sample of its input and output (and the logits); it is
written by ``release`` from the solved models. Without it (the solved repository) the reference
is computed from ``nmeplib.models`` itself.

The student's code runs in a worker process per model (``spawn``: torch is imported once per
model, not per part), under a time limit per part (``PART_TIMEOUT``, ``--timeout``): an endless
loop is killed and reported as ``timed out``, the worker is started again for the remaining
parts; ``sys.exit``, ``KeyboardInterrupt`` or a crash of the process fail that part only.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import NmeplibError

REFERENCE_FILE = Path(__file__).with_name("grading_reference.json")
POINTS_FILE = Path(__file__).with_name("grading_points.json")  # points per model and part, staff-editable
DEFAULT_POINTS = 1.0
PARTS = ("params", "shapes", "grads", "forward", "train")
PROJECTIONS = 16  # random projections kept per activation
TOLERANCE = 1e-5  # relative error allowed in the forward check (float32 noise is ~3e-7)
BATCH, SEED = 2, 0
PART_TIMEOUT = 60.0  # seconds a part may take before it is stopped (AlexNet's train takes ~6 s on 2 cores)
START_TIMEOUT = 120.0  # seconds a worker process may take to start (importing torch, ~2 s)
REFERENCE_KEYS = ("params", "tensors", "layers", "trace", "logits")


@dataclass(frozen=True)
class Spec:
    """What each model is graded on; ``forward_size`` is the input of the forward check."""
    sizes: tuple[int, ...]  # input sizes whose logits must have shape (BATCH, classes)
    forward_size: int
    train_size: int  # also the input of the gradient check
    per_class: int  # digits per class in the training check
    steps: int  # at most this many AdamW steps ...
    lr: float
    target: float  # ... to reach this accuracy on those digits


SPECS = {
    "alexnet": Spec(sizes=(63, 70), forward_size=63, train_size=63, per_class=1, steps=15, lr=1e-4, target=0.8),
    "resnet18": Spec(sizes=(32, 64, 96), forward_size=32, train_size=8, per_class=2, steps=10, lr=2e-3,
                     target=0.9),
}
CLASSES = (10, 200)


@dataclass
class Result:
    model: str
    part: str
    status: str  # pass | FAIL | todo
    message: str = ""
    seconds: float = 0.0


class NotImplementedYet(Exception):
    """The student's code still raises NotImplementedError (the release's stub)."""


class GradingError(NmeplibError, ValueError):
    """``check`` cannot grade at all (its reference file is unreadable): one ``error:`` line."""


def student_model(name: str, num_classes: int = 10) -> nn.Module:
    """The student's model (or the solution, in the solved repository), dropout off."""
    from .models import build_model

    try:
        return build_model(name, num_classes, dropout=0.0)
    except NotImplementedError as err:
        raise NotImplementedYet(str(err)) from err


def student_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)``, a stub's NotImplementedError reported as a part not written yet."""
    try:
        return model(x)
    except NotImplementedError as err:
        raise NotImplementedYet(str(err)) from err


def state_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """The floating-point parameters and buffers, in definition order (``state_dict`` order)."""
    return [(k, v) for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()]


def fixed_weights(model: nn.Module) -> None:
    """Set every state tensor to values that depend only on its position and shape.

    Weights are uniform with variance 2/fan_in (activations keep their scale through ReLUs);
    vectors (biases, norm weights, running means) are in [-0.5, 0.5), so activations change sign
    and a missing ReLU shows; running variances are in [0.5, 1.5).
    """
    with torch.no_grad():
        for index, (key, tensor) in enumerate(state_tensors(model)):
            rng = np.random.default_rng([SEED, index])
            if tensor.dim() > 1:
                bound = (6.0 / (tensor[0].numel())) ** 0.5
                values = rng.uniform(-bound, bound, tuple(tensor.shape))
            elif key.endswith("running_var"):
                values = rng.uniform(0.5, 1.5, tuple(tensor.shape))
            else:
                values = rng.uniform(-0.5, 0.5, tuple(tensor.shape))
            tensor.copy_(torch.from_numpy(values))


def fixed_input(size: int) -> Tensor:
    return torch.from_numpy(np.random.default_rng(SEED).standard_normal((BATCH, 3, size, size))).float()


@lru_cache(maxsize=64)
def _projection(size: int) -> np.ndarray:
    return np.random.default_rng([SEED, size]).standard_normal((PROJECTIONS, size)) / size ** 0.5


def summarise(t: Tensor) -> dict:
    """Shape, norm and fixed random projections of ``t``: any changed value moves them."""
    flat = t.detach().reshape(-1).double().numpy()
    return {"shape": list(t.shape), "norm": float(np.linalg.norm(flat)),
            "proj": (_projection(flat.size) @ flat).tolist()}


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own state tensors themselves, in definition order."""
    return [(n, m) for n, m in model.named_modules()
            if any(v.is_floating_point() for v in [*m.parameters(recurse=False), *m.buffers(recurse=False)])]


def trace(model: nn.Module, x: Tensor) -> tuple[list[dict | None], Tensor]:
    """Each weighted layer's input and output summaries (first call; None if never called), and the logits."""
    layers = weighted_layers(model)
    seen: list[dict | None] = [None] * len(layers)

    def hook(index: int) -> Callable:
        def record(_module, inputs, output):
            if seen[index] is None:
                seen[index] = {"in": summarise(inputs[0]), "out": summarise(output)}
        return record

    handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(layers)]
    try:
        with torch.no_grad():
            logits = student_forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return seen, logits


def reference_record(name: str) -> dict:
    """What the solution computes: parameter counts, state tensor shapes, layer summaries, logits."""
    spec = SPECS[name]
    counts = {str(c): sum(p.numel() for p in student_model(name, c).parameters()) for c in CLASSES}
    model = student_model(name).eval()
    fixed_weights(model)
    layers, logits = trace(model, fixed_input(spec.forward_size))
    return {"params": counts, "tensors": [[k, list(v.shape)] for k, v in state_tensors(model)],
            "layers": [[n, type(m).__name__] for n, m in weighted_layers(model)],
            "trace": layers, "logits": summarise(logits)}


def reference_json() -> str:
    """The reference records of every graded model, as written into a release."""
    return json.dumps({name: reference_record(name) for name in SPECS}, indent=1) + "\n"


def stored_reference(name: str) -> dict | None:
    """``name``'s record in ``REFERENCE_FILE`` (a release), None without the file (solved repository).

    GradingError naming the file when it is not the JSON that ``release`` writes.
    """
    if not REFERENCE_FILE.exists():
        return None
    restore = "restore it from the course release"
    try:
        stored = json.loads(REFERENCE_FILE.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise GradingError(f"{REFERENCE_FILE}: not valid JSON (not UTF-8 text); {restore}") from None
    except json.JSONDecodeError as err:
        raise GradingError(f"{REFERENCE_FILE}: not valid JSON (line {err.lineno}, column {err.colno}: "
                           f"{err.msg}); {restore}") from None
    except OSError as err:
        raise GradingError(f"{REFERENCE_FILE}: cannot be read ({err.strerror or err}); {restore}") from None
    record = stored.get(name) if isinstance(stored, dict) else None
    if not isinstance(record, dict) or any(key not in record for key in REFERENCE_KEYS):
        raise GradingError(f"{REFERENCE_FILE}: has no reference for {name} (needs {', '.join(REFERENCE_KEYS)}); "
                           f"{restore}")
    return record


@lru_cache(maxsize=None)
def load_reference(name: str) -> dict:
    """The stored reference when there is one (a release), else the solution's (solved repository)."""
    stored = stored_reference(name)
    return reference_record(name) if stored is None else stored


def relative_error(a: dict, b: dict) -> float:
    x = np.array([*a["proj"], a["norm"]])
    y = np.array([*b["proj"], b["norm"]])
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(x) + np.linalg.norm(y), 1e-12))


def check_params(name: str, ref: dict) -> str:
    problems, models = [], {classes: student_model(name, classes) for classes in CLASSES}
    for classes, model in models.items():
        got, want = sum(p.numel() for p in model.parameters()), ref["params"][str(classes)]
        if got != want:
            problems.append(f"{got:,} parameters for {classes} classes, expected {want:,} ({got - want:+,})")
    if mismatch := tensor_mismatch(models[CLASSES[0]], ref):
        problems.append(mismatch)
    return "; ".join(problems)


def tensor_mismatch(model: nn.Module, ref: dict) -> str:
    """The first state tensor whose shape differs from the reference's, or a count that does."""
    mine, theirs = state_tensors(model), ref["tensors"]
    for index, ((key, tensor), (ref_key, shape)) in enumerate(zip(mine, theirs)):
        if list(tensor.shape) != shape:
            return (f"tensor #{index + 1} {key} has shape {tuple(tensor.shape)}; the reference's "
                    f"#{index + 1} ({ref_key}) is {tuple(shape)}")
    if len(mine) != len(theirs):
        return f"{len(mine)} weight/statistics tensors, expected {len(theirs)}"
    return ""


def check_shapes(name: str, spec: Spec) -> str:
    model = student_model(name).eval()
    problems = []
    for size in spec.sizes:
        with torch.no_grad():
            out = student_forward(model, torch.zeros(BATCH, 3, size, size))
        if tuple(out.shape) != (BATCH, 10):
            problems.append(f"input {BATCH}x3x{size}x{size} gives {tuple(out.shape)}, expected ({BATCH}, 10)")
        elif not torch.isfinite(out).all():
            problems.append(f"input {BATCH}x3x{size}x{size} gives NaN or infinite logits; a correct model's "
                            f"are finite (a division by zero or log of zero in forward?)")
    return "; ".join(problems)


def check_grads(name: str, spec: Spec) -> str:
    torch.manual_seed(SEED)
    model = student_model(name).train()
    loss = F.cross_entropy(student_forward(model, fixed_input(spec.train_size)), torch.arange(BATCH))
    if not torch.isfinite(loss):
        return f"the loss is {loss.item()}: the logits hold NaN or infinite values"
    loss.backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    zero = [k for k, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    parts = [f"no gradient reaches {', '.join(missing[:4])} (not used in forward?)" if missing else "",
             f"zero gradient in {', '.join(zero[:4])}" if zero else ""]
    return "; ".join(p for p in parts if p)


NON_FINITE = {"in": "receives NaN or infinite values", "out": "computes NaN or infinite values"}


def check_forward(name: str, spec: Spec, ref: dict) -> str:
    model = student_model(name).eval()
    if mismatch := tensor_mismatch(model, ref):
        return f"cannot load the fixed weights: {mismatch}"
    fixed_weights(model)
    got, logits = trace(model, fixed_input(spec.forward_size))
    layers = weighted_layers(model)
    for (layer, module), mine, theirs, (ref_layer, _) in zip(layers, got, ref["trace"], ref["layers"]):
        what = f"{layer} ({type(module).__name__}, the reference's {ref_layer})"
        if mine is None:
            return f"{what} is never called in forward"
        for side, text in (("in", "receives a different input"), ("out", "computes a different output")):
            a, b = mine[side], theirs[side]
            where = ("check what runs before it (activation, pooling, shortcut, order of the layers)"
                     if side == "in" else "from the same input: check its stride, padding or kind")
            if a["shape"] != b["shape"]:
                return f"{what} {text}: shape {tuple(a['shape'])}, expected {tuple(b['shape'])}; {where}"
            if not np.isfinite(a["norm"]):
                return f"{what} {NON_FINITE[side]}; {where}"
            if (err := relative_error(a, b)) > TOLERANCE:
                return f"{what} {text}: relative error {err:.2g}; {where}"
    if not torch.isfinite(logits).all():
        return "every layer matches but the logits hold NaN or infinite values: check the end of forward"
    if (err := relative_error(summarise(logits), ref["logits"])) > TOLERANCE:
        return f"every layer matches but the logits differ (relative error {err:.2g}): check the end of forward"
    return ""


def check_train(name: str, spec: Spec) -> str:
    from .data.digits import load_split, mean_std

    torch.manual_seed(SEED)
    model = student_model(name).train()
    images, labels = load_split("train", spec.train_size)
    picked = torch.cat([torch.nonzero(labels == c)[: spec.per_class, 0] for c in range(10)])
    mean, std = (torch.tensor(v)[:, None, None] for v in mean_std(spec.train_size))
    x, y = (images[picked].float() / 255 - mean) / std, labels[picked]
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0, fused=True)
    accuracy, losses = 0.0, []
    for step in range(1, spec.steps + 1):
        logits = student_forward(model, x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            return f"the loss is {loss.item()} at step {step}: the logits hold NaN or infinite values"
        accuracy = (logits.argmax(1) == y).float().mean().item()
        losses.append(loss.item())
        if accuracy >= spec.target:
            return ""
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (f"{len(x)} digits at {spec.train_size} px: {accuracy:.0%} accuracy after {spec.steps} AdamW steps "
            f"(lr {spec.lr:g}), expected at least {spec.target:.0%}; loss {losses[0]:.2f} -> {losses[-1]:.2f}")


def _where(err: BaseException) -> str:
    """The innermost frame of the student's model code, as ``file:line``."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "models" in Path(f.filename).parts]
    return f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""


def _shown(path: str | None) -> str:
    """``path`` relative to the current folder when it is inside it."""
    if not path:
        return "?"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def failure_message(err: BaseException) -> str:
    """One line saying how the student's code failed, with the file and line where it did."""
    if isinstance(err, SyntaxError):
        text = f": {err.text.strip()}" if err.text and err.text.strip() else ""
        return f"{type(err).__name__} in {_shown(err.filename)} line {err.lineno}: {err.msg}{text}"
    if isinstance(err, SystemExit):
        return (f"sys.exit({err.code!r}) was called{_where(err)}; a model returns its output, "
                f"it must not end the program")
    if isinstance(err, KeyboardInterrupt):
        return f"KeyboardInterrupt was raised{_where(err)}"
    return f"{type(err).__name__}: {err}{_where(err)}"


def grade_part(name: str, part: str, ref: dict | None = None,
               catch: tuple[type[BaseException], ...] = (Exception, SystemExit)) -> Result:
    """One part's result for ``name``, in this process; ``ref`` None: ``load_reference``.

    What ``catch`` holds, raised by the student's code, is a result, not a crash (the worker
    also catches KeyboardInterrupt; in this process that is the user's Ctrl-C and stops).
    """
    spec = SPECS[name]
    reference = (lambda: ref) if ref is not None else (lambda: load_reference(name))
    runs = {"params": lambda: check_params(name, reference()), "shapes": lambda: check_shapes(name, spec),
            "grads": lambda: check_grads(name, spec), "forward": lambda: check_forward(name, spec, reference()),
            "train": lambda: check_train(name, spec)}
    start = time.perf_counter()
    try:
        message = runs[part]()
        status = "FAIL" if message else "pass"
    except NotImplementedYet as err:
        status, message = "todo", f"not implemented yet: {err}"
    except catch as err:
        status, message = "FAIL", failure_message(err)
    return Result(name, part, status, message, time.perf_counter() - start)


def grade(name: str, parts: tuple[str, ...] = PARTS, ref: dict | None = None) -> list[Result]:
    """Each requested part's result for one model, in this process and without a time limit."""
    return [grade_part(name, part, ref) for part in parts]


def _serve(conn, name: str, parts: tuple[str, ...], ref: dict | None) -> None:
    """Worker process: say it is ready, then grade ``parts`` in turn, sending each Result."""
    torch.set_grad_enabled(True)
    conn.send(None)
    for part in parts:
        conn.send(grade_part(name, part, ref, catch=(BaseException,)))
    conn.close()


def _ended(process) -> str:
    """Why a worker process ended without a result."""
    process.join(5)
    code = process.exitcode
    if code is not None and code < 0:
        return f"the grading process was killed by signal {-code} during this part (out of memory?)"
    return (f"the grading process ended with exit status {code} during this part "
            f"(os._exit or a crash in the model's code?)")


def _receive(conn, seconds: float):
    """The worker's next message, ``TimeoutError`` after ``seconds``, ``EOFError`` when it ended."""
    if not conn.poll(seconds):
        raise TimeoutError
    return conn.recv()


def _grade_in_worker(name: str, parts: tuple[str, ...], ref: dict | None, timeout: float) -> list[Result]:
    """Results of ``parts`` from one worker process, up to and including the first part it does not
    finish (timed out, or the process ended); the worker is killed then."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_serve, args=(sender, name, parts, ref))
    process.start()
    sender.close()
    results: list[Result] = []
    try:
        try:
            _receive(receiver, START_TIMEOUT)
        except (TimeoutError, EOFError) as err:
            why = f"did not start within {START_TIMEOUT:g} s" if isinstance(err, TimeoutError) else "failed to start"
            return [Result(name, part, "FAIL", f"the grading process {why}") for part in parts]
        for part in parts:
            start = time.perf_counter()
            try:
                results.append(_receive(receiver, timeout))
            except TimeoutError:
                message = (f"timed out after {timeout:g} s (an endless loop? on a slow machine allow more "
                           f"with --timeout SECONDS)")
                return [*results, Result(name, part, "FAIL", message, time.perf_counter() - start)]
            except EOFError:
                return [*results, Result(name, part, "FAIL", _ended(process), time.perf_counter() - start)]
        process.join(5)
        return results
    finally:
        receiver.close()
        process.kill()
        process.join()


def grade_isolated(name: str, parts: tuple[str, ...] = PARTS, timeout: float = PART_TIMEOUT) -> list[Result]:
    """Each part's result for one model, graded in worker processes with ``timeout`` s per part."""
    ref = stored_reference(name)
    results: list[Result] = []
    while len(results) < len(parts):
        results += _grade_in_worker(name, tuple(parts[len(results):]), ref, timeout)
    return results


def points(model: str, part: str) -> float:
    """What ``part`` of ``model`` is worth: :data:`POINTS_FILE`'s figure, else :data:`DEFAULT_POINTS`
    (a missing file gives every part the default; a damaged one is a GradingError naming it)."""
    return float(_points_table().get(model, {}).get(part, DEFAULT_POINTS))


@lru_cache(maxsize=None)
def _points_table() -> dict:
    if not POINTS_FILE.exists():
        return {}
    try:
        table = json.loads(POINTS_FILE.read_text())
    except (OSError, ValueError) as err:
        raise GradingError(f"{POINTS_FILE}: not a points file ({err})") from None
    if not isinstance(table, dict) or not all(
            isinstance(parts, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                                            for v in parts.values()) for parts in table.values()):
        raise GradingError(f"{POINTS_FILE}: expected {{model: {{part: points >= 0}}}}")
    return table


def results_json(results: list[Result]) -> list[dict]:
    """Each part's result as ``check --json`` prints it: passed, points earned and possible, message, time."""
    return [{"model": r.model, "part": r.part, "passed": r.status == "pass", "status": r.status,
             "points": points(r.model, r.part) if r.status == "pass" else 0.0,
             "max_points": points(r.model, r.part), "message": r.message, "seconds": round(r.seconds, 2)}
            for r in results]


def format_results(results: list[Result]) -> str:
    """Failures with their messages (once per message: the other parts it fails are named after
    it), then one summary row per model and part."""
    failed: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.status != "pass":
            failed.setdefault((r.model, r.message), []).append(r.part)
    lines = [f"{model} {first}: {message}" + (f" (also: {', '.join(others)})" if others else "")
             for (model, message), (first, *others) in failed.items()]
    lines += ["", f"{'model':<9} {'part':<8} {'result':<6} {'time':>6}"]
    lines += [f"{r.model:<9} {r.part:<8} {r.status:<6} {r.seconds:5.1f}s" for r in results]
    passed = sum(r.status == "pass" for r in results)
    lines.append(f"{passed}/{len(results)} passed")
    return "\n".join(lines).lstrip("\n")


def check(model: str = "all", parts: tuple[str, ...] = PARTS, timeout: float = PART_TIMEOUT,
          as_json: bool = False) -> bool:
    """Grade ``model`` (``alexnet``, ``resnet18`` or ``all``), print the report (``as_json``: the
    :func:`results_json` rows); True when all pass.

    Each part may take ``timeout`` seconds in a worker process per model; ``timeout=0`` grades in
    this process without a limit (so that ``breakpoint()`` in the model works).
    """
    names = tuple(SPECS) if model == "all" else (model,)
    if any(n not in SPECS for n in names):
        raise ValueError(f"unknown model {model!r}; choose from {', '.join((*SPECS, 'all'))}")
    for name in names:
        stored_reference(name)  # a corrupt file stops here, before any grading
    if not REFERENCE_FILE.exists() and not as_json:
        print(f"note: no {REFERENCE_FILE.name}: the reference is this repository's own nmeplib/models", flush=True)
    torch.set_grad_enabled(True)
    results = [r for n in names for r in (grade_isolated(n, parts, timeout) if timeout else grade(n, parts))]
    print(json.dumps(results_json(results), indent=1) if as_json else format_results(results))
    return all(r.status == "pass" for r in results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmeplib check", description="Grade your AlexNet and ResNet18.")
    p.add_argument("model", nargs="?", default="all", choices=(*SPECS, "all"),
                   help="the model to check (default: all)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to check (default: all)")
    p.add_argument("--timeout", type=_seconds, default=PART_TIMEOUT, metavar="SECONDS",
                   help=f"stop a part that runs longer and report it as timed out (default: {PART_TIMEOUT:g}); "
                        "0: grade in this process without a limit, e.g. to use breakpoint()")
    p.add_argument("--json", action="store_true", help="print each part's result as JSON (passed, points, "
                                                          "message, time)")
    args = p.parse_args(argv)
    return 0 if check(args.model, tuple(args.parts), args.timeout, as_json=args.json) else 1


def _seconds(text: str) -> float:
    """``--timeout``'s value: a number of seconds, at least 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value
