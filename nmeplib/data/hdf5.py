"""The MediumImageNet HDF5 format: checking, describing, writing and reading whole splits.

A file holds ``images-{train,val,test}`` (uint8, N x 3 x H x W, H == W) and
``labels-{train,val}`` (integers). The test split has no labels; it reports -1.
Class names come from the text file ``DATA.CLASS_NAMES`` names, else the file's own
``class_names`` attribute or dataset, else a text file beside it named after it
(``X.hdf5`` -> ``X.class_names.txt``) or, for files that store none such as the course
server's, ``class_names.txt``; else ``class_<i>``. Names stored in the file come before any
shared text file, so files built in one folder never take each other's names.
Streaming a split in shuffled blocks for training is ``stream.HDF5Blocks``.
"""
from __future__ import annotations

import glob
import math
import os
import re
import secrets
import socket
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import DatasetError, OutputError
from ..files import settle, temporary_beside

SPLITS = ("train", "val", "test")
LABELED = ("train", "val")
CLASS_NAMES_FILE = "class_names.txt"
CLASS_NAMES_KEY = "class_names"   # root attribute or dataset holding the names
_LABEL_CHUNK = 65536
_READ_BYTES = 64 * 2**20  # size of one read when loading a whole split
_DAMAGED = "the file is damaged or incomplete: download or build it again (see data_links.md)"


def images_key(split: str) -> str:
    return f"images-{split}"


def labels_key(split: str) -> str:
    return f"labels-{split}"


def default_class_names(n: int) -> list[str]:
    """Names for files that carry none: ``class_0``, ``class_1``, ..."""
    return [f"class_{i}" for i in range(n)]


def open_hdf5(path: str | os.PathLike, **kwargs) -> h5py.File:
    """Open read-only, turning a missing or non-HDF5 file into a DatasetError."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file; set DATA.ROOT to the MediumImageNet HDF5 file (on the course "
                           f"server /data/nmep/cv/medium-imagenet-96.hdf5 or /data/medium-imagenet/"
                           f"medium-imagenet-nmep-96.hdf5; data_links.md says where to get it or how to build one)")
    if not path.is_file() or not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r", **kwargs)
    except OSError as err:   # e.g. "truncated file: eof = ..."
        raise DatasetError(f"{path}: cannot be opened ({err}); {_DAMAGED}") from None


def read_rows(ds: h5py.Dataset, a: int, b: int, out: np.ndarray | None = None, at: int = 0) -> np.ndarray:
    """``ds[a:b]``, or read into ``out[at:at + b - a]``; a failed read becomes a DatasetError."""
    try:
        if out is None:
            return ds[a:b]
        ds.read_direct(out, np.s_[a:b], np.s_[at:at + b - a])
        return out
    except OSError as err:   # e.g. a corrupt compressed chunk: "filter returned failure during read"
        raise DatasetError(f"{ds.file.filename}: cannot read {ds.name[1:]} rows {a}..{b - 1} ({err}); "
                           f"{_DAMAGED}") from None


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def schema(f: h5py.File, path: str | os.PathLike) -> tuple[int, dict[str, int]]:
    """Check the datasets' presence, types and shapes; return (img_size, samples per split)."""
    wanted = [images_key(s) for s in SPLITS] + [labels_key(s) for s in LABELED]
    missing = [k for k in wanted if not isinstance(f.get(k), h5py.Dataset)]
    if missing:
        raise DatasetError(f"{path}: missing dataset(s) {', '.join(missing)}; "
                           f"expected {', '.join(wanted)}")
    img_size, counts = None, {}
    for split in SPLITS:
        ds = f[images_key(split)]
        n, *rest = ds.shape or (0,)
        if ds.dtype != np.uint8 or len(ds.shape) != 4 or rest[0] != 3 or rest[1] != rest[2]:
            raise DatasetError(f"{path}: {ds.name[1:]} must be uint8 N x 3 x H x W with H == W, "
                               f"found {ds.dtype} with shape {ds.shape}")
        if img_size not in (None, rest[1]):
            raise DatasetError(f"{path}: {ds.name[1:]} holds {rest[1]} px images, "
                               f"other splits {img_size} px")
        img_size, counts[split] = rest[1], n
    for split in LABELED:
        ds = f[labels_key(split)]
        if ds.dtype.kind not in "iu":
            raise DatasetError(f"{path}: {ds.name[1:]} must hold integers, found {ds.dtype}")
        if ds.shape != (counts[split],):
            raise DatasetError(f"{path}: {ds.name[1:]} has shape {ds.shape} but "
                               f"{images_key(split)} holds {counts[split]} images")
    return img_size, counts


def _decode(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def sidecar_path(path: str | os.PathLike) -> Path:
    """The class-names text file named after an HDF5 file: ``X.hdf5`` -> ``X.class_names.txt``."""
    return Path(path).with_suffix(".class_names.txt")


def _read_names(source: Path):
    names = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{source}: class-names file is empty")
    return names, str(source)


def _names_from_text(path: str | os.PathLike, explicit: str | os.PathLike | None = None):
    """(names, source) from an explicit file, else ``X.class_names.txt`` or ``class_names.txt``
    beside `path`; None if none exists."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise DatasetError(f"{explicit}: class-names file not found")
        return _read_names(Path(explicit))
    for source in (sidecar_path(path), Path(path).with_name(CLASS_NAMES_FILE)):
        if source.is_file():
            return _read_names(source)
    return None


def _names_from_file(f: h5py.File):
    """(names, source) from a root attribute or dataset ``class_names``; None if neither."""
    if CLASS_NAMES_KEY in f.attrs:
        return _decode(f.attrs[CLASS_NAMES_KEY]), f"{f.filename} attribute {CLASS_NAMES_KEY}"
    if isinstance(f.get(CLASS_NAMES_KEY), h5py.Dataset):
        return _decode(f[CLASS_NAMES_KEY][()]), f"{f.filename} dataset {CLASS_NAMES_KEY}"
    return None


def inspect_hdf5(path: str | os.PathLike, class_names: str | os.PathLike | None = None) -> dict:
    """Validate a file's schema and labels and describe it.

    Returns ``{"path", "img_size", "num_samples": {split: N}, "num_classes", "class_names"}``.
    Without class names, num_classes is one more than the largest train label (a val label
    beyond it is an error) and the names are ``class_<i>``. Raises DatasetError naming the file and the problem.
    """
    with open_hdf5(path) as f:
        img_size, counts = schema(f, path)
        found = ((class_names is not None and _names_from_text(path, class_names))
                 or _names_from_file(f) or _names_from_text(path))
        num_classes = len(found[0]) if found else None
        for split in LABELED:  # train first: without class names its labels define the classes
            labels = read_rows(f[labels_key(split)], 0, counts[split])
            if labels.size and labels.min() < 0:
                raise DatasetError(f"{path}: {labels_key(split)} has negative label {labels.min()}")
            top = int(labels.max()) if labels.size else -1
            if num_classes is None and labels.size:
                if top >= counts[split]:
                    raise DatasetError(f"{path}: {labels_key(split)} has label {top} but only {counts[split]} "
                                       f"images; a file without class names numbers its classes 0, 1, 2, ...")
                num_classes = top + 1
            elif num_classes is not None and top >= num_classes:
                source = f"class names (from {found[1]})" if found else f"classes in {labels_key('train')}"
                raise DatasetError(f"{path}: {labels_key(split)} has label {top} but there are "
                                   f"only {num_classes} {source}")
    names = found[0] if found else default_class_names(num_classes or 0)
    return {"path": str(path), "img_size": img_size, "num_samples": counts,
            "num_classes": len(names), "class_names": names}


def _temporary(path: Path) -> Path:
    """A new temporary name beside ``path`` that says which process writes it: ``.X.hdf5.PID@HOST.RAND.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}@{socket.gethostname()}.{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of ``path`` left by writers on this machine that no longer run.

    Only names :func:`_temporary` gives ``path`` count; a temporary of a live process (or one
    written on another machine sharing the folder) is kept, so a build running at the same
    time is never disturbed. A dead writer's pid reused by a new process keeps its temporary
    until a later build. Returns the files removed.
    """
    path, host, removed = Path(path), socket.gethostname(), []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)@{re.escape(host)}\.[0-9a-f]+\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(tmp.name)
        if match and not _alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class HDF5Writer:
    """Build a file split by split, a batch at a time, so folders larger than memory fit.

    The file is written under a temporary name in the target folder and moved into
    place only when the writer closes without error, so readers never see half a file;
    temporaries that killed writers of the same file left are removed first
    (:func:`remove_stale_temporaries`). The file gets the permissions ``open()`` gives
    (0666 less the umask). Splits never appended to are stored empty. An output path that
    cannot be written (a folder, a file where a folder should be) raises OutputError before
    anything is read.
    """

    def __init__(self, path: str | os.PathLike, img_size: int,
                 class_names: list[str] | None = None, chunk: int = 256) -> None:
        self.path = Path(path)
        tmp = None
        try:   # before any image is read: a wrong path should not cost the whole conversion
            fd, tmp = temporary_beside(self.path, _temporary(self.path).name)
            os.close(fd)
            remove_stale_temporaries(self.path)
            self._tmp, self.img_size, self.chunk = tmp, img_size, chunk
            self._file = h5py.File(self._tmp, "w")
        except OSError as err:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write {self.path}: {err}") from None
        shape = (3, img_size, img_size)
        for split in SPLITS:
            self._file.create_dataset(images_key(split), (0, *shape), np.uint8,
                                      maxshape=(None, *shape), chunks=(chunk, *shape))
        for split in LABELED:
            self._file.create_dataset(labels_key(split), (0,), np.int64,
                                      maxshape=(None,), chunks=(_LABEL_CHUNK,))
        if class_names is not None:
            self._file.attrs[CLASS_NAMES_KEY] = np.array(class_names, dtype=h5py.string_dtype())

    def append(self, split: str, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add images (uint8 N x 3 x S x S) and, for train/val, their N integer labels."""
        check_split(split)
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != (3, self.img_size, self.img_size):
            raise ValueError(f"{split}: expected uint8 N x 3 x {self.img_size} x {self.img_size} "
                             f"images, got {images.dtype} {images.shape}")
        if (labels is None) != (split == "test"):
            raise ValueError(f"{split}: " + ("test has no labels" if labels is not None
                                             else "labels are required"))
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
                raise ValueError(f"{split}: expected {len(images)} integer labels, "
                                 f"got {labels.dtype} {labels.shape}")
            self._extend(labels_key(split), labels)
        self._extend(images_key(split), images)

    def _extend(self, key: str, values: np.ndarray) -> None:
        ds = self._file[key]
        n = len(ds)
        ds.resize(n + len(values), axis=0)
        ds[n:] = values

    def close(self, commit: bool = True) -> None:
        """Finish the file (commit) or throw it away."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        try:
            settle(self._tmp, self.path, commit)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err}") from None

    def __enter__(self) -> "HDF5Writer":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(commit=exc_type is None)


def write_hdf5(path: str | os.PathLike,
               splits: dict[str, tuple[np.ndarray, np.ndarray | None]],
               class_names: list[str] | None = None, chunk: int = 256) -> Path:
    """Write in-memory splits ``{split: (images, labels or None)}`` as one file."""
    if not splits:
        raise ValueError("write_hdf5 needs at least one split")
    img_size = np.asarray(next(iter(splits.values()))[0]).shape[-1]
    with HDF5Writer(path, img_size, class_names, chunk) as writer:
        for split, (images, labels) in splits.items():
            writer.append(split, images, labels)
    return Path(path)


def read_label_rows(f: h5py.File, split: str, a: int, b: int) -> np.ndarray:
    if split == "test":
        return np.full(b - a, -1, np.int64)
    return read_rows(f[labels_key(split)], a, b).astype(np.int64)


def read_labels(path: str | os.PathLike, split: str) -> torch.Tensor:
    """A split's int64 labels (-1 for test) without reading its images."""
    check_split(split)
    with open_hdf5(path) as f:
        schema(f, path)
        return torch.from_numpy(read_label_rows(f, split, 0, len(f[images_key(split)])))


def read_images(path: str | os.PathLike, split: str, indices: torch.Tensor) -> torch.Tensor:
    """uint8 images at ``indices`` (any order, repeats allowed) of a split, read from the file."""
    unique, inverse = torch.unique(indices, return_inverse=True)  # h5py wants increasing indices
    with open_hdf5(path) as f:
        try:
            rows = torch.from_numpy(f[images_key(split)][unique.tolist()])
        except OSError as err:
            raise DatasetError(f"{path}: cannot read {split} images ({str(err).splitlines()[0]}); "
                               f"{_DAMAGED}") from None
    return rows[inverse]


def load_split(path: str | os.PathLike, split: str,
               progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a whole split into memory: (uint8 N x 3 x H x W, int64 labels, -1 for test)."""
    check_split(split)
    with open_hdf5(path) as f:
        schema(f, path)
        ds = f[images_key(split)]
        images = np.empty(ds.shape, np.uint8)
        step = max(1, _READ_BYTES // max(1, images[:1].nbytes))
        if ds.chunks:
            step = math.ceil(step / ds.chunks[0]) * ds.chunks[0]
        with tqdm(total=len(ds), desc=f"loading {split}", unit="img", disable=not progress) as bar:
            for a in range(0, len(ds), step):
                b = min(a + step, len(ds))
                read_rows(ds, a, b, images, a)
                bar.update(b - a)
        labels = read_label_rows(f, split, 0, len(ds))
    return torch.from_numpy(images), torch.from_numpy(labels)
