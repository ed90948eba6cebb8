"""``python -m nmeplib grade SUBMISSIONS_DIR --out grades.csv``: grade a whole class.

Each sub-folder (or ``.zip``, such as ``python -m nmeplib submit`` writes) of SUBMISSIONS_DIR is
one student's copy of the release. Each model of each student is graded in a process of its own
(``grade_worker``) with a time limit and a memory limit, against the reference computed here from
the course's own solutions; no student's code is imported into the grader or into another
student's process. A crash, a hang, a syntax error, a missing file or an allocation beyond the
limit is that student's row with its reason, never a stop. (A process of its own is isolation,
not a sandbox: grade code you do not trust on a machine you can throw away.)

Written: ``grades.csv`` (one row per student: parts passed, points, time, the first failure, the
Kaggle score when ``--labels`` is given and the student has a ``submission.csv``), beside it
``<stem>-gradescope/<student>/results.json`` in Gradescope's format, and a summary of how many
students passed each part, printed and as ``<stem>-summary.csv``. Hidden checks count like the
other parts; what a student sees of one names only the property it checks.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable

from .. import grading
from ..errors import NmeplibError
from ..files import atomic_write, write_json
from .grade_worker import HIDDEN

MODELS = ("alexnet", "resnet18")
TIMEOUT_S = 300.0      # one model of one student, all its parts
MEMORY_GB = 6.0        # address space a student's process may take (data segment limit)
MAX_ZIP_BYTES = 200 * 2**20
COLUMNS = ("student", "passed", "parts", "points", "max_points", "seconds", "kaggle_acc", "first_failure")


class GradeError(NmeplibError, ValueError):
    """A submissions folder or option the grader cannot use (one ``error:`` line)."""


def students(folder: Path) -> list[Path]:
    """The submissions in ``folder``: sub-folders and zips, by name (hidden entries left out)."""
    if not folder.is_dir():
        raise GradeError(f"{folder}: no such folder of submissions")
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and (p.is_dir() or p.suffix == ".zip"))


def unpack(archive: Path, into: Path) -> Path:
    """``archive``'s files under ``into``, refusing paths that leave it and archives too large to be a hand-in."""
    with zipfile.ZipFile(archive) as z:
        if sum(info.file_size for info in z.infolist()) > MAX_ZIP_BYTES:
            raise GradeError(f"{archive.name}: more than {MAX_ZIP_BYTES // 2**20} MB unpacked")
        for info in z.infolist():
            target = (into / info.filename).resolve()
            if not target.is_relative_to(into.resolve()):
                raise GradeError(f"{archive.name}: {info.filename!r} would be written outside the submission")
        z.extractall(into)
    return into


def _limit_memory(gigabytes: float):
    def apply() -> None:
        limit = int(gigabytes * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return apply


def grade_model(student: Path, model: str, reference: Path, timeout: float, memory_gb: float,
                scratch: Path) -> list[dict]:
    """The results of one model of one student from its own process; the parts it never reached
    (a hang, a kill) are failures saying why."""
    out = scratch / f"{model}.jsonl"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "nmeplib.course.grade_worker", str(student), model, str(reference), str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "NMEPLIB_PROGRESS": "0",
           "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    reason = ""
    try:
        done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=_limit_memory(memory_gb))
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            reason = (f"the grading process was killed by signal {-done.returncode}" if done.returncode < 0 else
                      f"the grading process ended with exit status {done.returncode}: {last}")
    except subprocess.TimeoutExpired:
        reason = f"timed out after {timeout:g} s (an endless loop?)"
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    seen = {row["part"] for row in rows}
    for part in (*grading.PARTS, *HIDDEN):
        if part not in seen:
            rows.append({"model": model, "part": part, "status": "FAIL", "seconds": 0.0,
                         "message": reason or "not reached"})
            reason = reason and "not reached: an earlier part did not finish"
    return rows


def student_row(name: str, rows: list[dict], seconds: float, kaggle: float | None) -> dict[str, Any]:
    passed = [r for r in rows if r["status"] == "pass"]
    failed = [r for r in rows if r["status"] != "pass"]
    first = f"{failed[0]['model']} {failed[0]['part']}: {failed[0]['message']}" if failed else ""
    return {"student": name, "passed": len(passed), "parts": len(rows),
            "points": sum(grading.points(r["model"], r["part"]) for r in passed),
            "max_points": sum(grading.points(r["model"], r["part"]) for r in rows), "seconds": round(seconds, 1),
            "kaggle_acc": "" if kaggle is None else kaggle, "first_failure": first}


def gradescope(rows: list[dict], kaggle: float | None) -> dict[str, Any]:
    """Gradescope's results.json: a score, and per test its name, score, output and visibility
    (hidden checks are shown after grades are published, naming only the property)."""
    tests = [{"name": f"{r['model']} {r['part']}", "score": grading.points(r["model"], r["part"])
              if r["status"] == "pass" else 0.0, "max_score": grading.points(r["model"], r["part"]),
              "output": r["message"] or "passed",
              "visibility": "after_published" if r["part"].startswith("hidden:") else "visible"} for r in rows]
    if kaggle is not None:
        tests.append({"name": "Kaggle accuracy on the hidden test labels", "score": 0.0, "max_score": 0.0,
                      "output": f"{kaggle:.2f}%", "visibility": "after_published"})
    return {"score": sum(t["score"] for t in tests), "max_score": sum(t["max_score"] for t in tests),
            "tests": tests}


def _kaggle(student: Path, labels: Path | None) -> float | None:
    submission = student / "submission.csv"
    if labels is None or not submission.is_file():
        return None
    from .score import ScoreError, score

    try:
        return score(submission, labels)["accuracy"]
    except ScoreError:
        return 0.0


def grade_all(folder: str | Path, out: str | Path, *, timeout: float = TIMEOUT_S, memory_gb: float = MEMORY_GB,
              labels: str | Path | None = None, models: Iterable[str] = MODELS, stream=None) -> list[dict]:
    """Grade every submission in ``folder``; writes ``out`` and its companions; returns the rows."""
    stream = stream or sys.stdout
    folder, out = Path(folder), Path(out)
    labels = Path(labels) if labels else None
    if labels is not None and not labels.is_file():
        raise GradeError(f"--labels {labels}: no such file")
    entries = students(folder)
    if not entries:
        raise GradeError(f"{folder}: no submissions (sub-folders or .zip files)")
    reports = out.with_name(f"{out.stem}-gradescope")
    rows, graded = [], []
    with tempfile.TemporaryDirectory(prefix="nmeplib-grade-") as tmp:
        reference = Path(tmp) / "reference.json"
        reference.write_text(json.dumps({m: grading.reference_record(m) for m in models}))
        for entry in entries:
            name = entry.stem if entry.suffix == ".zip" else entry.name
            scratch = Path(tmp) / name
            scratch.mkdir()
            start = time.monotonic()
            try:
                student = unpack(entry, scratch / "files") if entry.suffix == ".zip" else entry
                results = [r for m in models
                           for r in grade_model(student.resolve(), m, reference, timeout, memory_gb, scratch)]
                kaggle = _kaggle(student, labels)
            except (GradeError, zipfile.BadZipFile, OSError) as err:
                results = [{"model": m, "part": p, "status": "FAIL", "seconds": 0.0, "message": f"{err}"}
                           for m in models for p in (*grading.PARTS, *HIDDEN)]
                kaggle = None
            row = student_row(name, results, time.monotonic() - start, kaggle)
            rows.append(row)
            graded.append(results)
            write_json(reports / name / "results.json", gradescope(results, kaggle))
            print(f"{name}: {row['points']:g}/{row['max_points']:g} points, {row['passed']}/{row['parts']} parts"
                  f"{'; ' + row['first_failure'] if row['first_failure'] else ''}", file=stream, flush=True)
            shutil.rmtree(scratch, ignore_errors=True)
            _write_csv(out, rows, COLUMNS)   # after every student: a later crash loses nothing
    summary = part_summary(graded)
    _write_csv(out.with_name(f"{out.stem}-summary.csv"), summary, ("model", "part", "passed", "students"))
    print("\n".join(f"{r['model']:<9} {r['part']:<28} {r['passed']}/{r['students']}" for r in summary), file=stream)
    return rows


def part_summary(graded: list[list[dict]]) -> list[dict]:
    """How many students passed each part, in the order the parts were graded; ``graded`` holds
    each student's results."""
    counts: dict[tuple[str, str], int] = {}
    for results in graded:
        for r in results:
            counts[(r["model"], r["part"])] = counts.get((r["model"], r["part"]), 0) + (r["status"] == "pass")
    return [{"model": m, "part": p, "passed": n, "students": len(graded)} for (m, p), n in counts.items()]


def _write_csv(path: Path, rows: list[dict], columns: Iterable[str]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue()), "w")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmeplib grade", description="Grade a folder of submissions.")
    p.add_argument("submissions", metavar="SUBMISSIONS_DIR", help="one sub-folder or .zip per student")
    p.add_argument("--out", default="grades.csv", help="the grades table (default: grades.csv)")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="SECONDS",
                   help=f"time limit per model per student (default {TIMEOUT_S:g})")
    p.add_argument("--memory", type=float, default=MEMORY_GB, metavar="GB",
                   help=f"memory limit per grading process (default {MEMORY_GB:g})")
    p.add_argument("--labels", metavar="CSV", help="the hidden test labels: each submission.csv is scored")
    args = p.parse_args(argv)
    grade_all(args.submissions, args.out, timeout=args.timeout, memory_gb=args.memory, labels=args.labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
