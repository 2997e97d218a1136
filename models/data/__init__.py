"""Data sets read from local files or shipped packages; nothing is downloaded."""

from .arrays import resize_images, subset_indices
from .cifar10 import find_cifar10, load_cifar10
from .fashion_mnist import read_idx
from .info import SPLITS, DataInfo, DataShape, Split
from .loader import CIFAR_AUGMENT, DIGITS_AUGMENT, Augment, Batches, to_float
from .registry import DATASETS, available_datasets, dataset_info, dataset_shape, load_dataset
from .synthetic import make_synthetic

__all__ = [
    "CIFAR_AUGMENT",
    "DATASETS",
    "DIGITS_AUGMENT",
    "SPLITS",
    "Augment",
    "Batches",
    "DataInfo",
    "DataShape",
    "Split",
    "available_datasets",
    "dataset_info",
    "dataset_shape",
    "find_cifar10",
    "load_cifar10",
    "load_dataset",
    "make_synthetic",
    "read_idx",
    "resize_images",
    "subset_indices",
    "to_float",
]
