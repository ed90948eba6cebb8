"""The learning rate every optimizer step actually uses, for every scheduler."""
import math

import pytest
import torch

import nmeplib.engine as engine
from nmeplib.config import load_config
from nmeplib.optim import PLATEAU_PATIENCE, Schedule

STEPS = 5  # steps per epoch in the unit tests


def schedule(*overrides, steps=STEPS):
    config = load_config(None, ["TRAIN.LR=0.1", *overrides])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=123.0)
    return Schedule(config, optimizer, steps), optimizer


def rates(sched, optimizer, epochs, val_losses=None):
    """The rate of each optimizer step over ``epochs`` epochs, driven as ``fit`` drives it."""
    used = []
    for epoch in range(epochs):
        for _ in range(sched.steps_per_epoch):
            used.append(optimizer.param_groups[0]["lr"])
            sched.step_batch()
        sched.step_epoch(val_losses[epoch] if val_losses else 1.0)
    return used


def test_cosine_with_warmup_and_floor():
    sched, opt = schedule("TRAIN.SCHEDULER=cosine", "TRAIN.EPOCHS=4", "TRAIN.WARMUP_EPOCHS=1", "TRAIN.MIN_LR=0.01")
    used = rates(sched, opt, 4)
    warm = [0.1 * (s + 1) / STEPS for s in range(STEPS)]
    decay = [0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * s / 15)) for s in range(15)]
    assert used == pytest.approx(warm + decay)
    assert used[STEPS] == pytest.approx(0.1) and min(used[STEPS:]) > 0.01  # peak after warm-up, floor not passed
    assert sched.rate(10_000) == pytest.approx(0.01)


def test_warmup_starts_from_warmup_lr():
    sched, opt = schedule("TRAIN.SCHEDULER=constant", "TRAIN.EPOCHS=2", "TRAIN.WARMUP_EPOCHS=1",
                          "TRAIN.WARMUP_LR=0.01")
    used = rates(sched, opt, 2)
    assert used == pytest.approx([0.01 + 0.09 * (s + 1) / STEPS for s in range(STEPS)] + [0.1] * STEPS)


def test_step_decay_holds_for_the_whole_epoch():
    sched, opt = schedule("TRAIN.SCHEDULER=step", "TRAIN.EPOCHS=5", "TRAIN.DECAY_EPOCHS=2", "TRAIN.DECAY_RATE=0.5")
    used = rates(sched, opt, 5)
    expected = [0.1 * 0.5 ** (epoch // 2) for epoch in range(5) for _ in range(STEPS)]
    assert used == pytest.approx(expected)


def test_constant_after_warmup():
    sched, opt = schedule("TRAIN.SCHEDULER=constant", "TRAIN.EPOCHS=3", "TRAIN.WARMUP_EPOCHS=1")
    used = rates(sched, opt, 3)
    assert used == pytest.approx([0.1 * (s + 1) / STEPS for s in range(STEPS)] + [0.1] * 2 * STEPS)


def test_plateau_fires_after_its_patience_and_stays():
    sched, opt = schedule("TRAIN.SCHEDULER=plateau", "TRAIN.EPOCHS=9", "TRAIN.DECAY_RATE=0.1", "TRAIN.MIN_LR=0.0005")
    # improves, then stalls: the rate drops once the stall outlasts the patience, then again
    losses = [1.0] + [1.0] * (PLATEAU_PATIENCE + 1) + [0.5] + [0.5] * (PLATEAU_PATIENCE + 1) + [0.5]
    used = rates(sched, opt, len(losses), losses)
    per_epoch = [used[e * STEPS:(e + 1) * STEPS] for e in range(len(losses))]
    assert all(len(set(epoch)) == 1 for epoch in per_epoch)  # one rate for a whole epoch
    first_drop = PLATEAU_PATIENCE + 2  # the epoch after the (patience + 1)-th epoch without improvement
    expected = [0.1] * first_drop + [0.01] * (PLATEAU_PATIENCE + 2) + [0.001]
    assert [epoch[0] for epoch in per_epoch][:len(expected)] == pytest.approx(expected)
    sched.plateau["scale"] = 1e-9
    sched.step_epoch(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0005)  # MIN_LR is the floor


def test_plateau_counts_a_nan_loss_and_a_too_small_fall_as_bad_epochs():
    """An improvement is a fall of more than 0.01% (strictly, as torch's ReduceLROnPlateau); a NaN
    validation loss (an empty split) is never one, from the first epoch on."""
    sched, _ = schedule("TRAIN.SCHEDULER=plateau")
    assert sched.state_dict() == {"step": 0, "plateau": {"scale": 1.0, "best": math.inf, "bad_epochs": 0}}
    sched.step_epoch(math.nan)
    assert sched.plateau == {"scale": 1.0, "best": math.inf, "bad_epochs": 1}
    sched.step_epoch(2.0)
    sched.step_epoch(2.0 * (1 - 1e-4))
    assert sched.plateau == {"scale": 1.0, "best": 2.0, "bad_epochs": 1}
    sched.step_epoch(2.0 * (1 - 1e-4) - 1e-9)
    assert sched.plateau["bad_epochs"] == 0 and sched.plateau["best"] < 2.0


def test_a_stall_that_goes_on_drops_the_rate_after_each_further_patience():
    sched, opt = schedule("TRAIN.SCHEDULER=plateau", "TRAIN.DECAY_RATE=0.5", "TRAIN.MIN_LR=0")
    epochs = 1 + 3 * (PLATEAU_PATIENCE + 1)
    used = rates(sched, opt, epochs, [1.0] * epochs)[::STEPS]   # the first epoch sets the best loss
    drops = [epoch for epoch in range(1, epochs) if used[epoch] < used[epoch - 1]]
    assert drops == [1 + (PLATEAU_PATIENCE + 1), 1 + 2 * (PLATEAU_PATIENCE + 1)]   # the third comes after the end
    assert used[-1] == pytest.approx(0.1 * 0.5 ** 2)


def test_state_dict_round_trip_continues_the_same_rates():
    make = lambda: schedule("TRAIN.SCHEDULER=plateau", "TRAIN.EPOCHS=8", "TRAIN.WARMUP_EPOCHS=1")
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    whole, opt = make()
    expected = rates(whole, opt, 8, losses)
    first, opt1 = make()
    head = rates(first, opt1, 4, losses[:4])
    second, opt2 = make()
    second.load_state_dict(first.state_dict())
    assert head + rates(second, opt2, 4, losses[4:]) == expected


def record_rates(monkeypatch):
    """Patch ``fit``'s optimizer so that every step records the rate it used."""
    used = []
    real = engine.build_optimizer

    def recording(config, model):
        optimizer = real(config, model)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
        return optimizer
    monkeypatch.setattr(engine, "build_optimizer", recording)
    return used


@pytest.mark.parametrize("scheduler", ["step", "plateau", "constant", "cosine"])
def test_fit_uses_the_schedule_at_every_step(digits_config, monkeypatch, scheduler):
    used = record_rates(monkeypatch)
    config = digits_config(f"TRAIN.SCHEDULER={scheduler}", "TRAIN.EPOCHS=3", "TRAIN.DECAY_EPOCHS=1",
                           "TRAIN.WARMUP_EPOCHS=1", "TRAIN.LR=0.002")
    history = engine.fit(config)
    steps = len(used) // 3
    reference, opt = schedule(f"TRAIN.SCHEDULER={scheduler}", "TRAIN.EPOCHS=3", "TRAIN.DECAY_EPOCHS=1",
                              "TRAIN.WARMUP_EPOCHS=1", "TRAIN.LR=0.002", steps=steps)
    expected = rates(reference, opt, 3, [row["val_loss"] for row in history])
    assert used == pytest.approx(expected)
    assert [r["lr"] for r in history] == pytest.approx(expected[::steps])
    if scheduler == "step":
        assert used[steps:] == pytest.approx([0.0002] * steps + [0.00002] * steps)  # the whole epoch decayed


def test_rates_across_a_resume_equal_an_uninterrupted_run(digits_config, monkeypatch, tmp_path):
    overrides = ("TRAIN.SCHEDULER=step", "TRAIN.DECAY_EPOCHS=1", "TRAIN.WARMUP_EPOCHS=1", "TRAIN.EPOCHS=3")
    whole = record_rates(monkeypatch)
    engine.fit(digits_config(*overrides, f"OUTPUT={tmp_path / 'whole'}"))
    expected = list(whole)
    whole.clear()

    def stop(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt
    config = digits_config(*overrides, f"OUTPUT={tmp_path / 'split'}")
    with pytest.raises(KeyboardInterrupt):
        engine.fit(config, callbacks=[stop])
    engine.fit(config, resume=True)
    assert whole == expected


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "rmsprop"])
def test_every_parameter_is_optimized_once_with_decay_on_weights_only(name):
    from nmeplib.models import build_model
    from nmeplib.optim import build_optimizer

    model = build_model("resnet18", 10)  # conv (4-D), linear (2-D) and norm/bias (1-D) parameters
    optimizer = build_optimizer(load_config(None, [f"TRAIN.OPTIMIZER={name}", "TRAIN.WEIGHT_DECAY=0.05"]), model)
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    for group in optimizer.param_groups:
        wanted = 0.05 if group["params"] and group["params"][0].ndim > 1 else 0.0
        assert group["weight_decay"] == wanted
        assert all((p.ndim > 1) == (wanted > 0) for p in group["params"])
