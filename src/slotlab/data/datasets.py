"""In-memory scene datasets served in whole batches, and a seeded batch sampler that knows about DDP."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from slotlab.data.transforms import to_model_range
from slotlab.errors import DataError


class SceneDataset(Dataset):
    """Images uint8 [N, 3, R, R], optional label maps uint8 [N, R, R] (0 = background) and optional extra
    per-scene fields (e.g. set-prediction ``targets`` [N, 10, 19]), as tensors or numpy arrays (memory maps of a
    converted store are read lazily).

    Indexed by a tensor of indices, it returns a whole batch at once (one gather, no per-item collate):
    ``{"image": float [B, 3, R, R] in [-1, 1], "labels": uint8 [B, R, R], **extra}``.
    """

    def __init__(self, images, labels=None, **extra):
        if len(images) == 0:
            raise DataError("the dataset is empty")
        if labels is not None and (labels.shape[0] != images.shape[0] or labels.shape[-2:] != images.shape[-2:]):
            raise DataError(f"masks {list(labels.shape)} do not match images {list(images.shape)}")
        for k, v in extra.items():
            if len(v) != len(images):
                raise DataError(f"field {k!r} has {len(v)} items for {len(images)} images")
        self.images, self.labels, self.extra = images, labels, extra

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def fields(self) -> dict:
        return {"images": self.images, "labels": self.labels, **self.extra}

    def subset(self, index: slice) -> SceneDataset:
        """A view of some scenes (a slice: memory maps stay memory maps)."""
        return SceneDataset(
            self.images[index],
            None if self.labels is None else self.labels[index],
            **{k: v[index] for k, v in self.extra.items()},
        )

    def __getitem__(self, index) -> dict[str, Tensor]:
        batch = {"image": to_model_range(_gather(self.images, index))}
        if self.labels is not None:
            batch["labels"] = _gather(self.labels, index)
        batch.update({k: _gather(v, index) for k, v in self.extra.items()})
        return batch


def _gather(a, index) -> Tensor:
    if isinstance(a, Tensor):
        return a[index]
    index = index.numpy() if isinstance(index, Tensor) else index
    return torch.from_numpy(np.ascontiguousarray(a[index]))


class ShuffledBatchSampler(Sampler[Tensor]):
    """Yields index tensors of ``batch_size``: a fresh permutation per epoch from ``seed + epoch``.

    Each of ``world_size`` ranks takes every ``world_size``-th batch, so replicas see disjoint data.
    Incomplete last batches are dropped.

    ``start_step``: the step a resumed run starts at (one batch per step). Batches of the epoch before it were
    trained on already and are skipped, so a resumed run sees the batches the uninterrupted run would have.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0
    ):
        if num_items < batch_size * world_size:
            raise DataError(
                f"{num_items} training items are fewer than one batch of {batch_size} x {world_size} devices"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.epoch, self.start_step = rank, world_size, 0, start_step

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[Tensor]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.num_items, generator=g)
        n = len(self) * self.batch_size * self.world_size
        batches = perm[:n].view(-1, self.world_size, self.batch_size)[:, self.rank]
        yield from batches[max(0, self.start_step - self.epoch * len(self)) :]


class SequentialBatchSampler(Sampler[Tensor]):
    """Index tensors 0..N in order, the last batch possibly smaller (for evaluation)."""

    def __init__(self, num_items: int, batch_size: int):
        self.num_items, self.batch_size = num_items, batch_size

    def __len__(self) -> int:
        return -(-self.num_items // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        yield from torch.arange(self.num_items).split(self.batch_size)
