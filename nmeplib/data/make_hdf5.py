"""Turn a folder of images into a MediumImageNet-style HDF5 file.

Accepted layouts:

* ``src/train/<class>/*.jpg`` with optional ``src/val/<class>/...`` and optional
  ``src/test/`` (images directly inside or in sub-folders; their labels are dropped);
* ``src/<class>/*.jpg`` alone, split into train and val.

Without a val folder, ``val_fraction`` of each class goes to val (seeded). Classes are
the sorted sub-folder names of train. Train images are stored in a seeded random
order because the loader shuffles runs of neighbouring images, not single ones.
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import DatasetError
from ..files import atomic_write
from .hdf5 import SPLITS, HDF5Writer, inspect_hdf5, sidecar_path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
Items = list[tuple[Path, int]]  # (image file, label); label -1 for test


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_dir()]


def _images(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def _labelled(folder: Path, classes: list[str], require_all: bool) -> Items:
    """Images of folder/<class>/ with class indices; unknown or (if required) empty classes fail."""
    items: Items = []
    for sub in _subfolders(folder):
        if sub.name not in classes:
            raise DatasetError(f"{sub}: class {sub.name!r} is not among the train classes")
        label = classes.index(sub.name)
        items += [(p, label) for p in _images(sub)]
    if require_all:
        empty = sorted(set(classes) - {classes[label] for _, label in items})
        if empty:
            raise DatasetError(f"{folder}: no images for class(es) {', '.join(empty)}")
    return items


def _split_val(items: Items, fraction: float, seed: int) -> tuple[Items, Items]:
    """Move a seeded `fraction` of each class to val, keeping one image for train."""
    rng = np.random.default_rng(seed)
    groups: dict[int, Items] = {}
    for item in items:
        groups.setdefault(item[1], []).append(item)
    train, val = [], []
    for label in sorted(groups):
        group = groups[label]
        k = min(round(len(group) * fraction), len(group) - 1)
        chosen = set(rng.permutation(len(group))[:k].tolist())
        for i, item in enumerate(group):
            (val if i in chosen else train).append(item)
    return train, val


def _test_items(folder: Path) -> Items:
    files = _images(folder) + [p for sub in _subfolders(folder) for p in _images(sub)]
    return [(p, -1) for p in sorted(files, key=lambda p: (p.name, str(p)))]


def hidden_test_labels(src: str | os.PathLike) -> list[int]:
    """The true labels of the test split that :func:`build_from_folder` writes from ``src``, in its
    order: the class of each test image's folder (``src/test/<class>/...``). The file hides them;
    course staff keep them apart to score submissions. An image outside a class folder has none."""
    src = Path(src)
    classes, splits = _collect(src, 0.0, 0)
    labels = []
    for path, _ in splits["test"]:
        if path.parent.name not in classes or path.parent.parent != src / "test":
            raise DatasetError(f"{path}: a test image outside the class folders of {src / 'test'} has no label")
        labels.append(classes.index(path.parent.name))
    if not labels:
        raise DatasetError(f"{src}: no test/<class>/ images to take labels from")
    return labels


def _collect(src: Path, val_fraction: float, seed: int) -> tuple[list[str], dict[str, Items]]:
    """Class names and the (file, label) list of each split."""
    if not src.is_dir():
        raise DatasetError(f"{src}: no such folder")
    train_dir = src / "train"
    if not train_dir.is_dir() and ((src / "val").is_dir() or (src / "test").is_dir()):
        raise DatasetError(f"{src}: has val/ or test/ but no train/ folder")
    root = train_dir if train_dir.is_dir() else src
    classes = [p.name for p in _subfolders(root)]
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders with images")
    for name in classes:   # a class-names text file has one name a line: a line break shifts every later class
        if "\n" in name or "\r" in name:
            raise DatasetError(f"{root}: class folder {name!r} has a line break in its name; rename it")
    splits = {"train": _labelled(root, classes, require_all=True)}
    if (src / "val").is_dir() and root is train_dir:
        splits["val"] = _labelled(src / "val", classes, require_all=False)
    else:
        splits["train"], splits["val"] = _split_val(splits["train"], val_fraction, seed)
    order = np.random.default_rng(seed).permutation(len(splits["train"]))
    splits["train"] = [splits["train"][i] for i in order]
    splits["test"] = _test_items(src / "test") if (src / "test").is_dir() and root is train_dir else []
    return classes, splits


def load_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 3 x size x size: shorter side resized to `size`, then centre-cropped."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at reduced scale when possible
            img = img.convert("RGB")
            scale = size / min(img.size)
            w, h = (max(size, round(d * scale)) for d in img.size)
            img = img.resize((w, h), Image.Resampling.BICUBIC)
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{path}: cannot read image ({err})") from err


def build_from_folder(src: str | os.PathLike, out: str | os.PathLike, *, img_size: int = 96,
                      val_fraction: float = 0.1, seed: int = 0, progress: bool = True) -> dict:
    """Write the images under `src` to the HDF5 file `out`, its class names stored inside it (and,
    for people, in ``X.class_names.txt`` beside ``X.hdf5``), and return inspect_hdf5's description."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    classes, splits = _collect(Path(src), val_fraction, seed)
    out = Path(out)
    total = sum(len(items) for items in splits.values())
    with HDF5Writer(out, img_size, classes) as writer, \
            ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool, \
            tqdm(total=total, desc="make-hdf5", unit="img", disable=not progress) as bar:
        step = writer.chunk
        for split in SPLITS:
            items = splits[split]
            for i in range(0, len(items), step):
                files, labels = zip(*items[i:i + step])
                images = np.stack(list(pool.map(lambda p: load_image(p, img_size), files)))
                writer.append(split, images, None if split == "test" else np.array(labels))
                bar.update(len(files))
    atomic_write(sidecar_path(out), lambda f: f.write("\n".join(classes) + "\n"), "w")
    return inspect_hdf5(out)


def main(argv: list[str] | None = None) -> int:
    """Command line: build a file from a folder and print a one-line summary."""
    parser = argparse.ArgumentParser(prog="python -m nmeplib make-hdf5", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="image folder (src/train/<class>/... or src/<class>/...)")
    parser.add_argument("out", help="HDF5 file to write")
    parser.add_argument("--img-size", type=int, default=96, help="side of the square images")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of each class held out for val when there is no val folder")
    parser.add_argument("--seed", type=int, default=0, help="seed for the val split and train order")
    parser.add_argument("--test-labels", metavar="CSV",
                        help="also write the test split's true labels (src/test/<class>/...) as Id,Category rows, "
                             "kept apart from the file for python -m nmeplib score")
    args = parser.parse_args(argv)
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be at least 0 and below 1, got {args.val_fraction}")
    info = build_from_folder(args.src, args.out, img_size=args.img_size,
                             val_fraction=args.val_fraction, seed=args.seed)
    counts = ", ".join(f"{split} {n}" for split, n in info["num_samples"].items())
    print(f"{info['path']}: {info['num_classes']} classes, {info['img_size']} px, {counts}")
    if args.test_labels:
        labels = hidden_test_labels(args.src)
        # A submission's format (Id,Category, ids 0..N-1), so python -m nmeplib score reads both alike.
        rows = "Id,Category\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels))
        atomic_write(args.test_labels, lambda f: f.write(rows), "w")
        print(f"{args.test_labels}: the {len(labels)} test labels (keep them from students)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
