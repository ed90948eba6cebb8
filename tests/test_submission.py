"""Kaggle submissions and the MediumImageNet path end to end, on generated HDF5 files."""
import errno
import os
import re

import numpy as np
import pytest
import torch

from nmeplib.cli import main
from nmeplib.config import load_config
from nmeplib.data import DatasetError
from nmeplib.data.augment import Augment
from nmeplib.data.build import IMAGENET_MEAN, IMAGENET_STD
from nmeplib.data.hdf5 import load_split, write_hdf5
from nmeplib.engine import fit
from nmeplib.submission import OutputError, load_model, predict, read_submission, write_submission

from helpers import forbid_default_device


def make_hdf5(path, classes=3, sizes=(96, 40, 37), img=32, seed=0, names=True):
    """Images whose mean colour tells the class, so a model can learn them in an epoch.
    ``names``: ``kind_<i>`` (True), none stored (False), or a list of class names."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in zip(("train", "val", "test"), sizes):
        labels = rng.integers(0, classes, n)
        images = rng.integers(0, 60, (n, 3, img, img)).astype(np.uint8)
        images += (labels * (190 // max(classes - 1, 1))).astype(np.uint8)[:, None, None, None]
        splits[split] = (images, labels if split != "test" else None)
    if names is True:
        names = [f"kind_{i}" for i in range(classes)]
    write_hdf5(path, splits, names or None, chunk=16)
    return path


def hdf5_config(path, out, *overrides):
    return load_config("resnet18_medium_imagenet",
                       [f"DATA.ROOT={path}", "MODEL.NAME=lenet", "DATA.IMG_SIZE=32", "DATA.BATCH_SIZE=16",
                        "DATA.NUM_WORKERS=0", "TRAIN.EPOCHS=2", "TRAIN.WARMUP_EPOCHS=0", "TRAIN.LR=0.01",
                        f"OUTPUT={out}", *overrides])


@pytest.mark.parametrize("workers", [0, 2])
def test_hdf5_training_and_submission(tmp_path, workers):
    path = make_hdf5(tmp_path / "mini.hdf5", classes=3)
    config = hdf5_config(path, tmp_path / "run", f"DATA.NUM_WORKERS={workers}")
    history = fit(config)
    assert len(history) == 2 and history[-1]["val_acc"] > 50
    result = predict(tmp_path / "run" / "checkpoint_best.pt")
    assert result["num_images"] == 37 and result["num_classes"] == 3 and result["count"] == 0
    out = write_submission(result["predictions"], tmp_path / "submission.csv", 37, 3)
    lines = out.read_text().splitlines()
    assert lines[0] == "Id,Category" and len(lines) == 38
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(37))
    assert torch.equal(read_submission(out, 37, 3), result["predictions"].cpu())


def test_class_count_comes_from_the_file(tmp_path):
    path = make_hdf5(tmp_path / "five.hdf5", classes=5, names=False)
    fit(hdf5_config(path, tmp_path / "run", "TRAIN.EPOCHS=1"))
    result = predict(tmp_path / "run" / "checkpoint_last.pt")
    assert result["num_classes"] == 5


def test_predictions_follow_test_file_order(tmp_path):
    """Predictions on val in file order must match the labels in file order for a learnable set."""
    path = make_hdf5(tmp_path / "mini.hdf5", classes=2, sizes=(96, 64, 10))
    fit(hdf5_config(path, tmp_path / "run", "TRAIN.EPOCHS=3", "DATA.BATCH_SIZE=8"))
    result = predict(tmp_path / "run" / "checkpoint_best.pt", split="val")
    assert result["acc"] > 90
    assert (result["predictions"].cpu() == result["labels"].cpu()).float().mean() > 0.9


def test_checkpoint_data_root_can_be_overridden(tmp_path):
    path = make_hdf5(tmp_path / "a.hdf5")
    fit(hdf5_config(path, tmp_path / "run", "TRAIN.EPOCHS=1"))
    moved = make_hdf5(tmp_path / "b.hdf5", sizes=(96, 40, 11), seed=1)
    result = predict(tmp_path / "run" / "checkpoint_last.pt", [f"DATA.ROOT={moved}"])
    assert result["num_images"] == 11


@pytest.mark.parametrize("predictions, message", [
    (torch.tensor([0, 1]), "2 predictions for 3 test images"),
    (torch.tensor([0, 1, 3]), r"classes must lie in 0\.\.2"),
    (torch.tensor([0, -1, 2]), r"classes must lie in 0\.\.2"),
])
def test_submission_is_checked_before_writing(tmp_path, predictions, message):
    with pytest.raises(ValueError, match=message):
        write_submission(predictions, tmp_path / "s.csv", 3, 3)
    assert not (tmp_path / "s.csv").exists()


def test_read_submission_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n0,1\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: header must be Id,Category, got id,label$"):
        read_submission(bad)
    bad.write_text("")
    with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: header must be Id,Category, got nothing$"):
        read_submission(bad)
    bad.write_text("Id,Category\n1,0\n0,1\n")
    with pytest.raises(ValueError, match="ids must run"):
        read_submission(bad)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet checkpoint trained for two epochs on a 3-class file (kind_0..kind_2), and the file."""
    root = tmp_path_factory.mktemp("trained")
    path = make_hdf5(root / "mini.hdf5", classes=3)
    fit(hdf5_config(path, root / "run"))
    return root / "run" / "checkpoint_last.pt", path


def test_cli_predict_writes_ids_and_the_models_predictions(trained, tmp_path, capsys):
    checkpoint, path = trained
    out = tmp_path / "submission.csv"
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert f"wrote {out}: 37 rows" in capsys.readouterr().out
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows[0] == ["Id", "Category"]
    assert [int(r[0]) for r in rows[1:]] == list(range(37))
    model, config, _ = load_model(checkpoint, device="cpu")   # the model run by hand on the test images
    images, _ = load_split(path, "test", progress=False)
    normalise = Augment("none", IMAGENET_MEAN, IMAGENET_STD, config.DATA.IMG_SIZE, train=False)
    with torch.no_grad():
        logits = model(normalise(images))
    top2 = logits.topk(2).values
    clear = top2[:, 0] - top2[:, 1] > 0.05    # CUDA predicts in bf16: compare where that cannot matter
    assert clear.sum() > 30
    expected = logits.argmax(1)
    assert torch.equal(torch.tensor([int(r[1]) for r in rows[1:]])[clear], expected[clear])
    assert len(set(expected[clear].tolist())) > 1           # a real test of the order


OTHER_DATA = {
    "more classes": (dict(classes=5), r"has 3 classes but medium_imagenet data \S*other.hdf5 has 5"),
    "200 classes": (dict(classes=200), r"has 3 classes but medium_imagenet data \S*other.hdf5 has 200"),
    "other names": (dict(names=["cat", "dog", "emu"]), r"calls class 0 'kind_0' but .*other.hdf5 calls it 'cat'"),
}


@pytest.mark.parametrize("data, message", OTHER_DATA.values(), ids=OTHER_DATA.keys())
def test_predict_refuses_data_with_other_classes(trained, tmp_path, capsys, data, message):
    checkpoint, _ = trained
    other = make_hdf5(tmp_path / "other.hdf5", seed=2, **data)
    with pytest.raises(DatasetError, match=rf"checkpoint {checkpoint} {message}: .*DATA.ROOT"):
        predict(checkpoint, [f"DATA.ROOT={other}"], device="cpu")
    out = tmp_path / "submission.csv"
    assert main(["predict", "--checkpoint", str(checkpoint), "--set", f"DATA.ROOT={other}", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: checkpoint {checkpoint} ")
    assert not out.exists()


def test_predict_on_the_device_asked_for_returns_the_split_and_config_it_used(trained, monkeypatch):
    import nmeplib.data.build as build
    import nmeplib.runtime as runtime

    forbid_default_device(monkeypatch, runtime, build)
    checkpoint, path = trained
    result = predict(checkpoint, split="val", device="cpu")
    _, labels = load_split(path, "val", progress=False)
    assert result["dataset"].split == "val" and result["num_images"] == len(result["dataset"]) == 40
    assert torch.equal(result["labels"], torch.as_tensor(labels)) and len(result["predictions"]) == 40
    assert result["config"].DATA.ROOT == str(path) and result["num_classes"] == 3


def test_predict_accepts_same_count_without_names(trained, tmp_path):
    checkpoint, _ = trained
    unnamed = make_hdf5(tmp_path / "unnamed.hdf5", names=False, seed=3)
    result = predict(checkpoint, [f"DATA.ROOT={unnamed}"], device="cpu")
    assert result["num_classes"] == 3 and result["num_images"] == 37


def test_out_must_be_a_file_path(trained, tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(OutputError, match=rf"{folder} is a folder"):
        write_submission(torch.tensor([0, 1]), folder, 2, 3)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    with pytest.raises(OutputError, match=rf"{blocker} is a file, not a folder"):
        write_submission(torch.tensor([0, 1]), blocker / "submission.csv", 2, 3)
    assert blocker.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "results"]
    assert list(folder.iterdir()) == []
    assert main(["predict", "--checkpoint", str(trained[0]), "--out", str(folder)]) == 2
    assert capsys.readouterr().err.startswith("error: ") and list(folder.iterdir()) == []


def test_failed_write_keeps_the_old_submission(tmp_path, monkeypatch):
    old = write_submission(torch.tensor([2, 1, 0]), tmp_path / "submission.csv", 3, 3)
    before = old.read_text()

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)            # fails between writing and renaming
    with pytest.raises(OutputError, match="disk .* is full"):
        write_submission(torch.tensor([0, 0, 0]), old, 3, 3)
    monkeypatch.undo()

    class Broken:                                            # fails part-way through the rows
        def __init__(self, f):
            self.f = f

        def writerow(self, row):
            self.f.write("Id,Category\n0,")

        def writerows(self, rows):
            raise RuntimeError("interrupted")
    monkeypatch.setattr("nmeplib.submission.csv.writer", Broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_submission(torch.tensor([0, 0, 0]), old, 3, 3)
    assert old.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_read_submission_checks_each_count_it_is_given(tmp_path):
    path = write_submission(torch.tensor([2, 0, 1]), tmp_path / "s.csv", 3, 3)
    assert read_submission(path).tolist() == [2, 0, 1]
    assert read_submission(path, num_images=3).tolist() == read_submission(path, num_classes=3).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="3 predictions for 4 test images"):
        read_submission(path, num_images=4)
    with pytest.raises(ValueError, match=r"predicted classes must lie in 0\.\.1, got 0\.\.2"):
        read_submission(path, num_classes=2)


def test_a_checkpoint_without_class_names_is_checked_by_its_class_count():
    """Checkpoints that stored only ``num_classes`` still refuse data with another class count."""
    from nmeplib.data import ImageSplit
    from nmeplib.submission import check_classes

    def data(n: int) -> ImageSplit:
        return ImageSplit("digits", "test", torch.zeros(4, dtype=torch.long), [f"class_{i}" for i in range(n)],
                          (0.5,), (0.5,))

    check_classes("old.pt", {"num_classes": 3}, data(3))
    with pytest.raises(DatasetError, match=r"^checkpoint old\.pt has 3 classes but the digits data has 4: "):
        check_classes("old.pt", {"num_classes": 3}, data(4))


def test_load_model_puts_the_weights_and_the_model_on_the_device_asked_for(trained):
    """The checkpoint is loaded straight to the device and the model built there (``meta`` stands
    for a GPU here: neither the CPU default nor the device the file was saved from)."""
    checkpoint, _ = trained
    model, _, state = load_model(checkpoint, device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {t.device.type for t in state["model"].values()} == {"meta"}
