import json

import pytest
import torch

from nmeplib import checkpoint as ckpt
from nmeplib.config import ConfigError
from nmeplib.data import build_loader
from nmeplib.engine import TrainingDiverged, evaluate, fit, train_one_epoch, validate
from nmeplib.tracking import read_metrics

from helpers import forbid_default_device

# On CUDA a resumed run may differ from an uninterrupted one by cuDNN's nondeterminism only:
# a few predictions of 360 validation images, and the losses in their third digit.
GPU_RESUME_REL, GPU_RESUME_ABS = 0.02, 1.0
KEYS = {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "train_time_s", "train_img_per_s",
        "peak_mem_mb"}


@pytest.mark.slow
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


@pytest.mark.slow
def test_best_checkpoint_is_the_best_epoch(digits_config):
    config = digits_config("TRAIN.EPOCHS=4")
    history = fit(config)
    best = ckpt.load_checkpoint(f"{config.OUTPUT}/{ckpt.BEST}")
    last = ckpt.load_checkpoint(f"{config.OUTPUT}/{ckpt.LAST}")
    best_row = max(history, key=lambda r: r["val_acc"])
    assert best["epoch"] == best_row["epoch"] and last["epoch"] == 4
    assert best["best_acc"] == best_row["val_acc"]
    assert isinstance(last["config"], dict) and last["config"]["TRAIN"]["EPOCHS"] == 4


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, scheduler", [("sgd", "step"), ("rmsprop", "plateau"), ("adam", "constant")])
def test_optimizers_and_schedulers_train(digits_config, optimizer, scheduler):
    history = fit(digits_config("TRAIN.EPOCHS=2", f"TRAIN.OPTIMIZER={optimizer}", f"TRAIN.SCHEDULER={scheduler}",
                                "TRAIN.DECAY_EPOCHS=1", "TRAIN.LR=0.001", "MODEL.ACTIVATION=relu"))
    assert history[0]["lr"] == 0.001
    if scheduler == "step":
        assert history[1]["lr"] == pytest.approx(0.0001)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)


# --- the shared loop on a tiny linear model: exact values, milliseconds per test ---------------------------

def _batches(n_batches=3, batch=4, classes=3, seed=0, hidden=()):
    """A list of (x, y) batches of 2 x 2 x 2 inputs; labels at the flat positions in ``hidden`` are -1."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batches * batch, 2, 2, 2, generator=gen)
    y = torch.randint(0, classes, (n_batches * batch,), generator=gen)
    y[list(hidden)] = -1
    return list(zip(x.split(batch), y.split(batch)))


def _linear(classes=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, classes))


def test_measuring_gives_exact_loss_accuracy_and_predictions_and_skips_hidden_labels():
    from torch.nn import functional as F

    batches, model, cpu = _batches(hidden=(1, 6, 7)), _linear(), torch.device("cpu")
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = model(x)
    seen = y >= 0
    for smoothing in (0.0, 0.2):
        got = validate(model, batches, cpu, label_smoothing=smoothing)
        want = F.cross_entropy(logits[seen], y[seen], label_smoothing=smoothing)
        assert got["loss"] == pytest.approx(want.item(), rel=1e-6) and got["count"] == 9
        assert got["acc"] == pytest.approx(100 * (logits.argmax(1)[seen] == y[seen]).float().mean().item())
        assert got["time_s"] > 0 and got["img_per_s"] == pytest.approx(12 / got["time_s"])
        assert "predictions" not in got and not model.training
    out = evaluate(model, batches, cpu)
    assert torch.equal(out["predictions"], logits.argmax(1)) and torch.equal(out["labels"], y)
    assert out["acc"] == pytest.approx(validate(model, batches, cpu)["acc"])


def test_an_empty_or_all_hidden_split_reports_nan_not_zero():
    import math

    cpu = torch.device("cpu")
    hidden = evaluate(_linear(), _batches(n_batches=1, hidden=range(4)), cpu)
    assert hidden["count"] == 0 and math.isnan(hidden["loss"]) and math.isnan(hidden["acc"])
    assert len(hidden["predictions"]) == 4 and hidden["labels"].tolist() == [-1] * 4
    empty = evaluate(_linear(), [], cpu)
    assert empty["count"] == 0 and math.isnan(empty["loss"]) and math.isnan(empty["acc"])
    assert empty["predictions"].dtype == empty["labels"].dtype == torch.long and len(empty["predictions"]) == 0


@pytest.mark.parametrize("hidden", [(0,), (0, 1, 2)])   # 3 labelled images in the first batch, or 1
def test_a_training_step_is_plain_sgd_on_the_mean_loss_of_labelled_images(hidden):
    from torch.nn import functional as F

    batches, cpu = _batches(n_batches=2, hidden=hidden), torch.device("cpu")
    model, twin = _linear(), _linear()
    steps = []

    class Counting:
        def step_batch(self):
            steps.append(model[1].weight.detach().clone())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_one_epoch(model, batches, optimizer, cpu, schedule=Counting(), label_smoothing=0.1, epoch=3)
    assert model.training and len(steps) == 2
    by_hand = torch.optim.SGD(twin.parameters(), lr=0.5)
    for (x, y), after in zip(batches, steps):
        by_hand.zero_grad()
        F.cross_entropy(twin(x), y, ignore_index=-1, label_smoothing=0.1).backward()  # mean over labelled
        by_hand.step()
        assert torch.allclose(twin[1].weight, after, atol=1e-6)


def test_train_one_epoch_sets_the_loaders_epoch_and_reports_the_epochs_figures():
    cpu = torch.device("cpu")

    class Loader(list):
        epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    loader = Loader(_batches())
    model = _linear()
    before = validate(model, loader, cpu)
    result = train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.0), cpu, epoch=7)
    assert loader.epoch == 7 and result["count"] == 12
    assert result["loss"] == pytest.approx(before["loss"]) and result["acc"] == pytest.approx(before["acc"])


@pytest.mark.parametrize("bad_step", [0, 1, 2])
def test_a_non_finite_loss_stops_training_wherever_it_appears(monkeypatch, bad_step):
    import nmeplib.engine as engine

    batches = _batches()
    batches[bad_step][0][0, 0, 0, 0] = float("nan")
    model = _linear()
    with pytest.raises(TrainingDiverged, match=r"lower TRAIN\.LR"):
        train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))
    monkeypatch.setattr(engine, "LOG_EVERY", 1)   # checked at the step itself, naming it
    model = _linear()
    with pytest.raises(TrainingDiverged, match=rf"^loss is nan at step {bad_step} \(train 0\); lower TRAIN\.LR$"):
        train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))


def test_a_finite_loss_far_above_chance_is_divergence_only_in_training():
    import math

    import nmeplib.engine as engine

    cpu = torch.device("cpu")
    batches = [(torch.ones(4, 2, 2, 2), torch.tensor([0, 1, 2, 0]))]
    model = _linear()
    with torch.no_grad():   # logits ~±1000: a loss in the hundreds, above 10 x ln(3)
        model[1].weight.fill_(0)
        model[1].bias.copy_(torch.tensor([-1000.0, 1000.0, 0.0]))
    loss = validate(model, batches, cpu)["loss"]
    assert loss > engine.DIVERGED * math.log(3)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(TrainingDiverged, match=r"^the training loss is .* over 10 times an untrained model's"):
        train_one_epoch(model, batches, frozen, cpu)
    with torch.no_grad():   # a loss just under the limit trains on
        model[1].bias.copy_(torch.tensor([0.0, 0.9 * engine.DIVERGED * math.log(3) * 4 / 3, 0.0]))
    assert train_one_epoch(model, batches, frozen, cpu)["loss"] < engine.DIVERGED * math.log(3)


def test_num_classes_come_from_the_dataset_and_every_label_must_fit():
    from types import SimpleNamespace

    from nmeplib.config import load_config
    from nmeplib.data import DatasetError
    from nmeplib.engine import num_classes_for

    class Split(SimpleNamespace):
        def __len__(self):
            return self.n

    def split(labels, num_classes=0, name="val"):
        return Split(labels=torch.tensor(labels), num_classes=num_classes, split=name, path="f.h5", n=len(labels))
    config = load_config()
    assert num_classes_for(config, split([0, 1], num_classes=7)) == 7
    assert num_classes_for(config, split([0, 4], num_classes=5), split([-1, 4])) == 5
    assert num_classes_for(load_config(None, ["MODEL.NUM_CLASSES=9"]), split([0, 8], num_classes=3)) == 9
    with pytest.raises(ConfigError, match=r"^MODEL\.NUM_CLASSES=8 but the digits labels go up to 8$"):
        num_classes_for(load_config(None, ["MODEL.NUM_CLASSES=8"]), split([0, 8]))
    with pytest.raises(DatasetError, match=r"^the train split of f\.h5 has label 4, but the dataset has 3 classes"):
        num_classes_for(config, split([0, 4], num_classes=3, name="train"))   # never a bigger model
    with pytest.raises(DatasetError, match=r"^the val split of f\.h5 has label 7, but the dataset has 4 classes"):
        num_classes_for(config, split([0, 3], num_classes=4, name="train"), split([-1, 7]))
    with pytest.raises(DatasetError, match=r"^the val split of f\.h5 holds no images"):
        num_classes_for(config, split([0, 3], num_classes=4, name="train"), split([]))


def test_config_changes_name_each_setting_and_skip_the_ignored():
    from nmeplib.config import load_config
    from nmeplib.runstate import config_changes

    stored = load_config(None, ["TRAIN.LR=0.01", "OUTPUT=a"]).to_dict()
    assert config_changes(stored, load_config(None, ["TRAIN.LR=0.01", "OUTPUT=a"])) == []
    assert config_changes(stored, load_config(None, ["TRAIN.LR=0.02", "OUTPUT=b", "SEED=1"])) == [
        "TRAIN.LR: 0.01 → 0.02", "SEED: 0 → 1", "OUTPUT: 'a' → 'b'"]
    assert config_changes(stored, load_config(None, ["OUTPUT=b", "WANDB.NAME=x"]), ("OUTPUT", "WANDB.")) == [
        "TRAIN.LR: 0.01 → 0.001"]


def test_one_process_trains_the_model_itself():
    from nmeplib.engine import _all_reduce, _gather, distribute

    model, value = _linear(), torch.tensor([1.0, 2.0])
    assert distribute(model, torch.device("cpu")) is model
    assert _gather(value) is value and _all_reduce(value)[0] is value


def test_fit_wires_its_device_schedule_smoothing_and_class_names_through(digits_config, monkeypatch):
    import nmeplib.engine as engine
    from nmeplib.optim import Schedule

    forbid_default_device(monkeypatch, engine)
    calls, real_train, real_validate = [], engine.train_one_epoch, engine.validate
    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **kw: calls.append(("train", kw)) or real_train(*a, **kw))
    monkeypatch.setattr(engine, "validate", lambda *a, **kw: calls.append(("val", kw)) or real_validate(*a, **kw))
    config = digits_config("TRAIN.EPOCHS=2", "TRAIN.LABEL_SMOOTHING=0.2", "TRAIN.LR=0.002")
    history = fit(config, device="cpu")
    assert [(name, kw["label_smoothing"]) for name, kw in calls] == [("train", 0.2), ("val", 0.2)] * 2
    assert all(isinstance(kw["schedule"], Schedule) for name, kw in calls if name == "train")
    assert [kw["epoch"] for name, kw in calls if name == "train"] == [1, 2]
    assert history[0]["lr"] == 0.002 and history[1]["lr"] == pytest.approx(0.001)   # cosine, half-way
    saved = ckpt.load_checkpoint(f"{config.OUTPUT}/{ckpt.LAST}")
    assert saved["class_names"] == [str(i) for i in range(10)] and saved["num_classes"] == 10


def test_the_progress_bar_shows_the_mean_loss_so_far(monkeypatch):
    import nmeplib.engine as engine

    shown = []

    class Bar(list):
        def set_postfix(self, **values):
            shown.append(float(values["loss"]))
    batches, model = _batches(n_batches=3, hidden=(1,)), _linear()
    first = validate(model, batches[:1], torch.device("cpu"))["loss"]
    monkeypatch.setattr(engine, "progress", lambda loader, desc, total, show=True: Bar(loader))
    monkeypatch.setattr(engine, "LOG_EVERY", 2)
    result = validate(model, batches, torch.device("cpu"))
    assert shown[0] == pytest.approx(first, abs=1e-3) and len(shown) == 2            # steps 0 and 2
    assert shown[1] == pytest.approx(result["loss"], abs=1e-3)


def test_cuda_steps_run_under_bfloat16_autocast_and_cpu_steps_under_none():
    import warnings
    from contextlib import nullcontext

    from nmeplib.engine import _autocast

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # without a GPU, torch warns that it disables this autocast
        cuda = _autocast(torch.device("cuda", 0))
    assert isinstance(cuda, torch.autocast) and (cuda.device, cuda.fast_dtype) == ("cuda", torch.bfloat16)
    assert isinstance(_autocast(torch.device("cpu")), nullcontext)


def test_a_one_process_group_measures_exactly_like_no_group(tmp_path):
    """Under a process group the loop all-reduces its sums and gathers the predictions; with one rank
    that gives back exactly what it measured (gloo, on the CPU also on a machine with GPUs)."""
    import torch.distributed as dist

    from nmeplib.engine import distribute
    from nmeplib.runtime import rank_and_world

    batches, model, cpu = _batches(n_batches=3, hidden=(2,)), _linear(), torch.device("cpu")
    alone = evaluate(model, batches, cpu)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        grouped = evaluate(model, batches, cpu)
        assert rank_and_world() == (0, 1) and distribute(model, cpu) is model
    finally:
        dist.destroy_process_group()
    assert torch.equal(grouped["predictions"], alone["predictions"]) and torch.equal(grouped["labels"], alone["labels"])
    assert {k: grouped[k] for k in ("loss", "acc")} == {k: alone[k] for k in ("loss", "acc")}


@pytest.mark.parametrize("overwrite", [False, True])
def test_fit_with_nproc_hands_the_run_to_torchrun(digits_config, monkeypatch, overwrite):
    import nmeplib.distributed as distributed

    calls = []
    monkeypatch.setattr(distributed, "launch", lambda *args, **kwargs: calls.append((args, kwargs)) or ["rows"])
    config, callbacks = digits_config(), [print]
    assert fit(config, nproc=3, resume=True, overwrite=overwrite, callbacks=callbacks) == ["rows"]
    (args, kwargs), = calls
    assert args == (config, 3) and kwargs.pop("resume") is True and kwargs.pop("callbacks") is callbacks
    assert kwargs.get("overwrite", False) is overwrite


def test_compile_true_trains_the_compiled_model(digits_config, monkeypatch):
    """``TRAIN.COMPILE`` hands the built model to torch.compile and trains what it returns."""
    compiled, steps = [], []

    class Compiled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            steps.append(len(x))
            return self.model(x)

    def fake_compile(model):
        compiled.append(model)
        return Compiled(model)
    monkeypatch.setattr(torch, "compile", fake_compile)
    config = digits_config("TRAIN.EPOCHS=1", "TRAIN.COMPILE=true")
    fit(config)
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "LeNet"
    cpu = torch.device("cpu")
    assert len(steps) == len(build_loader(config, "train", device=cpu)) + len(build_loader(config, "val", device=cpu))
