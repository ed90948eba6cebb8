"""Datasets (CIFAR-10, MediumImageNet HDF5, bundled digits) and fast loaders."""
from .build import ImageSplit, build_dataset, build_loader
from .common import DatasetError

__all__ = ["ImageSplit", "build_dataset", "build_loader", "DatasetError"]
