"""Data: in-memory datasets, class-indexed pools of real images, and DSA augmentation."""
from .augment import DEFAULT_DSA_STRATEGY, DSA_OPS, DSAParams, dsa, dsa_op, parse_strategy
from .datasets import (
    DATASET_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IMAGEWOOF_DEFAULT_SIZE,
    ImageDataset,
    fashionmnist_available,
    load_dataset,
    read_cifar_batch,
    read_idx,
    read_svhn_mat,
)
from .pools import ClassPool

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_DSA_STRATEGY",
    "DSA_OPS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGEWOOF_DEFAULT_SIZE",
    "ClassPool",
    "DSAParams",
    "ImageDataset",
    "dsa",
    "dsa_op",
    "fashionmnist_available",
    "load_dataset",
    "parse_strategy",
    "read_cifar_batch",
    "read_idx",
    "read_svhn_mat",
]
