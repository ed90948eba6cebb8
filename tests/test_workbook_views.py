"""The workbook's dataset views and model comparison, called in-process on tiny generated data.

Pins ``nmeplib.workbook.views`` (split sizes, image reads in memory and from HDF5, channel
statistics, class counts, example picks and grids, class-count and augmentation plots, the
ipywidgets explorer) and ``nmeplib.workbook.compare`` (model tables, Flatten widths, the
comparison plot, the memory note) with exact values.
"""
from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nmeplib.models
import nmeplib.runtime
from nmeplib.data.augment import Augment
from nmeplib.data.build import ImageSplit
from nmeplib.data.hdf5 import write_hdf5
from nmeplib.models import build_model, count_parameters, model_summary
from nmeplib.workbook.compare import flatten_width, memory_note, model_table, plot_model_comparison
from nmeplib.workbook.views import (augment_examples, channel_stats, class_counts, example_grid, examples_per_class,
                                    image_explorer, plot_augment, plot_class_counts, read_images, split_sizes,
                                    stats_table)

from helpers import forbid_default_device

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def make_split(labels, size=(8, 8), num_classes=3, name="digits", split="val", seed=0, images=None) -> ImageSplit:
    """An in-memory split with ``labels`` (-1: hidden), classes ``class0``.. and random uint8 images."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if images is None:
        images = torch.randint(0, 256, (len(labels), 3, *size), generator=torch.Generator().manual_seed(seed),
                               dtype=torch.uint8)
    return ImageSplit(name, split, labels, [f"class{c}" for c in range(num_classes)], MEAN, STD, images=images)


def direct_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of uint8 images on the 0-1 scale, by torch directly."""
    x = images.double() / 255
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3), unbiased=False).tolist()


@pytest.fixture
def hdf5_split(tmp_path):
    """A 7-image 'val' split stored in an HDF5 file (train holds other images), and its images."""
    rng = np.random.default_rng(1)
    val = rng.integers(0, 256, (7, 3, 8, 8), dtype=np.uint8)
    train = rng.integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    path = write_hdf5(tmp_path / "data.h5", {"train": (train, np.zeros(5, np.int64)), "val": (val, labels)},
                      class_names=["a", "b", "c"], chunk=2)
    split = ImageSplit("h5", "val", torch.from_numpy(labels), ["a", "b", "c"], MEAN, STD, path=str(path))
    return split, torch.from_numpy(val)


# --- split_sizes and read_images ---------------------------------------------------------------


def test_split_sizes_rows_name_counts_shape_and_classes():
    labelled = make_split([0, 1, 2, 1, 0], size=(6, 4), num_classes=4)
    partly_hidden = make_split([0, -1, 2, -1, 1, -1], size=(6, 4), num_classes=4)
    empty = ImageSplit("digits", "test", torch.zeros(0, dtype=torch.int64), ["a", "b"], MEAN, STD,
                       images=torch.zeros(0, 3, 6, 4, dtype=torch.uint8))
    rows = split_sizes({"train": labelled, "test": partly_hidden, "empty": empty})
    assert rows == [
        {"split": "train", "images": 5, "labelled": 5, "image_shape": "3x6x4", "classes": 4},
        {"split": "test", "images": 6, "labelled": 3, "image_shape": "3x6x4", "classes": 4},
        {"split": "empty", "images": 0, "labelled": 0, "image_shape": "", "classes": 2},
    ]


def test_split_sizes_reads_an_hdf5_split(hdf5_split):
    split, _ = hdf5_split
    assert split_sizes({"val": split}) == [
        {"split": "val", "images": 7, "labelled": 7, "image_shape": "3x8x8", "classes": 3}]


def test_read_images_slices_in_memory_split():
    split = make_split(range(6), num_classes=6)
    assert torch.equal(read_images(split), split.images)
    assert torch.equal(read_images(split, 2, 5), split.images[2:5])
    assert torch.equal(read_images(split, 4, 100), split.images[4:])
    assert read_images(split, 3, 3).shape == (0, 3, 8, 8)


def test_read_images_slices_hdf5_split(hdf5_split):
    split, images = hdf5_split
    assert split.images is None
    whole = read_images(split)
    assert whole.dtype == torch.uint8 and torch.equal(whole, images)
    assert torch.equal(read_images(split, 1, 4), images[1:4])
    assert torch.equal(read_images(split, 5, 100), images[5:])


# --- channel_stats and stats_table -----------------------------------------------------------


def hand_split() -> ImageSplit:
    """4 images 3x2x2: R alternates 0/255 per image (mean .5, std .5), G is 51 everywhere (.2, 0),
    B alternates 0/102 per pixel column (.2, .2)."""
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[1::2, 0] = 255
    images[:, 1] = 51
    images[:, 2, :, 1] = 102
    return make_split([0, 1, 2, 0], images=images)


@pytest.mark.parametrize("chunk", [1024, 3, 1])
def test_channel_stats_exact_on_chosen_pixels(chunk):
    mean, std = channel_stats(hand_split(), chunk=chunk)
    assert mean == pytest.approx((0.5, 0.2, 0.2), abs=1e-12)
    assert std == pytest.approx((0.5, 0.0, 0.2), abs=1e-12)


@pytest.mark.parametrize("chunk", [1024, 4, 3, 2])
def test_channel_stats_matches_torch_over_several_chunks(chunk):
    split = make_split([0, 1, 2] * 3, size=(5, 5), seed=3)
    mean, std = channel_stats(split, chunk=chunk)
    want_mean, want_std = direct_stats(split.images)
    assert mean == pytest.approx(want_mean, abs=1e-12) and std == pytest.approx(want_std, abs=1e-12)


@pytest.mark.parametrize("max_images,chunk", [(5, 2), (5, 1024), (2, 3), (100, 4)])
def test_channel_stats_uses_only_the_first_max_images(max_images, chunk):
    split = make_split([0, 1, 2] * 3, size=(5, 5), seed=4)
    mean, std = channel_stats(split, max_images=max_images, chunk=chunk)
    want_mean, want_std = direct_stats(split.images[:max_images])
    assert mean == pytest.approx(want_mean, abs=1e-12) and std == pytest.approx(want_std, abs=1e-12)


def test_channel_stats_of_hdf5_split_matches_torch(hdf5_split):
    split, images = hdf5_split
    mean, std = channel_stats(split, max_images=6, chunk=4)
    want_mean, want_std = direct_stats(images[:6])
    assert mean == pytest.approx(want_mean, abs=1e-12) and std == pytest.approx(want_std, abs=1e-12)


def test_channel_stats_of_an_empty_split_is_zero():
    empty = make_split([], images=torch.zeros(0, 3, 4, 4, dtype=torch.uint8))
    assert channel_stats(empty) == ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))


def test_stats_table_rows_per_channel_with_data_and_used_constants():
    split = hand_split()
    rows = stats_table(split)
    assert [list(r) for r in rows] == [["channel", "mean (data)", "mean (used)", "std (data)", "std (used)"]] * 3
    assert [r["channel"] for r in rows] == ["R", "G", "B"]
    assert [r["mean (used)"] for r in rows] == list(MEAN)
    assert [r["std (used)"] for r in rows] == list(STD)
    assert [r["mean (data)"] for r in rows] == pytest.approx([0.5, 0.2, 0.2], abs=1e-12)
    assert [r["std (data)"] for r in rows] == pytest.approx([0.5, 0.0, 0.2], abs=1e-12)


def test_stats_table_passes_max_images_on():
    split = make_split([0, 1, 2] * 3, size=(5, 5), seed=5)
    rows = stats_table(split, max_images=2)
    mean, std = channel_stats(split, max_images=2)
    assert [r["mean (data)"] for r in rows] == list(mean)
    assert [r["std (data)"] for r in rows] == list(std)
    assert list(mean) != pytest.approx(channel_stats(split)[0], abs=1e-6)


# --- class_counts and examples_per_class -----------------------------------------------------


def test_class_counts_ignores_hidden_labels_and_counts_every_class():
    split = make_split([2, 0, -1, 2, -1, 1, 2], num_classes=5)
    assert class_counts(split) == [1, 1, 3, 0, 0]


def test_class_counts_of_an_unlabelled_split_is_zeros():
    assert class_counts(make_split([-1, -1, -1], num_classes=3)) == [0, 0, 0]


SHUFFLED = [2, 0, 1, 1, 2, 0, 0, 2, 1, 1, 0, 2, 2, 0, 1, 1, 0, 2]   # 6 of each of 3 classes, mixed


def test_examples_per_class_picks_each_class_in_order():
    split = make_split(SHUFFLED, num_classes=3)
    picks = examples_per_class(split, per_class=2)
    assert picks.dtype == torch.int64 and len(picks) == 6
    assert split.labels[picks].tolist() == [0, 0, 1, 1, 2, 2]
    assert len(set(picks.tolist())) == 6


def test_examples_per_class_stops_at_max_classes():
    split = make_split(SHUFFLED, num_classes=3)
    assert split.labels[examples_per_class(split, per_class=3, max_classes=2)].tolist() == [0, 0, 0, 1, 1, 1]
    assert split.labels[examples_per_class(split, max_classes=10)].tolist() == [0, 1, 2]


def test_examples_per_class_is_seeded():
    split = make_split(SHUFFLED, num_classes=3)
    first = examples_per_class(split, per_class=2, seed=7)
    assert torch.equal(first, examples_per_class(split, per_class=2, seed=7))
    assert not torch.equal(first, examples_per_class(split, per_class=2, seed=8))
    gen = torch.Generator().manual_seed(7)
    expected = []
    for c in range(3):
        members = torch.nonzero(split.labels == c).flatten()
        expected += members[torch.randperm(len(members), generator=gen)[:2]].tolist()
    assert first.tolist() == expected


def test_examples_per_class_of_an_unlabelled_split_is_random_indices():
    split = make_split([-1] * 20, num_classes=4)
    picks = examples_per_class(split, per_class=2, seed=3)
    assert picks.tolist() == torch.randperm(20, generator=torch.Generator().manual_seed(3))[:8].tolist()
    assert len(set(picks.tolist())) == 8
    assert len(examples_per_class(split, per_class=3, max_classes=2)) == 6


# --- example_grid and plot_class_counts ------------------------------------------------------


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_example_grid_titles_are_class_names_in_class_order(tmp_path):
    split = make_split(SHUFFLED, num_classes=3)
    fig = example_grid(split, per_class=2, ncols=4, path=tmp_path / "grid" / "g.png", title="examples")
    assert titles(fig) == ["class0", "class0", "class1", "class1", "class2", "class2"]
    assert fig._suptitle.get_text() == "examples"
    assert (tmp_path / "grid" / "g.png").stat().st_size > 0


def test_example_grid_shows_hidden_labels():
    split = make_split([-1] * 12, num_classes=3, split="test")
    fig = example_grid(split, per_class=2)
    assert titles(fig) == ["(hidden)"] * 6


def labels_only_split(counts: list[int], name="medium", split="train") -> ImageSplit:
    """A split whose ``counts[c]`` labels are class ``c`` (no images: class counts need none)."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return ImageSplit(name, split, labels, [f"c{c}" for c in range(len(counts))], MEAN, STD,
                      images=torch.zeros(len(labels), 3, 1, 1, dtype=torch.uint8))


def test_plot_class_counts_title_bars_and_class_names(tmp_path):
    counts = [1500, 1000, 1234]
    fig = plot_class_counts(labels_only_split(counts), path=tmp_path / "out" / "counts.png")
    ax = fig.axes[0]
    assert ax.get_title() == "medium train: 3,734 images, 1,000-1,500 per class"
    assert [p.get_height() for p in ax.patches] == counts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c0", "c1", "c2"]
    assert ax.get_xlabel() == "" and ax.get_ylabel() == "images"
    assert (tmp_path / "out" / "counts.png").stat().st_size > 0


def test_plot_class_counts_names_up_to_thirty_classes():
    ax = plot_class_counts(labels_only_split([2] * 30)).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"c{c}" for c in range(30)]
    assert ax.get_xlabel() == ""


def test_plot_class_counts_uses_class_index_beyond_thirty_classes():
    counts = [1 + c % 4 for c in range(31)]
    ax = plot_class_counts(labels_only_split(counts), title="many").axes[0]
    assert ax.get_xlabel() == "class index"
    assert "c0" not in [t.get_text() for t in ax.get_xticklabels()]
    assert ax.get_title() == "many"
    assert [p.get_height() for p in ax.patches] == counts


def test_plot_class_counts_ignores_hidden_labels_in_title():
    split = make_split([0, -1, 1, 1, -1], num_classes=2)
    assert plot_class_counts(split).axes[0].get_title() == "digits val: 3 images, 1-2 per class"


# --- augment_examples and plot_augment -------------------------------------------------------


def augment_split() -> ImageSplit:
    """6 images 3x8x8 holding both 0 and 255 pixels, classes 0, 1, 2, 0, 1, -1."""
    split = make_split([0, 1, 2, 0, 1, -1], seed=6)
    split.images[:, :, 0, 0] = 0
    split.images[:, :, 0, 1] = 255
    return split


def test_augment_examples_shape_range_and_untransformed_first_image():
    split = augment_split()
    images = augment_examples(split, 2, "crop+flip+jitter", 16, n=4, seed=0)
    assert images.shape == (5, 3, 16, 16) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    resized = F.interpolate(split.images[2:3].float(), size=(16, 16), mode="bilinear", align_corners=False) / 255
    torch.testing.assert_close(images[0], resized[0].clamp(0, 1), atol=1e-5, rtol=0)
    plain = Augment("none", MEAN, STD, 16, train=False)(split.images[2:3])
    undone = plain * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(images[0], undone[0].clamp(0, 1), atol=1e-6, rtol=0)


def test_augment_examples_at_the_stored_size_gives_the_image_back():
    split = augment_split()
    images = augment_examples(split, 4, "erase", 8, n=2)
    torch.testing.assert_close(images[0], split.images[4].float() / 255, atol=1e-6, rtol=0)
    assert images.shape == (3, 3, 8, 8)


def test_augment_examples_clamps_round_off_to_the_unit_range():
    images = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    images[..., 2:] = 255
    split = ImageSplit("digits", "val", torch.tensor([0]), ["a"], (0.4914, 0.4822, 0.4465), (0.229, 0.225, 0.1),
                       images=images)
    shown = augment_examples(split, 0, "none", 4, n=2)
    assert float(shown.min()) >= 0.0 and float(shown.max()) <= 1.0
    torch.testing.assert_close(shown, (images.expand(3, -1, -1, -1) // 255).float(), atol=1e-6, rtol=0)


def test_augment_examples_without_augmentation_repeats_the_image():
    images = augment_examples(augment_split(), 1, "none", 12, n=3)
    for drawn in images[1:]:
        torch.testing.assert_close(drawn, images[0], atol=1e-6, rtol=0)


def test_augment_examples_is_seeded_and_random_across_draws_and_seeds():
    split = augment_split()
    first = augment_examples(split, 0, "crop+flip+jitter", 8, n=3, seed=5)
    assert torch.equal(first, augment_examples(split, 0, "crop+flip+jitter", 8, n=3, seed=5))
    other = augment_examples(split, 0, "crop+flip+jitter", 8, n=3, seed=6)
    assert torch.equal(first[0], other[0])
    assert not torch.allclose(first[1:], other[1:])
    assert not torch.allclose(first[1], first[2])
    assert not torch.allclose(first[1], first[0])


def test_plot_augment_title_and_panels_name_the_class(tmp_path):
    split = augment_split()
    fig = plot_augment(split, 3, "flip", 16, n=2, path=tmp_path / "aug" / "a.png")
    assert fig._suptitle.get_text() == ("digits val[3] (class0) at 16 px: before and after the training "
                                        "transforms")
    assert titles(fig) == ["before", "flip #1", "flip #2"]
    shown = augment_examples(split, 3, "flip", 16, n=2)
    for ax, image in zip(fig.axes, shown):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), image.permute(1, 2, 0).numpy(), atol=1e-6)
    assert (tmp_path / "aug" / "a.png").stat().st_size > 0
    assert "(class2)" in plot_augment(split, 2, "flip", 8, n=1)._suptitle.get_text()


def test_plot_augment_draws_with_its_seed_in_one_row():
    split = augment_split()
    fig = plot_augment(split, 3, "flip", 8, n=11, seed=7)
    for ax, image in zip(fig.axes, augment_examples(split, 3, "flip", 8, n=11, seed=7)):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), image.permute(1, 2, 0).numpy(), atol=1e-6)
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes if ax.images}) == 1


def test_split_sizes_of_a_one_image_split():
    from helpers import image_split

    [row] = split_sizes({"val": image_split(1, per_class=1)})
    assert row == {"split": "val", "images": 1, "labelled": 1, "image_shape": "3x8x8", "classes": 1}


def test_plot_augment_hides_a_hidden_label():
    fig = plot_augment(augment_split(), 5, "crop", 8, n=1)
    assert fig._suptitle.get_text().startswith("digits val[5] (label hidden) at 8 px")


# --- image_explorer --------------------------------------------------------------------------


def explorer_parts(widget):
    (split_box, class_box), index = widget.children[0].children, widget.children[1]
    return split_box, class_box, index


def test_image_explorer_is_none_without_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    assert image_explorer({"val": make_split([0, 1], num_classes=2)}) is None


def test_image_explorer_classes_restrict_the_index_slider():
    pytest.importorskip("ipywidgets")
    labelled = make_split([1, 0, 1, 1, 0, 1, 1, 0, 0, 1], num_classes=3)   # 4 of class 0, 6 of class 1, none of 2
    widget = image_explorer({"val": labelled})
    import ipywidgets

    assert isinstance(widget, ipywidgets.VBox)
    split_box, class_box, index = explorer_parts(widget)
    assert list(split_box.options) == ["val"]
    assert list(class_box.options) == [("all", -1), ("0: class0", 0), ("1: class1", 1), ("2: class2", 2)]
    assert class_box.value == -1 and index.max == 9
    class_box.value = 1
    assert index.max == 5
    class_box.value = 0
    assert index.max == 3
    class_box.value = 2
    assert index.max == 0
    class_box.value = -1
    assert index.max == 9


def test_image_explorer_unlabelled_split_offers_only_all():
    pytest.importorskip("ipywidgets")
    labelled = make_split([1, 0, 1], num_classes=2)
    hidden = make_split([-1] * 5, num_classes=2, split="test")
    widget = image_explorer({"val": labelled, "test": hidden})
    split_box, class_box, index = explorer_parts(widget)
    class_box.value = 0
    assert index.max == 0
    split_box.value = "test"
    assert list(class_box.options) == [("all", -1)]
    assert class_box.value == -1 and index.max == 4 and index.value == 0
    split_box.value = "val"
    assert [label for label, _ in class_box.options] == ["all", "0: class0", "1: class1"]
    assert index.max == 2


# --- compare: model_table, flatten_width -----------------------------------------------------


def test_model_table_lenet_at_32_px():
    rows, summaries = model_table(["lenet"], {"lenet": 32})
    model = build_model("lenet", 10)
    assert rows == [{"model": "lenet", "input": "3x32x32", "params": count_parameters(model),
                     "params_M": pytest.approx(count_parameters(model) / 1e6), "layers": 5, "flatten": 576,
                     "output": "10"}]
    assert rows[0]["params"] == 83126
    assert list(summaries) == ["lenet"]
    assert summaries["lenet"] == model_summary(model, (3, 32, 32))


def test_model_table_uses_each_models_size_and_the_class_count():
    rows, summaries = model_table(["lenet", "resnet18"], {"resnet18": 48, "lenet": 32}, num_classes=7)
    lenet, resnet = rows
    assert (lenet["model"], lenet["input"], lenet["output"], lenet["flatten"]) == ("lenet", "3x32x32", "7", 576)
    assert lenet["params"] == count_parameters(build_model("lenet", 7))
    assert (resnet["model"], resnet["input"], resnet["output"]) == ("resnet18", "3x48x48", "7")
    assert resnet["flatten"] == 512 and resnet["layers"] == 21
    assert resnet["params"] == count_parameters(build_model("resnet18", 7))
    assert resnet["params_M"] == pytest.approx(resnet["params"] / 1e6)
    assert list(summaries) == ["lenet", "resnet18"]
    assert summaries["resnet18"][0]["output_shape"] == (1, 64, 48, 48)


def test_model_table_model_without_flatten_has_no_flatten_width(monkeypatch):
    def pooled(name, num_classes):
        return nn.Sequential(nn.Conv2d(3, num_classes, 3, padding=1), nn.AdaptiveAvgPool2d(1))
    monkeypatch.setattr(nmeplib.models, "build_model", pooled)
    rows, _ = model_table(["pooled"], {"pooled": 16}, num_classes=4)
    assert rows == [{"model": "pooled", "input": "3x16x16", "params": 3 * 4 * 9 + 4, "params_M": pytest.approx(1.12e-4),
                     "layers": 1, "flatten": None, "output": "4x1x1"}]


def test_flatten_width_of_lenet_summary():
    assert flatten_width(model_summary(build_model("lenet", 10), (3, 32, 32))) == (576, (16, 6, 6))


def test_flatten_width_is_per_image_for_a_batch_summary():
    rows = model_summary(build_model("lenet", 10), (3, 32, 32), batch_size=2)
    assert flatten_width(rows) == (576, (16, 6, 6))


def test_flatten_width_takes_the_first_flatten():
    rows = [{"type": "Conv2d", "output_shape": (1, 2, 3, 4)}, {"type": "Flatten", "output_shape": (1, 24)},
            {"type": "Linear", "output_shape": (1, 5)}, {"type": "Flatten", "output_shape": (1, 5)}]
    assert flatten_width(rows) == (24, (2, 3, 4))


def test_flatten_width_first_row_flatten_has_empty_shape_before():
    assert flatten_width([{"type": "Flatten", "output_shape": (1, 3, 7)}]) == (21, ())


def test_flatten_width_without_flatten_raises():
    with pytest.raises(ValueError, match="no Flatten"):
        flatten_width([{"type": "Conv2d", "output_shape": (1, 2, 3, 3)}, {"type": "Linear", "output_shape": (1, 5)}])


# --- compare: plot_model_comparison, memory_note ---------------------------------------------


def use_device(monkeypatch, kind: str) -> None:
    monkeypatch.setattr(nmeplib.runtime, "default_device", lambda: torch.device(kind))


COMPARED = [{"model": "lenet", "params_M": 0.08, "step_ms": 3.5, "peak_mem_mb": 300.0},
            {"model": "alexnet", "params_M": 2.5, "step_ms": 12.0, "peak_mem_mb": 512.0},
            {"model": "resnet18", "params_M": 11.2, "step_ms": 40.0, "peak_mem_mb": 900.0}]


def test_plot_model_comparison_panels_bars_and_file(monkeypatch, tmp_path):
    use_device(monkeypatch, "cpu")
    fig = plot_model_comparison(COMPARED, path=tmp_path / "cmp" / "models.png", title="three models")
    assert [ax.get_title() for ax in fig.axes] == ["parameters (millions)", "ms per training step",
                                                   "process peak RSS (MB)"]
    for ax, key in zip(fig.axes, ("params_M", "step_ms", "peak_mem_mb")):
        assert [p.get_height() for p in ax.patches] == [r[key] for r in COMPARED]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["lenet", "alexnet", "resnet18"]
    assert fig._suptitle.get_text() == "three models"
    assert (tmp_path / "cmp" / "models.png").stat().st_size > 0


def test_plot_model_comparison_only_keys_every_row_has(monkeypatch):
    use_device(monkeypatch, "cpu")
    rows = [dict(COMPARED[0]), dict(COMPARED[1], peak_mem_mb=None), {"model": "resnet18", "params_M": 11.2,
                                                                      "step_ms": 40.0}]
    fig = plot_model_comparison(rows)
    assert [ax.get_title() for ax in fig.axes] == ["parameters (millions)", "ms per training step"]
    assert [p.get_height() for p in fig.axes[1].patches] == [3.5, 12.0, 40.0]
    assert fig._suptitle is None
    only_params = plot_model_comparison([{"model": m, "params_M": p} for m, p in (("a", 1.0), ("b", 2.0))])
    assert [ax.get_title() for ax in only_params.axes] == ["parameters (millions)"]
    assert [p.get_height() for p in only_params.axes[0].patches] == [1.0, 2.0]


def test_plot_model_comparison_names_cuda_memory_on_a_gpu_machine(monkeypatch):
    use_device(monkeypatch, "cuda")
    fig = plot_model_comparison(COMPARED)
    assert fig.axes[2].get_title() == "CUDA peak memory (MB)"


def test_memory_note_on_cpu(monkeypatch):
    use_device(monkeypatch, "cpu")
    note = memory_note()
    assert note.startswith("CPU: process peak RSS") and "never goes down" in note
    forbid_default_device(monkeypatch, nmeplib.runtime)
    assert memory_note(torch.device("cpu")) == note
