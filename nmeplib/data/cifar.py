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

from .common import DatasetError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


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
    meta = _unpickle(folder / "batches.meta")
    names = meta.get(b"label_names") or meta.get("label_names")
    if not names:
        raise DatasetError(f"{folder / 'batches.meta'} has no label_names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def load_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×3×32×32 images and int64 labels of ``train`` or ``val``/``test``."""
    files = TRAIN_FILES if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        data, batch_labels = batch.get(b"data"), batch.get(b"labels")
        if data is None or batch_labels is None or np.asarray(data).shape[-1] != 3072:
            raise DatasetError(f"{folder / name} lacks b'data' (N×3072 uint8) or b'labels'")
        images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
