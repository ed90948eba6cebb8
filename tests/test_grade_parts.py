"""The grader's pieces without a class of processes: the hidden checks on planted bugs, one
worker run in this process, what a worker that dies or hangs leaves, and the tables written."""
import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nmeplib import grading
from nmeplib.course import grade, grade_worker
from nmeplib.models import build as model_build

ROOT = Path(__file__).resolve().parents[1]
HIDDEN_PARTS = tuple(grade_worker.HIDDEN)


class _Tiny(nn.Module):
    """A small classifier for any input size: pooled features, one Linear."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.0, **_):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)
        self.dropout = dropout

    def features(self, x):
        return F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)

    def forward(self, x):
        return self.fc(F.dropout(self.features(x), self.dropout, self.training))


class _DropoutAlways(_Tiny):
    def forward(self, x):
        return self.fc(F.dropout(self.features(x), self.dropout, training=True))


class _FixedSize(_Tiny):
    """Right only at check's own input size: other sizes give fewer logits."""

    def forward(self, x):
        out = super().forward(x)
        return out if x.shape[-1] == grading.SPECS["alexnet"].forward_size else out[:, :5]


class _WithNorm(_Tiny):
    def __init__(self, num_classes: int = 10, momentum: float = 0.1, **_):
        super().__init__(num_classes)
        self.bn = nn.BatchNorm2d(4, momentum=momentum)

    def features(self, x):
        return F.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 1).flatten(1)


class _FrozenNorm(_WithNorm):
    def __init__(self, num_classes: int = 10, **_):
        super().__init__(num_classes, momentum=0.0)


class _NormAlwaysTraining(_WithNorm):
    def features(self, x):
        b = self.bn
        y = F.batch_norm(self.conv(x), b.running_mean, b.running_var, b.weight, b.bias, training=True)
        return F.adaptive_avg_pool2d(torch.relu(y), 1).flatten(1)


def _hidden(monkeypatch, model: str, cls) -> dict[str, grading.Result]:
    monkeypatch.setitem(model_build.MODELS, model, cls)
    return {name: grade_worker._hidden(name, model) for name in HIDDEN_PARTS}


@pytest.mark.timeout(60)
def test_hidden_checks_pass_a_sound_model_and_name_only_the_property_of_each_planted_bug(monkeypatch):
    sound = _hidden(monkeypatch, "resnet18", _WithNorm)
    assert {n: r.status for n, r in sound.items()} == dict.fromkeys(HIDDEN_PARTS, "pass")
    assert _hidden(monkeypatch, "alexnet", _Tiny)["hidden:batchnorm_statistics"].status == "pass"   # AlexNet has none
    cases = [
        ("alexnet", _DropoutAlways, "hidden:eval_deterministic", "same output for the same input twice"),
        ("alexnet", _FixedSize, "hidden:other_input_sizes", "must not depend on the input size"),
        ("resnet18", _Tiny, "hidden:batchnorm_statistics", "ResNet18 needs BatchNorm layers"),
        ("resnet18", _FrozenNorm, "hidden:batchnorm_statistics", "must be updated in training mode"),
        ("resnet18", _NormAlwaysTraining, "hidden:batchnorm_statistics", "must not change in eval() mode"),
    ]
    for model, cls, failing, says in cases:
        results = _hidden(monkeypatch, model, cls)
        assert results[failing].status == "FAIL" and says in results[failing].message, (cls.__name__, results[failing])
        assert results[failing].model == model and results[failing].part == failing
        others = {n: r.status for n, r in results.items() if n != failing}
        assert set(others.values()) == {"pass"}, (cls.__name__, others)


@pytest.mark.timeout(60)
def test_a_hidden_check_that_raises_names_the_property_and_a_stub_is_not_implemented(monkeypatch):
    class Raises(_Tiny):
        def forward(self, x):
            raise RuntimeError("secret expected values 1 2 3")

    class Stub(_Tiny):
        def forward(self, x):
            raise NotImplementedError("write forward")

    raised = _hidden(monkeypatch, "alexnet", Raises)
    assert raised["hidden:other_input_sizes"].message == "failed while checking other input sizes"
    assert raised["hidden:eval_deterministic"].message == "failed while checking eval deterministic"
    assert all("secret" not in r.message for r in raised.values())
    stub = _hidden(monkeypatch, "alexnet", Stub)
    assert {r.message for r in stub.values() if r.part != "hidden:batchnorm_statistics"} == {"not implemented yet"}
    assert all(r.status == "FAIL" for r in stub.values() if r.part != "hidden:batchnorm_statistics")


def _student(folder: Path, text: str | None, model: str = "alexnet") -> Path:
    relative, _ = grade_worker.FILES[model]
    if text is not None:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    else:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _worker_rows(tmp_path, monkeypatch, text: str | None, model: str = "alexnet") -> list[dict]:
    """grade_worker.main run in this process; the models table is restored afterwards."""
    monkeypatch.setitem(model_build.MODELS, model, model_build.MODELS[model])
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({model: grading.reference_record(model)}))
    out = tmp_path / "out.jsonl"
    assert grade_worker.main([str(_student(tmp_path / "student", text, model)), model, str(reference), str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.timeout(120)
def test_the_worker_passes_the_solution_and_loads_the_students_file_not_the_courses(tmp_path, monkeypatch):
    solution = (ROOT / "nmeplib/models/alexnet.py").read_text()
    rows = _worker_rows(tmp_path, monkeypatch, solution)
    assert [r["part"] for r in rows] == [*grading.PARTS, *HIDDEN_PARTS]
    assert {r["status"] for r in rows} == {"pass"}, rows
    assert all(r["model"] == "alexnet" and r["seconds"] > 0 for r in rows)
    assert model_build.MODELS["alexnet"].__module__ == "nmeplib.models._student_alexnet"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text, says", [
    (None, "FileNotFoundError: missing file nmeplib/models/alexnet.py"),
    ("class AlexNet(object)\n", "SyntaxError"),
    ("import torch\n\nclass Alex:\n    pass\n", "AttributeError: nmeplib/models/alexnet.py defines no class AlexNet"),
    ("x = 1\nraise ValueError('broken at import')\n", "ValueError: broken at import (line 2)"),
])
def test_a_file_that_cannot_load_fails_every_part_with_its_reason(tmp_path, monkeypatch, text, says):
    rows = _worker_rows(tmp_path, monkeypatch, text)
    assert [r["part"] for r in rows] == [*grading.PARTS, *HIDDEN_PARTS]
    assert all(r["status"] == "FAIL" and says in r["message"] for r in rows), rows[0]
    if text and text.startswith("class"):
        assert "(line 1)" in rows[0]["message"]


def test_each_model_runs_in_a_worker_process_with_its_limits_and_a_quiet_environment(tmp_path, monkeypatch):
    calls, limits = [], []

    def run(command, **kwargs):
        calls.append((command, kwargs))
        out = Path(command[-1])
        out.write_text(json.dumps({"model": "alexnet", "part": grading.PARTS[0], "status": "pass", "seconds": 0.1,
                                   "message": ""}) + "\n")
        return subprocess.CompletedProcess(command, 3, stdout="", stderr="Traceback\nMemoryError: too big\n")

    monkeypatch.setattr(grade.subprocess, "run", run)
    monkeypatch.setattr(grade.resource, "setrlimit", lambda kind, limit: limits.append((kind, limit)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    student, reference = tmp_path / "ada", tmp_path / "reference.json"
    rows = grade.grade_model(student, "alexnet", reference, 42.0, 1.5, tmp_path)
    (command, kwargs), = calls
    out = tmp_path / "alexnet.jsonl"
    assert command == [sys.executable, "-m", "nmeplib.course.grade_worker", str(student), "alexnet", str(reference),
                       str(out)]
    env = kwargs.pop("env")
    assert {k: env[k] for k in ("PYTHONPATH", "NMEPLIB_PROGRESS", "WANDB_MODE", "CUDA_VISIBLE_DEVICES")} == {
        "PYTHONPATH": str(ROOT), "NMEPLIB_PROGRESS": "0", "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": "1"}
    kwargs.pop("preexec_fn")()
    assert limits == [(grade.resource.RLIMIT_DATA, (int(1.5 * 2**30), int(1.5 * 2**30)))]
    assert kwargs == {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 42.0}
    assert [(r["part"], r["status"], r["message"]) for r in rows[:3]] == [
        (grading.PARTS[0], "pass", ""),
        (grading.PARTS[1], "FAIL", "the grading process ended with exit status 3: MemoryError: too big"),
        (grading.PARTS[2], "FAIL", "not reached: an earlier part did not finish")]


def _reference(tmp_path) -> Path:
    path = tmp_path / "reference.json"
    path.write_text('{"alexnet": {}}')
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code, says", [
    ("import time\nwhile True:\n    time.sleep(0.1)\n", "timed out after 1.5 s (an endless loop?)"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "the grading process was killed by signal 9"),
    ("import os\nos._exit(3)\n", "the grading process ended with exit status 3: no message"),
])
def test_a_worker_that_hangs_or_dies_fails_its_first_part_with_why_and_the_rest_as_not_reached(tmp_path, monkeypatch,
                                                                                               code, says):
    monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)   # under mutmut: the worker runs the code as it is
    # the worker's own start (importing torch) is not timed here: the file runs as its module is loaded
    student = _student(tmp_path / "student", code)
    timeout = 1.5 if "while" in code else 60
    rows = grade.grade_model(student, "alexnet", _reference(tmp_path), timeout, 4.0, tmp_path)
    assert [r["part"] for r in rows] == [*grading.PARTS, *HIDDEN_PARTS]
    assert rows[0]["message"].startswith(says), rows[0]
    assert {r["message"] for r in rows[1:]} == {"not reached: an earlier part did not finish"}
    assert all(r["status"] == "FAIL" and r["model"] == "alexnet" for r in rows)


def _rows(model: str, passing: set[str]) -> list[dict]:
    return [{"model": model, "part": p, "status": "pass" if p in passing else "FAIL", "seconds": 0.5,
             "message": "" if p in passing else f"{p} is wrong"} for p in (*grading.PARTS, *HIDDEN_PARTS)]


def test_a_students_row_and_gradescope_report_count_points_by_part(monkeypatch):
    monkeypatch.setattr(grading, "points", lambda model, part: {"params": 2.0, "train": 3.0}.get(part, 1.0))
    results = _rows("alexnet", {"params", "shapes", "hidden:other_input_sizes"}) + _rows("resnet18", {"train"})
    row = grade.student_row("ada", results, 12.34, 51.5)
    assert row == {"student": "ada", "passed": 4, "parts": 16, "points": 2 + 1 + 1 + 3, "max_points": 2 * (2 + 3 + 6),
                   "seconds": 12.3, "kaggle_acc": 51.5, "first_failure": "alexnet grads: grads is wrong"}
    assert grade.student_row("bo", _rows("alexnet", set(grading.PARTS) | set(HIDDEN_PARTS)), 1, None)["first_failure"] == ""
    assert grade.student_row("bo", results, 1, None)["kaggle_acc"] == ""
    report = grade.gradescope(results, 51.5)
    assert report["score"] == 7 and report["max_score"] == 22
    tests = {t["name"]: t for t in report["tests"]}
    assert tests["alexnet params"] == {"name": "alexnet params", "score": 2.0, "max_score": 2.0, "output": "passed",
                                       "visibility": "visible"}
    assert tests["alexnet train"]["score"] == 0.0 and tests["alexnet train"]["output"] == "train is wrong"
    assert tests["resnet18 hidden:eval_deterministic"]["visibility"] == "after_published"
    assert tests["Kaggle accuracy on the hidden test labels"]["output"] == "51.50%"
    assert "Kaggle accuracy on the hidden test labels" not in {t["name"] for t in grade.gradescope(results, None)["tests"]}


def test_the_summary_counts_each_parts_passes_in_grading_order():
    graded = [_rows("alexnet", {"params", "shapes"}), _rows("alexnet", {"params"}), _rows("alexnet", set())]
    summary = grade.part_summary(graded)
    assert [r["part"] for r in summary] == [*grading.PARTS, *HIDDEN_PARTS]
    counts = {r["part"]: r["passed"] for r in summary}
    assert counts["params"] == 2 and counts["shapes"] == 1 and counts["train"] == 0
    assert {r["students"] for r in summary} == {3}


def test_submissions_are_folders_and_zips_by_name_and_an_oversized_zip_is_refused(tmp_path, monkeypatch):
    for name in ("b", "a", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "c.zip").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in grade.students(tmp_path)] == ["a", "b", "c.zip"]
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("nmeplib/models/alexnet.py", "x" * 2000)
    monkeypatch.setattr(grade, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(grade.GradeError, match="more than 0 MB unpacked"):
        grade.unpack(archive, tmp_path / "into")
    assert not (tmp_path / "into").exists()
    monkeypatch.setattr(grade, "MAX_ZIP_BYTES", 2000)
    assert (grade.unpack(archive, tmp_path / "into") / "nmeplib/models/alexnet.py").read_text() == "x" * 2000


def test_the_kaggle_column_scores_a_submission_and_a_broken_one_scores_zero(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Category\n0,3\n1,4\n")
    student = tmp_path / "s"
    student.mkdir()
    assert grade._kaggle(student, labels) is None
    (student / "submission.csv").write_text("Id,Category\n0,3\n1,5\n")
    assert grade._kaggle(student, None) is None
    assert grade._kaggle(student, labels) == pytest.approx(50.0)
    (student / "submission.csv").write_text("nonsense\n")
    assert grade._kaggle(student, labels) == 0.0


def test_the_command_passes_its_options_and_a_missing_labels_file_is_one_error(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(grade, "grade_all", lambda *a, **k: seen.update(args=a, kwargs=k) or [])
    assert grade.main(["subs", "--out", "g.csv", "--timeout", "7", "--memory", "2.5", "--labels", "l.csv"]) == 0
    assert seen == {"args": ("subs", "g.csv"), "kwargs": {"timeout": 7.0, "memory_gb": 2.5, "labels": "l.csv"}}
    assert grade.main(["subs"]) == 0
    assert seen["args"] == ("subs", "grades.csv")
    assert seen["kwargs"] == {"timeout": grade.TIMEOUT_S, "memory_gb": grade.MEMORY_GB, "labels": None}
    monkeypatch.undo()
    (tmp_path / "subs" / "a").mkdir(parents=True)
    with pytest.raises(grade.GradeError, match="--labels .*: no such file"):
        grade.grade_all(tmp_path / "subs", tmp_path / "g.csv", labels=tmp_path / "none.csv")


def test_grade_all_writes_rows_reports_and_summary_for_each_student(tmp_path, monkeypatch):
    calls = []

    def fake(student, model, reference, timeout, memory_gb, scratch):
        calls.append((student.name, model, timeout, memory_gb))
        assert json.loads(Path(reference).read_text()).keys() == {"alexnet"}
        return _rows(model, {"params"} if student.name == "a" else set())

    monkeypatch.setattr(grade, "grade_model", fake)
    monkeypatch.setattr(grading, "reference_record", lambda model: {"model": model})
    subs = tmp_path / "subs"
    for name in ("a", "b"):
        (subs / name).mkdir(parents=True)
    out = tmp_path / "g.csv"
    log = io.StringIO()
    rows = grade.grade_all(subs, out, timeout=9, memory_gb=1.5, models=("alexnet",), stream=log)
    assert calls == [("a", "alexnet", 9, 1.5), ("b", "alexnet", 9, 1.5)]
    with out.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["student"] for r in table] == ["a", "b"] and [r["passed"] for r in table] == ["1", "0"]
    assert [r["passed"] for r in rows] == [1, 0]
    assert json.loads((tmp_path / "g-gradescope" / "a" / "results.json").read_text())["score"] == 1
    with (tmp_path / "g-summary.csv").open(newline="") as f:
        summary = {r["part"]: r["passed"] for r in csv.DictReader(f)}
    assert summary["params"] == "1" and summary["shapes"] == "0"
    printed = log.getvalue().splitlines()
    assert printed[:2] == [f"a: {grading.points('alexnet', 'params'):g}/{rows[0]['max_points']:g} points, 1/8 parts; "
                           f"alexnet shapes: shapes is wrong",
                           f"b: 0/{rows[1]['max_points']:g} points, 0/8 parts; alexnet params: params is wrong"]
    assert printed[2:] == [f"alexnet   {part:<28} {int(part == 'params')}/2" for part in (*grading.PARTS, *HIDDEN_PARTS)]
