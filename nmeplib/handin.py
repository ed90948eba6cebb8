"""Handing in Homework 1: ``check worksheet`` and ``submit``.

``python -m nmeplib check worksheet`` lists what a grader would find missing in ``worksheet.md``:
every question whose answer still says ``YOUR ANSWER HERE``, every figure it links that is not
there, and the repository line still without a link. ``python -m nmeplib submit OUT.zip`` runs
the model checks and that worksheet check, reads ``submission.csv`` back when there is one, and
packs what the course staff grade into one zip: the models, the worksheet with its figures, the
submission and each run's ``summary.json`` and ``metrics.jsonl`` (never a checkpoint). With a
failure it names it and writes nothing, unless ``--force``.
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path
from typing import Iterable

from .errors import NmeplibError
from .files import atomic_write

PLACEHOLDER = "YOUR ANSWER HERE"
REPOSITORY_LINE = "Repository:"
REPOSITORY_PLACEHOLDER = "YOUR REPOSITORY LINK HERE"
HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
FIGURE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
MODELS = ("nmeplib/models/alexnet.py", "nmeplib/models/resnet.py")
RUN_FILES = ("summary.json", "metrics.jsonl")


class HandInError(NmeplibError, ValueError):
    """Something that stops a hand-in (one ``error:`` line)."""


def worksheet_problems(path: str | Path = "worksheet.md") -> list[str]:
    """What is still missing in the worksheet at ``path``, one line each (empty: ready)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise HandInError(f"{path}: cannot read the worksheet ({err.strerror or err})") from None
    problems, heading = [], "the worksheet's start"
    for number, line in enumerate(lines, 1):
        match = HEADING.match(line)
        if match:
            heading = match.group(2).strip()
        if PLACEHOLDER in line:
            problems.append(f"unanswered: {heading} (line {number})")
        for target in FIGURE.findall(line):
            if "://" not in target and not (path.parent / target).is_file():
                problems.append(f"missing figure: {target} (line {number}, under {heading})")
    repository = [line for line in lines if line.strip().startswith(REPOSITORY_LINE)]
    if not repository or not any(re.search(r"https?://\S+", line) for line in repository):
        problems.append(f"no repository link: put it on the '{REPOSITORY_LINE}' line "
                        f"(in place of {REPOSITORY_PLACEHOLDER})")
    return problems


def submission_problems(path: str | Path) -> list[str]:
    """What is wrong with a ``submission.csv`` as read back (header, ids, classes); [] when fine."""
    from .submission import read_submission

    try:
        predictions = read_submission(path)
    except (OSError, ValueError) as err:
        return [f"submission: {err}"]
    if len(predictions) == 0:
        return [f"submission: {path} has no rows"]
    if int(predictions.min()) < 0:
        return [f"submission: {path} has a negative class"]
    return []


def handed_in(root: Path) -> list[Path]:
    """The files a hand-in holds, relative to ``root``: models, worksheet and its linked figures,
    ``submission.csv`` files and run summaries and metrics (no checkpoints)."""
    files = [Path(p) for p in MODELS if (root / p).is_file()]
    worksheet = root / "worksheet.md"
    if worksheet.is_file():
        files.append(Path("worksheet.md"))
        for target in FIGURE.findall(worksheet.read_text()):
            if "://" not in target and (root / target).is_file():
                files.append(Path(target))
    for pattern in ("submission.csv", "runs/**/submission.csv", *(f"runs/**/{name}" for name in RUN_FILES)):
        files += [p.relative_to(root) for p in sorted(root.glob(pattern)) if p.is_file()]
    return list(dict.fromkeys(files))


def pack(root: Path, out: Path, files: Iterable[Path]) -> Path:
    """Write ``files`` (relative to ``root``) into the zip ``out``, atomically."""
    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in files:
                archive.write(root / name, name.as_posix())
    return atomic_write(out, write)


def submit(out: str | Path, root: str | Path = ".", force: bool = False, check_models: bool = True,
           stream=None) -> tuple[Path | None, list[str]]:
    """Check everything, then pack the hand-in into ``out``; returns the zip (None when nothing
    was written) and the problems found."""
    stream = stream or sys.stdout
    root, out = Path(root), Path(out)
    if out.suffix != ".zip":
        raise HandInError(f"{out}: the hand-in is a .zip file")
    problems = []
    if check_models:
        problems += model_problems()
    problems += worksheet_problems(root / "worksheet.md")
    for csv in [root / "submission.csv", *sorted(root.glob("runs/**/submission.csv"))]:
        if csv.is_file():
            problems += submission_problems(csv)
    for line in problems:
        print(f"  {line}", file=stream)
    if problems and not force:
        print(f"not written: {len(problems)} problem(s) above; fix them, or --force to hand in as it is",
              file=stream)
        return None, problems
    files = handed_in(root)
    path = pack(root, out, files)
    print(f"wrote {path}: {len(files)} files" + (f" (with {len(problems)} problem(s), --force)" if problems else ""),
          file=stream)
    return path, problems


def model_problems() -> list[str]:
    """``check``'s failures for AlexNet and ResNet18, one line each (each part in a worker
    process with ``check``'s time limit)."""
    from .grading import SPECS, grade_isolated

    return [f"check {r.model} {r.part}: {r.message or r.status}"
            for name in SPECS for r in grade_isolated(name) if r.status != "pass"]


def check_worksheet_main(argv: list[str] | None = None) -> int:
    """``python -m nmeplib check worksheet [PATH]``: list what is missing; exit 1 when anything is."""
    p = argparse.ArgumentParser(prog="python -m nmeplib check worksheet",
                                description="List the worksheet's unanswered questions, missing figures and link.")
    p.add_argument("path", nargs="?", default="worksheet.md", help="the worksheet (default: worksheet.md)")
    args = p.parse_args(argv)
    problems = worksheet_problems(args.path)
    for line in problems:
        print(line)
    print(f"{args.path}: {len(problems)} thing(s) to finish" if problems else f"{args.path}: ready to hand in")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmeplib submit",
                                description="Check your models, worksheet and submission, then pack them into one zip.")
    p.add_argument("out", metavar="OUT.zip", help="the zip to write")
    p.add_argument("--force", action="store_true", help="write it even with problems (they are listed)")
    args = p.parse_args(argv)
    path, problems = submit(args.out, force=args.force)
    return 0 if path is not None and not problems else 1
