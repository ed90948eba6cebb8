"""One student's models graded in a process of their own (``python -m nmeplib grade`` starts it).

    python -m nmeplib.course.grade_worker STUDENT_DIR MODEL REFERENCE.json OUT.jsonl

The student's ``nmeplib/models/<model>.py`` is loaded from STUDENT_DIR by its path into the
course's own package (its relative imports find the course's modules), and graded with the
course's own ``grading`` code against REFERENCE.json (the staff solutions' record): the parts
``check`` runs, then the hidden checks, which ``check`` does not run and whose messages name only
the property. Each result is appended to OUT.jsonl as soon as it is known, so a part that hangs
or a process killed for its memory still leaves the earlier results.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import grading
from ..models import build as model_build

FILES = {"alexnet": ("nmeplib/models/alexnet.py", "AlexNet"), "resnet18": ("nmeplib/models/resnet.py", "ResNet18")}


def load_student_class(student: Path, model: str) -> type[nn.Module]:
    """The student's model class, loaded from its file into ``nmeplib.models``."""
    relative, class_name = FILES[model]
    path = student / relative
    if not path.is_file():
        raise FileNotFoundError(f"missing file {relative}")
    spec = importlib.util.spec_from_file_location(f"nmeplib.models._student_{model}", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "nmeplib.models"
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise AttributeError(f"{relative} defines no class {class_name}")
    return cls


# ----------------------------------------------------------------------------- hidden checks
# Each returns "" when the property holds, else a sentence naming the property (never the
# expected values); a check that raises fails with the property's name only.

def _eval_twice(model: str) -> str:
    try:   # dropout as trained (check itself builds the model with dropout 0)
        net = model_build.build_model(model, 10, dropout=0.5).eval()
    except NotImplementedError as err:
        raise grading.NotImplementedYet(str(err)) from err
    x = torch.randn(2, 3, *(2 * (grading.SPECS[model].forward_size,)), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        same = torch.equal(grading.student_forward(net, x), grading.student_forward(net, x))
    return "" if same else "eval() mode must give the same output for the same input twice (dropout off in eval)"


def _other_sizes(model: str) -> str:
    sizes = {"alexnet": (96, 127), "resnet18": (40, 72)}[model]
    net = grading.student_model(model, 200).eval()
    with torch.no_grad():
        for size in sizes:
            out = grading.student_forward(net, torch.zeros(1, 3, size, size))
            if tuple(out.shape) != (1, 200):
                return "the logits' shape must not depend on the input size (other sizes than check's)"
    return ""


def _batchnorm_statistics(model: str) -> str:
    net = grading.student_model(model)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return "" if model == "alexnet" else "ResNet18 needs BatchNorm layers"
    size = grading.SPECS[model].train_size
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(2))
    before = [m.running_mean.clone() for m in norms]
    with torch.no_grad():
        grading.student_forward(net.eval(), x)
    if any(not torch.equal(b, m.running_mean) for b, m in zip(before, norms)):
        return "BatchNorm statistics must not change in eval() mode"
    with torch.no_grad():
        grading.student_forward(net.train(), x)
    if all(torch.equal(b, m.running_mean) for b, m in zip(before, norms)):
        return "BatchNorm statistics must be updated in training mode"
    return ""


HIDDEN: dict[str, Callable[[str], str]] = {
    "hidden:eval_deterministic": _eval_twice,
    "hidden:other_input_sizes": _other_sizes,
    "hidden:batchnorm_statistics": _batchnorm_statistics,
}


def _hidden(name: str, model: str) -> grading.Result:
    start = time.perf_counter()
    try:
        message = HIDDEN[name](model)
    except grading.NotImplementedYet:
        message = "not implemented yet"
    except BaseException:   # the student's code: only the property is named
        message = f"failed while checking {name.split(':', 1)[1].replace('_', ' ')}"
    return grading.Result(model, name, "FAIL" if message else "pass", message, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    student, model, reference, out = (argv or sys.argv[1:])[:4]
    student, out = Path(student), Path(out)
    ref = json.loads(Path(reference).read_text())[model]

    def emit(result: grading.Result) -> None:
        with out.open("a") as f:
            f.write(json.dumps(result.__dict__) + "\n")

    try:
        model_build.MODELS[model] = load_student_class(student, model)
    except BaseException as err:   # a syntax error, a missing file or class: every part fails with it
        last = traceback.extract_tb(err.__traceback__)[-1:] if not isinstance(err, SyntaxError) else []
        where = f" (line {err.lineno})" if isinstance(err, SyntaxError) else \
            (f" (line {last[0].lineno})" if last and str(student) in last[0].filename else "")
        for part in (*grading.PARTS, *HIDDEN):
            emit(grading.Result(model, part, "FAIL", f"{type(err).__name__}: {err}{where}"))
        return 0
    torch.set_grad_enabled(True)
    for part in grading.PARTS:
        emit(grading.grade_part(model, part, ref, catch=(BaseException,)))
    for name in HIDDEN:
        emit(_hidden(name, model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
