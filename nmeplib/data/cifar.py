"""CIFAR-10 from the official python layout, read whole into memory.

``DATA.ROOT`` is the folder that holds ``cifar-10-batches-py/`` (or that folder itself).
When it is missing and ``DATA.DOWNLOAD`` is on, the official archive is fetched there.
The files are read directly, so copies whose md5 differs from torchvision's list still load.
CIFAR-10 has only a training and a test split: ``val`` and ``test`` are both ``test_batch``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10


def find_folder(root: str | Path, download: bool = True) -> Path:
    """The ``cifar-10-batches-py`` folder under ``root``, downloading it if allowed."""
    root = Path(root).expanduser()
    for candidate in (root / FOLDER, root):
        if (candidate / "batches.meta").is_file():
            return candidate
    if not download:
        raise DatasetError(f"CIFAR-10 not found in {root} (no {FOLDER}/batches.meta) and DATA.DOWNLOAD "
                           f"is off; see data_links.md for where to get it")
    from torchvision.datasets.utils import download_and_extract_archive
    print(f"CIFAR-10 not found in {root}: downloading {URL} there")
    try:
        download_and_extract_archive(URL, str(root))
    except Exception as err:  # no network, proxy, full disk ...
        raise DatasetError(f"CIFAR-10 not found in {root} and the download failed ({err}); put the "
                           f"official {FOLDER} folder there, see data_links.md") from None
    return root / FOLDER


# The only globals the official batches (and numpy's newer pickle layouts) reference.
SAFE_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("_codecs", "encode"),   # bytes in protocol-2 pickles written by Python 3
})


class _RefusedGlobal(Exception):
    pass


class _SafeUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, strings, numbers and numpy arrays: a file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 file missing: {path}")
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as err:
        raise DatasetError(f"CIFAR-10 file {path} refers to {err}, which no CIFAR-10 batch contains; refusing "
                           f"to load it (replace the file with the official one, see data_links.md)") from None
    except Exception as err:
        raise DatasetError(f"CIFAR-10 file {path} is not a python pickle batch: {err}") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"CIFAR-10 file {path} holds a {type(batch).__name__}, not a batch dict")
    return batch


def class_names(folder: Path) -> list[str]:
    """The ten class names of ``batches.meta``."""
    meta = _unpickle(folder / "batches.meta")
    names = meta.get(b"label_names") or meta.get("label_names")
    if not names:
        raise DatasetError(f"{folder / 'batches.meta'} has no label_names")
    if len(names) != NUM_CLASSES:   # the model's class count is CIFAR-10's, never the file's
        raise DatasetError(f"{folder / 'batches.meta'} names {len(names)} classes; CIFAR-10 has {NUM_CLASSES}: "
                           f"replace it with the official file")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _check_batch(path: Path, split: str, data: np.ndarray, labels: np.ndarray) -> None:
    """Refuse a batch that would train on wrong data: pixels that are not uint8 (a float copy in
    [0, 1] cast to uint8 is black), as many labels as images, and labels that are CIFAR-10 classes."""
    if data.dtype != np.uint8:
        raise DatasetError(f"{path} ({split}) stores its images as {data.dtype}, not uint8 (0-255); "
                           f"replace it with the official file")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(data):
        raise DatasetError(f"{path} ({split}) has {len(data)} images but {labels.size} labels "
                           f"({labels.dtype}); each image needs one integer label")
    bad = labels[(labels < 0) | (labels >= NUM_CLASSES)]
    if len(bad):
        raise DatasetError(f"{path} ({split}) has label {int(bad[0])}; CIFAR-10's labels are 0-{NUM_CLASSES - 1}")


def load_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×3×32×32 images and int64 labels of ``train`` or ``val``/``test``."""
    files = TRAIN_FILES if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        data, batch_labels = batch.get(b"data"), batch.get(b"labels")
        if data is None or batch_labels is None or np.asarray(data).shape[-1] != 3072:
            raise DatasetError(f"{folder / name} lacks b'data' (N×3072 uint8) or b'labels'")
        data, batch_labels = np.asarray(data), np.asarray(batch_labels)
        _check_batch(folder / name, split, data, batch_labels)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels.astype(np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
