"""The fast loaders train as well as the plain per-image recipe they replace (digits)."""
from __future__ import annotations

from statistics import mean

from helpers import recipe_accuracy

from nmeplib.config import load_config


def test_same_recipe_same_accuracy_on_digits():
    # Course jitter + flip, 16 epochs. Over seeds 0-3 the two pipelines were 0.4-1.5 points
    # apart per seed (93-95 % each); two seeds each must agree within 2.5 points on average.
    plain, ours = [], []
    for seed in (0, 1):
        config = load_config("digits_lenet", ["DATA.AUGMENT=course", "TRAIN.EPOCHS=16", "TRAIN.LR=3e-3",
                                              f"SEED={seed}"])
        plain.append(recipe_accuracy(config, plain=True))
        ours.append(recipe_accuracy(config, plain=False))
    assert min(plain + ours) > 88.0, (plain, ours)
    assert abs(mean(plain) - mean(ours)) < 2.5, (plain, ours)
