"""``python -m nmeplib grade``: a class of generated submissions, each graded in its own process
with time and memory limits, one row each whatever the submission does."""
import csv
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from nmeplib.course import grade

ROOT = Path(__file__).resolve().parents[1]
ALEXNET = (ROOT / "nmeplib" / "models" / "alexnet.py").read_text()


def _student(folder: Path, alexnet: str | None) -> Path:
    models = folder / "nmeplib" / "models"
    models.mkdir(parents=True)
    if alexnet is not None:
        (models / "alexnet.py").write_text(alexnet)
    return folder


def _forward_end(text: str, extra: str) -> str:
    """AlexNet with ``extra`` lines at the start of its forward's body."""
    marker = "    def forward(self, x: Tensor) -> Tensor:\n"
    assert marker in text
    return text.replace(marker, marker + extra, 1)


def _read(path: Path) -> dict[str, dict]:
    with path.open(newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_class_of_submissions_each_gets_its_row(tmp_path):
    subs = tmp_path / "subs"
    _student(subs / "correct", ALEXNET)
    _student(subs / "missing_relu", ALEXNET.replace("nn.Conv2d(64, 192, kernel_size=5, padding=2), act()",
                                                    "nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.Identity()", 1))
    _student(subs / "wrong_channels", ALEXNET.replace("nn.Conv2d(3, 64, kernel_size=11", "nn.Conv2d(3, 32, kernel_size=11", 1)
             .replace("nn.Conv2d(64, 192, kernel_size=5", "nn.Conv2d(32, 192, kernel_size=5", 1))
    _student(subs / "endless", _forward_end(ALEXNET, "        while True:\n            pass\n"))
    _student(subs / "syntax", ALEXNET.replace("class AlexNet(nn.Module):", "class AlexNet(nn.Module)", 1))
    _student(subs / "greedy", _forward_end(ALEXNET, "        self.hog = torch.ones(10 * 2**30 // 4)\n")
             .replace("from torch import Tensor, nn", "import torch\nfrom torch import Tensor, nn", 1))
    _student(subs / "no_file", None)
    zipped = _student(tmp_path / "zipped", ALEXNET)
    with zipfile.ZipFile(subs / "zipped.zip", "w") as z:
        z.write(zipped / "nmeplib/models/alexnet.py", "nmeplib/models/alexnet.py")
    out = tmp_path / "grades.csv"
    rows = grade.grade_all(subs, out, timeout=60, memory_gb=4, models=("alexnet",))
    assert [r["student"] for r in rows] == sorted(["correct", "missing_relu", "wrong_channels", "endless",
                                                   "syntax", "greedy", "no_file", "zipped"])
    table = _read(out)
    parts = int(table["correct"]["parts"])
    assert table["correct"]["passed"] == table["zipped"]["passed"] == str(parts)
    assert table["correct"]["points"] == table["correct"]["max_points"]
    assert "forward" in table["missing_relu"]["first_failure"]
    assert "params" in table["wrong_channels"]["first_failure"]
    assert "timed out after 60 s" in table["endless"]["first_failure"]
    assert "SyntaxError" in table["syntax"]["first_failure"] and table["syntax"]["passed"] == "0"
    assert table["greedy"]["passed"] != str(parts) and "allocate" in table["greedy"]["first_failure"]
    assert "missing file nmeplib/models/alexnet.py" in table["no_file"]["first_failure"]
    report = json.loads((tmp_path / "grades-gradescope" / "missing_relu" / "results.json").read_text())
    assert report["score"] < report["max_score"]
    hidden = [t for t in report["tests"] if "hidden:" in t["name"]]
    assert hidden and all(t["visibility"] == "after_published" for t in hidden)
    summary = _read_summary(tmp_path / "grades-summary.csv")
    assert summary[("alexnet", "params")] == 8 - 3   # wrong channels, syntax error, missing file


def _read_summary(path: Path) -> dict[tuple[str, str], int]:
    with path.open(newline="") as f:
        return {(r["model"], r["part"]): int(r["passed"]) for r in csv.DictReader(f)}


@pytest.mark.timeout(120)
def test_a_zip_that_writes_outside_its_folder_is_that_students_row(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    with zipfile.ZipFile(subs / "sneaky.zip", "w") as z:
        z.writestr("../../outside.txt", "x")
    rows = grade.grade_all(subs, tmp_path / "grades.csv", timeout=30, models=("alexnet",))
    assert rows[0]["passed"] == 0 and "outside the submission" in rows[0]["first_failure"]
    assert not (tmp_path / "outside.txt").exists()


def test_an_empty_or_missing_folder_is_one_error(tmp_path):
    with pytest.raises(grade.GradeError, match="no such folder"):
        grade.grade_all(tmp_path / "none", tmp_path / "g.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(grade.GradeError, match="no submissions"):
        grade.grade_all(tmp_path / "empty", tmp_path / "g.csv")


def test_hidden_checks_are_not_in_the_release():
    from nmeplib.course import release

    assert any(Path(p).match(pattern) for pattern in release.STAFF_ONLY for p in ["nmeplib/course/grade_worker.py"])
    assert "hidden" not in (ROOT / "nmeplib" / "grading.py").read_text().lower()
