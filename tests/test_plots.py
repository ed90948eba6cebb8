"""Plots render to readable PNGs and never pile up figures outside a notebook."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from nmeplib.plots import LivePlot, image_grid, plot_history, plot_throughput


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def history(n, offset=0.0):
    return [{"epoch": e, "train_loss": 1 / e + offset, "val_loss": 1.2 / e + offset,
             "train_acc": 50 + 5 * e, "val_acc": 48 + 5 * e - offset} for e in range(1, n + 1)]


def assert_png(path):
    assert path.stat().st_size > 0
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 10 and image.shape[1] > 10


def test_plot_history_single_run(tmp_path):
    fig = plot_history(history(4), tmp_path / "h.png", title="one run")
    assert_png(tmp_path / "h.png")
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train", "val"]
    assert list(acc_ax.lines[1].get_ydata()) == [r["val_acc"] for r in history(4)]


def test_plot_history_overlays_runs(tmp_path):
    fig = plot_history({"lenet": history(3), "resnet": history(5, 0.1)}, tmp_path / "o.png")
    assert_png(tmp_path / "o.png")
    for ax in fig.axes:
        assert len(ax.lines) == 4  # two runs x (train, val)
        styles = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in ax.lines}
        assert styles["lenet train"][0] == styles["lenet val"][0] != styles["resnet val"][0]
        assert styles["lenet train"][1] == "--" and styles["lenet val"][1] == "-"


@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_image_grid_marks_wrong_predictions(tmp_path, dtype):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    if dtype == "float":
        images = images / 255.0
    names = ["cat", "dog", "ship"]
    fig = image_grid(images, [0, 1, 2, 0, 1, 2], names, preds=[0, 2, 2, 1, 1, 2], ncols=4,
                     path=tmp_path / "g.png", title="predictions")
    assert_png(tmp_path / "g.png")
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    wrong = [t.get_text() for t in titles if t.get_color() == "red"]
    assert wrong == ["✗ dog / ship", "✗ cat / dog"]
    assert "ship / ship" in [t.get_text() for t in titles]


def test_image_grid_without_predictions_accepts_tensors_and_grayscale():
    torch = pytest.importorskip("torch")
    fig = image_grid(torch.zeros(3, 1, 5, 5, dtype=torch.uint8), torch.tensor([2, 0, 1]), ["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes] == ["c", "a", "b"]


def test_plot_throughput_marks_oom(tmp_path):
    rows = [{"batch_size": b, "img_per_s": 100.0 * b ** 0.5, "peak_mem_mb": 10.0 * b, "oom": False}
            for b in (4, 8, 16, 32)] + [{"batch_size": 64, "img_per_s": None, "peak_mem_mb": None, "oom": True}]
    fig = plot_throughput(rows, tmp_path / "t.png")
    assert_png(tmp_path / "t.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    texts = [t.get_text() for t in ax.texts]
    assert "OOM at 64" in texts and "largest that fits: 32" in texts
    oom = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(oom) == 1 and oom[0].get_color() == "red" and list(oom[0].get_xdata()) == [64]


def test_plot_throughput_with_oom_batch_size_marker():
    fig = plot_throughput([{"batch_size": 2, "img_per_s": 5.0}, {"oom_batch_size": 4}])
    assert "OOM at 4" in [t.get_text() for t in fig.axes[0].texts]


def test_liveplot_outside_kernel_keeps_history_only(tmp_path):
    before = plt.get_fignums()
    live = LivePlot(title="live")
    for row in history(3):
        live(row)
    assert plt.get_fignums() == before
    assert live.rows == history(3)
    live.save(tmp_path / "live.png")
    assert_png(tmp_path / "live.png")
    assert plt.get_fignums() == before


def test_history_axes_say_what_they_show_and_a_one_epoch_run_is_a_visible_point():
    fig = plot_history(history(1))
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("epoch", "Loss")
    assert (acc_ax.get_xlabel(), acc_ax.get_ylabel()) == ("epoch", "Accuracy (%)")
    assert {line.get_marker() for ax in fig.axes for line in ax.lines} == {"."}   # a line of one point shows


def test_throughput_figure_names_its_curves_and_axes_and_puts_the_oom_mark_at_the_last_fit():
    rows = [{"batch_size": b, "img_per_s": 10.0 * b, "peak_mem_mb": 2.0 * b} for b in (4, 8)]
    ax = plot_throughput(rows, oom_batch_size=16).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["images / s", "out of memory", "peak memory"]
    assert ax.get_ylabel() == "images / s" and ax.get_xlabel() == "batch size"
    assert ax.figure.axes[1].get_ylabel() == "peak memory (MB)"
    oom = next(line for line in ax.lines if line.get_marker() == "x")
    assert list(oom.get_ydata()) == [80.0]
    label = next(t for t in ax.texts if t.get_text() == "OOM at 16")
    assert label.anncoords == "offset points" and label.xyann == (0, 12)   # just above the mark
    assert ax.margins() == (0.1, 0.15)                                       # room for the labels
    nothing_fits = plot_throughput([{"oom_batch_size": 4}]).axes[0]
    assert list(next(line for line in nothing_fits.lines if line.get_marker() == "x").get_ydata()) == [0.0]


def test_liveplot_in_a_kernel_shows_one_figure_and_updates_it_each_epoch(monkeypatch):
    import IPython.display

    import nmeplib.plots as plots

    shown, updates = [], []

    class Handle:
        def update(self, obj):
            updates.append(obj)

    def display(obj, display_id=False):
        shown.append(obj)
        return Handle()

    monkeypatch.setattr(plots, "in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display", display)
    live = LivePlot(title="live")
    for row in history(3):
        live(row)
    assert len(shown) == 1 and updates == [shown[0], shown[0]]
    assert len(shown[0].axes[1].lines[1].get_xdata()) == 3          # the curves so far
