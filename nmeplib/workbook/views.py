"""Views of a dataset split for the notebooks: sizes, pixel statistics, class counts, example
grids, augmentation examples and an interactive explorer."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch


def split_sizes(splits: Mapping[str, Any]) -> list[dict]:
    """Rows describing each ``ImageSplit`` of ``{name: split}``: images, labels, size, classes."""
    rows = []
    for name, split in splits.items():
        image = split.get([0])[0] if len(split) else None
        labelled = int((split.labels >= 0).sum())
        rows.append({"split": name, "images": len(split), "labelled": labelled,
                     "image_shape": "x".join(map(str, image.shape[1:])) if image is not None else "",
                     "classes": split.num_classes})
    return rows


def read_images(split, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """uint8 images ``start:stop`` of an ``ImageSplit``, read as one slice (fast for HDF5)."""
    stop = len(split) if stop is None else min(stop, len(split))
    if split.images is not None:
        return split.images[start:stop]
    from ..data.hdf5 import images_key, open_hdf5, read_rows

    with open_hdf5(split.path) as f:
        return torch.from_numpy(read_rows(f[images_key(split.split)], start, stop))


def channel_stats(split, max_images: int | None = None,
                  chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel pixel mean and std (on the 0-1 scale) of a split, from its first
    ``max_images`` images (all if None). MediumImageNet's training images are stored in random
    order, so its first images are a fair sample."""
    n = len(split) if max_images is None else min(max_images, len(split))
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for start in range(0, n, chunk):
        x = read_images(split, start, min(start + chunk, n)).double() / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        pixels += x.numel() // 3
    mean = total / max(pixels, 1)
    std = (squares / max(pixels, 1) - mean * mean).clamp(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def stats_table(split, max_images: int | None = None) -> list[dict]:
    """Per-channel mean/std computed from the data next to the constants the loaders use."""
    mean, std = channel_stats(split, max_images)
    return [{"channel": channel, "mean (data)": m, "mean (used)": split.mean[i],
             "std (data)": s, "std (used)": split.std[i]}
            for i, (channel, m, s) in enumerate(zip("RGB", mean, std))]


def class_counts(split) -> list[int]:
    """Images per class of a labelled split, in class-index order."""
    labels = split.labels[split.labels >= 0]
    return torch.bincount(labels, minlength=split.num_classes).tolist()


def examples_per_class(split, per_class: int = 1, max_classes: int | None = None, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` random images of each class (of the first ``max_classes``
    classes), class by class; random images if the split has no labels."""
    gen = torch.Generator().manual_seed(seed)
    classes = range(split.num_classes if max_classes is None else min(max_classes, split.num_classes))
    if not bool((split.labels >= 0).any()):
        return torch.randperm(len(split), generator=gen)[:per_class * len(classes)]
    picks = []
    for c in classes:
        members = torch.nonzero(split.labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(picks)


def example_grid(split, per_class: int = 1, max_classes: int | None = 20, seed: int = 0, ncols: int = 10,
                 path: str | os.PathLike | None = None, title: str | None = None):
    """A labelled grid of example images, ``per_class`` per class (test splits: hidden labels)."""
    from ..plots import image_grid

    indices = examples_per_class(split, per_class, max_classes, seed)
    images, labels = split.get(indices)
    names = list(split.class_names)
    if bool((labels < 0).any()):
        names = names + ["(hidden)"]
        labels = torch.where(labels < 0, len(names) - 1, labels)
    return image_grid(images, labels, names, ncols=ncols, path=path, title=title)


def plot_class_counts(split, path: str | os.PathLike | None = None, title: str | None = None):
    """A bar chart of images per class (class names on the axis when there are few)."""
    from ..plots import plt

    counts = class_counts(split)
    fig, ax = plt.subplots(figsize=(min(12, 3 + 0.35 * len(counts)), 3.5), layout="constrained")
    ax.bar(range(len(counts)), counts)
    if len(counts) <= 30:
        ax.set_xticks(range(len(counts)), split.class_names, rotation=45, ha="right")
    else:
        ax.set_xlabel("class index")
    ax.set_ylabel("images")
    ax.set_title(title or f"{split.name} {split.split}: {sum(counts):,} images, "
                          f"{min(counts):,}-{max(counts):,} per class")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def augment_examples(split, index: int, spec: str, img_size: int, n: int = 5, seed: int = 0) -> torch.Tensor:
    """One image as the model sees it without augmentation, then ``n`` draws of the training
    transforms ``spec`` (``data.augment.Augment``), undone from normalisation for display:
    float ``(n+1)x3xSxS`` in [0, 1]."""
    from ..data.augment import Augment

    image = split.get([index])[0]
    mean = torch.tensor(split.mean).view(1, 3, 1, 1)
    std = torch.tensor(split.std).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    plain = Augment(spec, split.mean, split.std, img_size, train=False)(image)
    train = Augment(spec, split.mean, split.std, img_size, train=True)
    drawn = train(image.expand(n, -1, -1, -1).contiguous(), gen)
    return (torch.cat([plain, drawn]) * std + mean).clamp(0, 1)


def plot_augment(split, index: int, spec: str, img_size: int, n: int = 5, seed: int = 0,
                 path: str | os.PathLike | None = None):
    """The image before (resized, normalised and back) and after ``n`` draws of ``spec``."""
    from ..plots import image_grid

    images = augment_examples(split, index, spec, img_size, n, seed)
    label = int(split.labels[index])
    truth = split.class_names[label] if label >= 0 else "label hidden"
    names = ["before"] + [f"{spec} #{i}" for i in range(1, n + 1)]
    return image_grid(images, list(range(n + 1)), names, ncols=n + 1, path=path,
                      title=f"{split.name} {split.split}[{index}] ({truth}) at {img_size} px: before and after "
                            f"the training transforms")


def image_explorer(splits: Mapping[str, Any], size: float = 3.0):
    """An ipywidgets explorer over ``{name: ImageSplit}``: pick a split and a class, slide the
    index, see the image and its label. Returns None when ipywidgets is not installed (the
    notebooks then show static grids only)."""
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        return None
    from ..plots import plt

    split_box = widgets.Dropdown(options=list(splits), description="split")
    class_box = widgets.Dropdown(description="class")
    index = widgets.IntSlider(description="index", min=0, max=0, continuous_update=False)
    out = widgets.Output()

    def members() -> torch.Tensor:
        split = splits[split_box.value]
        if class_box.value is None or class_box.value < 0:
            return torch.arange(len(split))
        return torch.nonzero(split.labels == class_box.value).flatten()

    def draw(*_) -> None:
        split, chosen = splits[split_box.value], members()
        index.max = max(len(chosen) - 1, 0)
        with out:
            out.clear_output(wait=True)
            if not len(chosen):
                print("no images")
                return
            i = int(chosen[min(index.value, len(chosen) - 1)])
            image, label = split.get([i])
            fig, ax = plt.subplots(figsize=(size, size))
            ax.imshow(image[0].permute(1, 2, 0).numpy())
            ax.axis("off")
            name = split.class_names[int(label)] if int(label) >= 0 else "(label hidden)"
            ax.set_title(f"{split_box.value} #{i}: {name} ({int(label)})", fontsize=9)
            display(fig)
            plt.close(fig)

    def classes(*_) -> None:
        split = splits[split_box.value]
        labelled = bool((split.labels >= 0).any())
        options = [("all", -1)] + ([(f"{c}: {n}", c) for c, n in enumerate(split.class_names)] if labelled else [])
        class_box.unobserve(draw, "value")
        class_box.options, class_box.value = options, -1
        class_box.observe(draw, "value")
        index.value = 0
        draw()

    split_box.observe(classes, "value")
    class_box.observe(draw, "value")
    index.observe(draw, "value")
    classes()
    return widgets.VBox([widgets.HBox([split_box, class_box]), index, out])
