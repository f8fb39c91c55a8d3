"""Data: format readers, procedural generators, transforms and the dataset registry."""

from slotlab.data.datasets import (
    SceneDataset,
    SequentialBatchSampler,
    ShuffledBatchSampler,
)
from slotlab.data.formats.npz import load_npz, save_npz
from slotlab.data.procedural.tetrominoes import generate_tetrominoes
from slotlab.data.registry import (
    DATASETS,
    DatasetInfo,
    build_dataset,
    dataset_info,
    to_scene_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "SceneDataset",
    "SequentialBatchSampler",
    "ShuffledBatchSampler",
    "build_dataset",
    "dataset_info",
    "generate_tetrominoes",
    "load_npz",
    "save_npz",
    "to_scene_dataset",
]
