import json

import pytest
import torch

from nmeplib import checkpoint as ckpt
from nmeplib.config import ConfigError
from nmeplib.engine import TrainingDiverged, evaluate, fit, train_one_epoch, validate
from nmeplib.tracking import read_metrics

# On CUDA a resumed run may differ from an uninterrupted one by cuDNN's nondeterminism only:
# a few predictions of 360 validation images, and the losses in their third digit.
GPU_RESUME_REL, GPU_RESUME_ABS = 0.02, 1.0
KEYS = {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "train_time_s", "train_img_per_s",
        "peak_mem_mb"}


def test_digits_training_reaches_90_percent(digits_config):
    config = digits_config("TRAIN.EPOCHS=12")
    history = fit(config)
    assert len(history) == 12 and KEYS <= set(history[0])
    assert max(r["val_acc"] for r in history) >= 90.0
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    rows = read_metrics(config.OUTPUT)
    assert [r["epoch"] for r in rows] == list(range(1, 13))
    assert all(0 <= r["val_acc"] <= 100 for r in rows)
    with open(f"{config.OUTPUT}/summary.json") as f:
        summary = json.load(f)
    assert summary["best_val_acc"] == max(r["val_acc"] for r in rows)


def test_best_checkpoint_is_the_best_epoch(digits_config):
    config = digits_config("TRAIN.EPOCHS=4")
    history = fit(config)
    best = ckpt.load_checkpoint(f"{config.OUTPUT}/{ckpt.BEST}")
    last = ckpt.load_checkpoint(f"{config.OUTPUT}/{ckpt.LAST}")
    best_row = max(history, key=lambda r: r["val_acc"])
    assert best["epoch"] == best_row["epoch"] and last["epoch"] == 4
    assert best["best_acc"] == best_row["val_acc"]
    assert isinstance(last["config"], dict) and last["config"]["TRAIN"]["EPOCHS"] == 4


def test_resume_matches_uninterrupted_run(digits_config, tmp_path):
    """A run stopped after epoch 2 and resumed ends exactly like one that never stopped (CPU)."""
    overrides = ("TRAIN.EPOCHS=4", "DATA.AUGMENT=crop+flip", "MODEL.DROPOUT=0.2", "TRAIN.WARMUP_EPOCHS=1")
    whole = fit(digits_config(*overrides, f"OUTPUT={tmp_path / 'whole'}"))

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt
    config = digits_config(*overrides, f"OUTPUT={tmp_path / 'split'}")
    with pytest.raises(KeyboardInterrupt):
        fit(config, callbacks=[stop_after_two])
    assert len(read_metrics(config.OUTPUT)) == 2
    resumed = fit(config, resume=True)
    strip = lambda rows: [{k: r[k] for k in ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")}
                          for r in rows]
    if torch.cuda.is_available():  # cuDNN may pick other kernels after the restart: close, not identical
        assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
        for got, want in zip(strip(resumed), strip(whole)):
            assert got == pytest.approx(want, rel=GPU_RESUME_REL, abs=GPU_RESUME_ABS)
    else:
        assert strip(resumed) == strip(whole)
    assert strip(read_metrics(config.OUTPUT)) == strip(resumed)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits_config, monkeypatch):
    import nmeplib.engine as engine
    config = digits_config("TRAIN.EPOCHS=3")
    real = engine.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] > 60 else loss  # epoch 1 is 39 + 9 calls
    monkeypatch.setattr(engine.F, "cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match="TRAIN.LR"):
        fit(config)
    last = ckpt.load_checkpoint(f"{config.OUTPUT}/{ckpt.LAST}")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert len(read_metrics(config.OUTPUT)) == 1


def test_shared_loop_functions(digits_config):
    from nmeplib.data import build_loader
    from nmeplib.models import build_model_from_config
    from nmeplib.optim import build_optimizer

    config = digits_config()
    model = build_model_from_config(config, 10, torch.device("cpu"))
    train = build_loader(config, "train", device="cpu")
    val = build_loader(config, "val", device="cpu")
    result = train_one_epoch(model, train, build_optimizer(config, model), torch.device("cpu"), epoch=1)
    assert result["count"] == len(train) * config.DATA.BATCH_SIZE and result["img_per_s"] > 0
    measured = validate(model, val, torch.device("cpu"))
    predicted = evaluate(model, val, torch.device("cpu"))
    assert measured["acc"] == pytest.approx(predicted["acc"])
    assert torch.equal(predicted["labels"], val.split.labels)
    assert measured["acc"] == pytest.approx(100 * (predicted["predictions"] == predicted["labels"]).float().mean().item())


def test_bad_image_size_for_model_is_a_config_error(digits_config):
    with pytest.raises(ConfigError, match="DATA.IMG_SIZE=32 does not suit MODEL.NAME=alexnet"):
        fit(digits_config("MODEL.NAME=alexnet"))


def test_num_classes_checked_against_labels(digits_config):
    with pytest.raises(ConfigError, match="MODEL.NUM_CLASSES=5.*labels go up to 9"):
        fit(digits_config("MODEL.NUM_CLASSES=5"))


@pytest.mark.parametrize("optimizer, scheduler", [("sgd", "step"), ("rmsprop", "plateau"), ("adam", "constant")])
def test_optimizers_and_schedulers_train(digits_config, optimizer, scheduler):
    history = fit(digits_config("TRAIN.EPOCHS=2", f"TRAIN.OPTIMIZER={optimizer}", f"TRAIN.SCHEDULER={scheduler}",
                                "TRAIN.DECAY_EPOCHS=1", "TRAIN.LR=0.001", "MODEL.ACTIVATION=relu"))
    assert history[0]["lr"] == 0.001
    if scheduler == "step":
        assert history[1]["lr"] == pytest.approx(0.0001)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
