"""The data section of an experiment config: which dataset, where it is, how it is split, cropped and resized."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from slotlab.fields import NonNegativeInt, PositiveInt, Range, Seed

CropValue = Annotated[int, Range(0)]


@dataclass
class DataConfig:
    dataset: str = "tetrominoes"  # a name from slotlab.data.DATASETS
    path: str | None = None  # a converted store (`slotlab data convert`) or, for "npz", the file; unset: procedural
    val_path: str | None = None  # a second store for validation/test (else the last 2 * val_size items of path)
    train_size: PositiveInt = 60_000  # procedural datasets: scenes generated for training
    val_size: PositiveInt = 320  # held-out scenes evaluated during and after training
    seed: Seed = 0  # procedural datasets: the training set's seed (validation uses a disjoint one)
    crop: list[CropValue] | None = None  # [top, left, height, width] applied before resizing
    resolution: PositiveInt = 128  # images are resized (bilinear) to this side after the crop
    num_workers: NonNegativeInt = 0

    def __post_init__(self):
        if self.crop is not None and (len(self.crop) != 4 or min(self.crop[2:]) < 1):
            raise ValueError(f"crop must be [top, left, height, width] with height and width >= 1, got {self.crop}")
