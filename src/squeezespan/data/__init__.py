"""Datasets in their on-disk formats as uint8 image tensors with labels, batching, normalisation and augmentation."""

from __future__ import annotations

from .augment import Augment, AugmentConfig
from .custom import as_image_dataset, dataset_fingerprint
from .datasets import (
    CUSTOM_PREFIX,
    DATASETS,
    DatasetSpec,
    ImageDataset,
    batches,
    data_root,
    dataset_info,
    describe_dataset,
    get_spec,
    load_dataset,
)
from .folder import FolderDataset
from .pixels import channel_stats, convert_channels, normalize, resize_uint8

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "FolderDataset",
    "load_dataset",
    "as_image_dataset",
    "dataset_fingerprint",
    "CUSTOM_PREFIX",
    "batches",
    "normalize",
    "dataset_info",
    "describe_dataset",
    "get_spec",
    "data_root",
    "channel_stats",
    "convert_channels",
    "resize_uint8",
    "Augment",
    "AugmentConfig",
]
