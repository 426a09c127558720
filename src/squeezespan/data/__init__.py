"""Datasets in their on-disk formats as uint8 image tensors with labels, plus batching and normalisation."""

from __future__ import annotations

from squeezespan.data.datasets import (
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
from squeezespan.data.folder import FolderDataset
from squeezespan.data.pixels import channel_stats, convert_channels, normalize, resize_uint8

try:  # augment.py belongs to another part of the package and may not exist yet
    from squeezespan.data.augment import Augment, AugmentConfig
except ImportError:  # pragma: no cover
    pass

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "FolderDataset",
    "load_dataset",
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
