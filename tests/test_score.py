"""The local leaderboard: ``make-hdf5 --test-labels`` keeps the hidden labels apart, ``score``
scores a submission against them, one error line for files that do not match."""
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from nmeplib import cli
from nmeplib.course.score import ScoreError, score
from nmeplib.data.make_hdf5 import hidden_test_labels


def _tree(root: Path) -> Path:
    """train/ and test/ class folders whose images are each a solid colour naming their class."""
    for split, count in (("train", 3), ("test", 2)):
        for c, name in enumerate(("cat", "dog", "emu")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((6, 6, 3), 40 * c + i, np.uint8)).save(folder / f"{i}.png")
    return root


def test_make_hdf5_writes_the_test_labels_in_the_files_order(tmp_path, capsys):
    src = _tree(tmp_path / "src")
    out, labels = tmp_path / "x.hdf5", tmp_path / "labels.csv"
    assert cli.main(["make-hdf5", str(src), str(out), "--img-size", "4", "--test-labels", str(labels)]) == 0
    rows = labels.read_text().splitlines()
    assert rows[0] == "Id,Category" and len(rows) == 1 + 6
    with h5py.File(out, "r") as f:
        pixels = f["images-test"][:, 0, 0, 0]
        assert "labels-test" not in f or (f["labels-test"][:] < 0).all()   # hidden in the file
    # each test image's colour says its class (40 * class + i): the labels file agrees, row by row
    assert [int(r.split(",")[1]) for r in rows[1:]] == [int(p) // 40 for p in pixels]
    assert hidden_test_labels(src) == [int(r.split(",")[1]) for r in rows[1:]]


def test_a_test_image_outside_the_class_folders_has_no_label(tmp_path):
    src = _tree(tmp_path / "src")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(src / "test" / "loose.png")
    with pytest.raises(Exception, match="outside the class folders"):
        hidden_test_labels(src)


def test_score_counts_the_matching_rows(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Category\n0,1\n1,2\n2,0\n3,0\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("Id,Category\n0,1\n1,0\n2,0\n3,2\n")
    assert score(submission, labels)["accuracy"] == 50.0
    assert cli.main(["score", str(submission), str(labels), "--out", str(tmp_path / "s.json")]) == 0
    assert "50.00% (2 of 4 test images)" in capsys.readouterr().out
    assert '"correct": 2' in (tmp_path / "s.json").read_text()


@pytest.mark.parametrize("text, says", [
    ("Id,Category\n0,1\n1,2\n", r"2 rows, but .* has 4 test images"),
    ("Id,Label\n0,1\n1,2\n2,0\n3,0\n", r"header must be Id,Category"),
    ("Id,Category\n1,1\n0,2\n2,0\n3,0\n", r"ids must run 0..N-1 in order"),
])
def test_a_submission_that_does_not_match_is_one_error_line(tmp_path, capsys, text, says):
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Category\n0,1\n1,2\n2,0\n3,0\n")
    submission = tmp_path / "submission.csv"
    submission.write_text(text)
    with pytest.raises(ScoreError, match=says):
        score(submission, labels)
    assert cli.main(["score", str(submission), str(labels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_the_score_names_its_files_and_counts(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Category\n0,1\n1,2\n2,0\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("Id,Category\n0,1\n1,2\n2,1\n")
    assert score(submission, labels) == {"submission": str(submission), "labels": str(labels), "rows": 3,
                                         "correct": 2, "accuracy": 66.6667}
