"""Datasets (CIFAR-10, MediumImageNet HDF5, bundled digits) and fast loaders."""
from ..errors import DatasetError
from .build import ImageSplit, build_dataset, build_loader

__all__ = ["ImageSplit", "build_dataset", "build_loader", "DatasetError"]
