"""Handing in: ``check worksheet`` lists what is missing, ``submit`` refuses an unfinished hand-in
and packs a finished one (no checkpoints)."""
import zipfile
from pathlib import Path

import pytest

from nmeplib import cli, handin

FINISHED = """# Homework

Repository: https://example.org/me/homework

## 1.1 A question

An answer.

![curves](figures/curves.png)
"""


def _repo(root: Path, worksheet: str = FINISHED) -> Path:
    (root / "figures").mkdir(parents=True)
    (root / "figures" / "curves.png").write_bytes(b"png")
    (root / "worksheet.md").write_text(worksheet)
    for name in handin.MODELS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("# model\n")
    run = root / "runs" / "alexnet"
    run.mkdir(parents=True)
    for name in ("summary.json", "metrics.jsonl", "checkpoint_last.pt", "checkpoint_best.pt"):
        (run / name).write_text("{}")
    (root / "submission.csv").write_text("Id,Category\n0,3\n1,1\n")
    return root


def test_a_finished_worksheet_has_no_problems(tmp_path):
    assert handin.worksheet_problems(_repo(tmp_path) / "worksheet.md") == []


def test_check_worksheet_names_each_unanswered_question_missing_figure_and_link(tmp_path, capsys):
    text = ("# Homework\n\nRepository: YOUR REPOSITORY LINK HERE\n\n## 1.1 First\n\nYOUR ANSWER HERE\n\n"
            "## 1.2 Second\n\nDone.\n\n### 1.2.1 Third\n\nYOUR ANSWER HERE\n\n![grid](figures/grid.png)\n")
    root = _repo(tmp_path, text)
    problems = handin.worksheet_problems(root / "worksheet.md")
    assert problems == ["unanswered: 1.1 First (line 7)", "unanswered: 1.2.1 Third (line 15)",
                        "missing figure: figures/grid.png (line 17, under 1.2.1 Third)",
                        "no repository link: put it on the 'Repository:' line (in place of YOUR REPOSITORY LINK HERE)"]
    assert cli.main(["check", "worksheet", str(root / "worksheet.md")]) == 1
    assert "4 thing(s) to finish" in capsys.readouterr().out


def test_submit_refuses_an_unfinished_hand_in_and_writes_nothing(tmp_path):
    root = _repo(tmp_path / "repo", FINISHED.replace("An answer.", "YOUR ANSWER HERE"))
    out = tmp_path / "handin.zip"
    path, problems = handin.submit(out, root, check_models=False)
    assert path is None and problems == ["unanswered: 1.1 A question (line 7)"] and not out.exists()
    path, _ = handin.submit(out, root, force=True, check_models=False)
    assert path == out and out.is_file()


def test_submit_packs_a_finished_hand_in_without_checkpoints(tmp_path):
    root = _repo(tmp_path / "repo")
    path, problems = handin.submit(tmp_path / "handin.zip", root, check_models=False)
    assert problems == []
    names = sorted(zipfile.ZipFile(path).namelist())
    assert names == sorted(["nmeplib/models/alexnet.py", "nmeplib/models/resnet.py", "worksheet.md",
                            "figures/curves.png", "submission.csv", "runs/alexnet/summary.json",
                            "runs/alexnet/metrics.jsonl"])


@pytest.mark.parametrize("text, says", [
    ("Id,Category\n1,3\n0,1\n", "ids must run 0..N-1"),
    ("id,category\n0,3\n", "header must be Id,Category"),
])
def test_submit_reads_the_submission_back(tmp_path, text, says):
    root = _repo(tmp_path / "repo")
    (root / "submission.csv").write_text(text)
    path, problems = handin.submit(tmp_path / "handin.zip", root, check_models=False)
    assert path is None and len(problems) == 1 and says in problems[0]


def test_submit_lists_failing_model_checks(tmp_path, monkeypatch, capsys):
    root = _repo(tmp_path / "repo")
    monkeypatch.setattr(handin, "model_problems", lambda: ["check alexnet forward: layer features.3 differs"])
    monkeypatch.chdir(root)
    assert cli.main(["submit", str(tmp_path / "handin.zip")]) == 1
    out = capsys.readouterr().out
    assert "check alexnet forward: layer features.3 differs" in out and "not written" in out
    assert not (tmp_path / "handin.zip").exists()


def test_model_and_worksheet_problems_are_listed_together_and_main_exits_by_them(tmp_path, monkeypatch, capsys):
    root = _repo(tmp_path / "repo", FINISHED.replace("An answer.", "YOUR ANSWER HERE"))
    monkeypatch.setattr(handin, "model_problems", lambda: ["check resnet18 train: did not learn"])
    path, problems = handin.submit(tmp_path / "handin.zip", root)
    assert path is None
    assert problems == ["check resnet18 train: did not learn", "unanswered: 1.1 A question (line 7)"]
    monkeypatch.chdir(root)
    monkeypatch.setattr(handin, "model_problems", lambda: [])
    assert handin.main([str(tmp_path / "forced.zip"), "--force"]) == 1   # written, but with a problem
    assert (tmp_path / "forced.zip").is_file()
    (root / "worksheet.md").write_text(FINISHED)
    assert handin.main([str(tmp_path / "ready.zip")]) == 0
    assert "wrote" in capsys.readouterr().out


def test_a_hand_in_that_is_not_a_zip_or_a_worksheet_that_cannot_be_read_is_one_error(tmp_path):
    root = _repo(tmp_path / "repo")
    with pytest.raises(handin.HandInError, match=r"handin\.tar: the hand-in is a \.zip file"):
        handin.submit(tmp_path / "handin.tar", root, check_models=False)
    with pytest.raises(handin.HandInError, match=r"none\.md: cannot read the worksheet \(No such file or directory\)"):
        handin.worksheet_problems(tmp_path / "none.md")


def test_class_zero_is_a_class_and_a_negative_one_is_not(tmp_path):
    path = tmp_path / "submission.csv"
    path.write_text("Id,Category\n0,0\n1,0\n")
    assert handin.submission_problems(path) == []
    path.write_text("Id,Category\n0,0\n1,-1\n")
    assert handin.submission_problems(path) == [f"submission: {path} has a negative class"]
    path.write_text("Id,Category\n")
    assert handin.submission_problems(path) == [f"submission: {path} has no rows"]


def test_linked_web_figures_are_neither_missing_nor_packed(tmp_path):
    root = _repo(tmp_path / "repo", FINISHED + "\n![web](https://example.org/figures/curves.png)\n")
    assert handin.worksheet_problems(root / "worksheet.md") == []
    read_as_a_path = root / "https:" / "example.org" / "figures" / "curves.png"
    read_as_a_path.parent.mkdir(parents=True)
    read_as_a_path.write_bytes(b"png")
    assert Path("figures/curves.png") in handin.handed_in(root)
    assert not [p for p in handin.handed_in(root) if "example.org" in str(p)]
