"""The notebooks' run helpers: a run folder's summary read back and the prediction grid's
choice of images, arguments and file."""
import json

import torch

from helpers import image_split
from nmeplib import submission
from nmeplib.config import load_config
from nmeplib.workbook import runs


def test_read_summary_reads_the_folders_summary_and_none_without_one(tmp_path):
    assert runs.read_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text(json.dumps({"best_val_acc": 41.5}))
    assert runs.read_summary(tmp_path) == {"best_val_acc": 41.5}
    assert runs.read_summary(str(tmp_path)) == {"best_val_acc": 41.5}


def _fake_predict(monkeypatch, data, calls):
    def predict(checkpoint, overrides, split):
        calls.append((checkpoint, overrides, split))
        return {"dataset": data, "config": load_config(), "acc": 50.0,
                "predictions": torch.arange(len(data)) % data.num_classes}
    monkeypatch.setattr(submission, "predict", predict)


def test_the_grid_shows_n_seeded_images_in_order_and_passes_the_checkpoint_split_and_overrides(tmp_path, monkeypatch):
    data, calls = image_split(10, per_class=2), []     # 20 images
    _fake_predict(monkeypatch, data, calls)
    fig, result = runs.prediction_grid("run/checkpoint_best.pt", split="train", n=6, seed=3,
                                       overrides={"DATA.BATCH_SIZE": 8}, path=tmp_path / "grid.png")
    assert calls == [("run/checkpoint_best.pt", {"DATA.BATCH_SIZE": 8}, "train")]
    expected = torch.randperm(20, generator=torch.Generator().manual_seed(3))[:6].sort().values
    assert torch.equal(result["indices"], expected)
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert "on digits train: 50.0% overall" in fig._suptitle.get_text()
    _, again = runs.prediction_grid("run/checkpoint_best.pt", n=6, seed=3)
    _, other = runs.prediction_grid("run/checkpoint_best.pt", n=6, seed=4)
    assert torch.equal(again["indices"], expected) and not torch.equal(other["indices"], expected)
    assert calls[1] == ("run/checkpoint_best.pt", {}, "val")
