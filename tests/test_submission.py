"""Kaggle submissions and the MediumImageNet path end to end, on generated HDF5 files."""
import numpy as np
import pytest
import torch

from nmeplib.config import load_config
from nmeplib.data.hdf5 import write_hdf5
from nmeplib.engine import fit
from nmeplib.submission import predict, read_submission, write_submission


def make_hdf5(path, classes=3, sizes=(96, 40, 37), img=32, seed=0, names=True):
    """Images whose mean colour tells the class, so a model can learn them in an epoch."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in zip(("train", "val", "test"), sizes):
        labels = rng.integers(0, classes, n)
        images = rng.integers(0, 60, (n, 3, img, img)).astype(np.uint8)
        images += (labels * (190 // max(classes - 1, 1))).astype(np.uint8)[:, None, None, None]
        splits[split] = (images, labels if split != "test" else None)
    write_hdf5(path, splits, [f"kind_{i}" for i in range(classes)] if names else None, chunk=16)
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
    with pytest.raises(ValueError, match="header must be Id,Category"):
        read_submission(bad)
    bad.write_text("Id,Category\n1,0\n0,1\n")
    with pytest.raises(ValueError, match="ids must run"):
        read_submission(bad)
