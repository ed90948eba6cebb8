"""Turn a config into datasets and loaders: ``build_dataset`` and ``build_loader``."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError, DatasetError
from ..runtime import default_device, worker_count, rank_and_world
from . import cifar, digits, hdf5
from .augment import Augment
from .hdf5 import SPLITS
from .loaders import StreamLoader, TensorLoader

if TYPE_CHECKING:
    from ..config import Config

USES = {"train": "training", "val": "validation", "test": "prediction"}   # what each split is read for
IMAGENET_MEAN = (0.485, 0.456, 0.406)   # MediumImageNet is drawn from ImageNet
IMAGENET_STD = (0.229, 0.224, 0.225)
# DATA.DATASET -> its number of classes (None: from the file); build_dataset reads each.
DATASETS: dict[str, int | None] = {"cifar10": cifar.NUM_CLASSES, "medium_imagenet": None,
                                   "digits": len(digits.CLASS_NAMES)}
DEFAULT_ROOTS = {"cifar10": "data/cifar10", "digits": ""}
MEDIUM_IMAGENET_CLASSES = 200


def model_classes(config: Config) -> int:
    """The class count a config's model has, known before any data is read (MediumImageNet: 200)."""
    return config.MODEL.NUM_CLASSES or DATASETS[config.DATA.DATASET] or MEDIUM_IMAGENET_CLASSES


# The course server's data in its two layouts (earlier terms, later terms). The shipped configs
# name the first; a DATA.ROOT that is one of these and missing is looked for at the others, so
# the configs work on either server without edits (data_links.md).
COURSE_ROOTS = {
    "cifar10": ("/data/cifar10", "/data/nmep/cv/cifar10"),
    "medium_imagenet": ("/data/medium-imagenet/medium-imagenet-nmep-96.hdf5", "/data/nmep/cv/medium-imagenet-96.hdf5"),
}


@dataclass
class ImageSplit:
    """One split: its labels, class names and normalisation, and uint8 images on demand.

    In-memory datasets hold ``images``; an HDF5 split reads ``get(indices)`` from the file.
    Labels are -1 where they are hidden (the MediumImageNet test split).
    """

    name: str
    split: str
    labels: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    images: torch.Tensor | None = None
    path: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N×3×H×W images and labels at ``indices``."""
        indices = torch.as_tensor(indices, dtype=torch.long).flatten()
        images = self.images[indices] if self.images is not None else hdf5.read_images(self.path, self.split, indices)
        return images, self.labels[indices]


def _present(dataset: str, root: str) -> bool:
    path = Path(root)
    if dataset == "cifar10":
        return any((folder / "batches.meta").is_file() for folder in (path / cifar.FOLDER, path))
    return path.is_file()


@lru_cache(maxsize=None)
def _say_used(given: str, used: str) -> None:
    if given == used:
        print(f"data: {used} (the course server's data)", flush=True)
    else:
        print(f"data: {given} not found, using {used} (the course server's other layout)", flush=True)


def data_root(config: Config) -> str:
    """``DATA.ROOT`` (or the dataset's default), with the course server's layouts searched.

    A root that is one of :data:`COURSE_ROOTS` and missing is replaced by the first of the others
    that exists (said once per process); when none exists the error names every place looked at.
    """
    dataset = config.DATA.DATASET
    root = config.DATA.ROOT or DEFAULT_ROOTS.get(dataset, "")
    if dataset == "medium_imagenet" and not root:
        raise DatasetError("DATA.ROOT must name the MediumImageNet HDF5 file (data_links.md says where the course "
                           "server keeps it)")
    root = str(Path(root).expanduser()) if root else root
    layouts = COURSE_ROOTS.get(dataset, ())
    if root in layouts:
        for other in (root, *layouts):
            if _present(dataset, other):
                _say_used(root, other)
                return other
        what = "CIFAR-10 (cifar-10-batches-py/)" if dataset == "cifar10" else "the MediumImageNet HDF5 file"
        raise DatasetError(f"{what} not found; looked at {' and '.join(layouts)} (the course server's layouts); "
                           f"set DATA.ROOT to where it is"
                           + (" (a folder such as data/cifar10 gets the official download)" if dataset == "cifar10"
                              else "") + "; data_links.md says where to get it")
    return root


@lru_cache(maxsize=8)
def _cifar(root: str, download: bool, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    folder = cifar.find_folder(root, download)
    return (*cifar.load_split(folder, "train" if split == "train" else "test"), cifar.class_names(folder))


def build_dataset(config: Config, split: str) -> ImageSplit:
    """The ``split`` (train/val/test) of ``config.DATA.DATASET`` as an :class:`ImageSplit`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    name, root = config.DATA.DATASET, data_root(config)
    if name == "digits":
        images, labels = digits.load_split(split, config.DATA.IMG_SIZE)
        mean, std = digits.mean_std(config.DATA.IMG_SIZE)
        return ImageSplit(name, split, labels, digits.CLASS_NAMES, mean, std, images=images)
    if name == "cifar10":
        images, labels, names = _cifar(root, config.DATA.DOWNLOAD, split)
        return ImageSplit(name, split, labels, names, cifar.MEAN, cifar.STD, images=images, path=root)

    info = hdf5.inspect_hdf5(root, config.DATA.CLASS_NAMES or None)
    names = info["class_names"] or hdf5.default_class_names(info["num_classes"])
    if config.DATA.PRELOAD:
        images, labels = hdf5.load_split(root, split)
    else:
        images, labels = None, hdf5.read_labels(root, split)
    return ImageSplit(name, split, labels, names, IMAGENET_MEAN, IMAGENET_STD, images=images, path=root)


def train_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``size`` training images drawn per class in proportion to the class's
    share (scikit-learn's stratified split), the same for the same seed on any machine: a quick
    first run, or an overfitting check, on a small but balanced part of the training set."""
    from sklearn.model_selection import train_test_split

    if size >= len(labels):
        raise ConfigError(f"DATA.TRAIN_SUBSET={size} is not smaller than the {len(labels)} training images; "
                          f"give fewer, or 0 for all of them")
    classes = int(torch.unique(labels).numel())
    if size < classes:
        raise ConfigError(f"DATA.TRAIN_SUBSET={size} is fewer than the {classes} classes; a stratified subset "
                          f"needs at least one image per class")
    try:
        picked, _ = train_test_split(torch.arange(len(labels)).numpy(), train_size=size,
                                     stratify=labels.numpy(), random_state=seed)
    except ValueError as err:   # a class with a single image cannot be stratified
        raise ConfigError(f"DATA.TRAIN_SUBSET={size}: {err}") from None
    return torch.from_numpy(picked).sort().values


def _subset(dataset: ImageSplit, config: Config) -> ImageSplit:
    """The training split cut to ``DATA.TRAIN_SUBSET`` images (validation and test stay whole).
    The images of an HDF5 split read from disk are read once into memory: a subset is small."""
    size = config.DATA.TRAIN_SUBSET
    if not size or dataset.split != "train":
        return dataset
    indices = train_subset(dataset.labels, size, config.SEED)
    images = dataset.images[indices] if dataset.images is not None else \
        hdf5.read_images(dataset.path, dataset.split, indices)
    print(f"data: training on {size} of the {len(dataset)} training images (DATA.TRAIN_SUBSET, stratified by "
          f"class, seed {config.SEED})", flush=True)
    return replace(dataset, labels=dataset.labels[indices], images=images)


def build_loader(config: Config, split: str, *, device: torch.device | str | None = None,
                 shuffle: bool | None = None, augment: bool | None = None,
                 dataset: ImageSplit | None = None) -> TensorLoader | StreamLoader:
    """Batches of normalised float images and int64 labels on ``device``; the loader's ``split``
    is the ImageSplit it reads (labels, class names, path).

    Training reads ``DATA.TRAIN_SUBSET`` images when it is set (not from a ``dataset`` given),
    shuffles, augments with ``DATA.AUGMENT`` and drops the last partial batch;
    ``val``/``test`` keep the split's order and only resize and normalise. Under torchrun
    each process gets its own shard.
    """
    device = torch.device(device) if device is not None else default_device()
    dataset = dataset or _subset(build_dataset(config, split), config)
    train = split == "train"
    if len(dataset) == 0:   # an empty split would train nothing, or validate to NaN, or predict nothing
        raise DatasetError(f"the {split} split of {dataset.path or config.DATA.DATASET} holds no images; "
                           f"{USES[split]} needs at least one")
    shuffle = train if shuffle is None else shuffle
    augment = train if augment is None else augment
    aug = Augment(config.DATA.AUGMENT, dataset.mean, dataset.std, config.DATA.IMG_SIZE, train=augment)
    rank, world = rank_and_world()
    if dataset.images is not None:
        loader = TensorLoader(dataset.images, dataset.labels, config.DATA.BATCH_SIZE, aug, shuffle=shuffle,
                              drop_last=train, seed=config.SEED, device=device, rank=rank, world_size=world,
                              split=dataset)
    else:
        from .stream import HDF5Blocks
        blocks = HDF5Blocks(dataset.path, split, config.DATA.BATCH_SIZE, shuffle=shuffle, seed=config.SEED,
                            rank=rank, world_size=world, drop_last=train)
        loader = StreamLoader(blocks, aug, num_workers=worker_count(config.DATA.NUM_WORKERS), seed=config.SEED,
                              device=device, split=dataset)
    if train and len(loader) == 0:
        raise ConfigError(f"DATA.BATCH_SIZE={config.DATA.BATCH_SIZE} exceeds the {loader.num_samples} training "
                          f"images of this process")
    return loader
