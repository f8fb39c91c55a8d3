"""The dataset registry: every dataset a preset can name, with its native size, entities and source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slotlab.config import DataConfig
from slotlab.data.datasets import SceneDataset
from slotlab.data.formats.npz import load_npz
from slotlab.data.procedural.tetrominoes import generate_tetrominoes
from slotlab.data.transforms import masks_to_labels, prepare_images, prepare_labels
from slotlab.errors import ConfigError, DataError

# Offsets from the training seed to the validation and test seeds of procedural datasets (disjoint streams).
VAL_SEED_OFFSET = 1_000_003
TEST_SEED_OFFSET = 2_000_006

Arrays = tuple[np.ndarray, np.ndarray | None]  # images uint8 [N, H, W, 3], labels uint8 [N, H, W] or None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    resolution: int  # native image side
    num_entities: int  # ground-truth entities per image, background included
    source: str
    load: Callable[[DataConfig, str], Arrays]  # (config, "train" | "val" | "test") -> arrays


def _tetrominoes(cfg: DataConfig, split: str) -> Arrays:
    n, seed = {"train": (cfg.train_size, cfg.seed), "val": (cfg.val_size, cfg.seed + VAL_SEED_OFFSET),
               "test": (cfg.val_size, cfg.seed + TEST_SEED_OFFSET)}[split]
    d = generate_tetrominoes(n, seed)
    return d["image"], masks_to_labels(d["mask"]).numpy()


def _npz(cfg: DataConfig, split: str) -> Arrays:
    if not cfg.path:
        raise ConfigError("dataset 'npz' needs data.path=FILE.npz")
    images, labels = load_npz(cfg.path)
    n_val = min(cfg.val_size, max(1, len(images) // 5))  # the last images validate
    sl = slice(0, len(images) - n_val) if split == "train" else slice(len(images) - n_val, len(images))  # val, test
    return images[sl], None if labels is None else labels[sl]


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("tetrominoes", 35, 4, "procedural twin of DeepMind multi-object Tetrominoes (generated offline)", _tetrominoes),
        DatasetInfo("npz", 0, 0, "bring-your-own .npz: image uint8 [N,H,W,3], optional mask (the last val_size images validate)", _npz),
    ]
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def to_scene_dataset(images: np.ndarray, labels: np.ndarray | None, crop: list[int] | None, resolution: int) -> SceneDataset:
    """Raw arrays -> model-resolution SceneDataset (crop, resize; masks with nearest neighbour)."""
    if len(images) == 0:
        raise DataError("the dataset is empty")
    x = prepare_images(images, crop, resolution)
    y = None if labels is None else prepare_labels(masks_to_labels(labels), crop, resolution)
    return SceneDataset(x, y)


def build_dataset(cfg: DataConfig, split: str) -> SceneDataset:
    """The ``split`` of the configured dataset, at model resolution, in memory.

    "train" and "val" are used in training ("val" picks the best checkpoint); "test" is held out from both
    (procedural datasets: a third seed; an .npz has no separate test split and gives its validation images).
    """
    images, labels = dataset_info(cfg.dataset).load(cfg, split)
    return to_scene_dataset(images, labels, cfg.crop, cfg.resolution)
