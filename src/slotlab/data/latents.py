"""Cache the latents of a frozen image autoencoder: encode every image once, store them beside the images.

The result is an ordinary store (:mod:`slotlab.data.store`) with the fields

- ``latents`` float32 or float16 [C, R/f, R/f]: scaled latents (``ImageAutoencoder.encode``),
- ``latents_std`` (with ``posterior=True``) float32 or float16 [C, R/f, R/f]: the posterior's scaled standard
  deviation,
- ``image`` uint8 [3, R, R], and ``labels`` uint8 [R, R] when the dataset has them,
- any extra per-scene fields of the dataset (e.g. set-prediction ``targets``), copied unchanged,

so ``slotlab.data.registry.store_dataset`` serves batches ``{"image", "labels", "latents", ...}``.

Deterministic: by default the latents are the posterior mode (mean). With ``posterior=True`` the store also holds
the standard deviation, and LSD training draws a fresh posterior sample each step (``latents + latents_std * eps``),
as when it encodes on the fly, without running the encoder. With ``sample=True`` they are posterior
samples drawn with a generator seeded by ``seed + index of the batch's first item`` (so the same arguments give the
same latents, also when an interrupted run is resumed; the batch size is then part of the store's identity).
Caching resumes where it stopped when run again with the same arguments (:class:`StoreWriter`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from slotlab.data.datasets import SceneDataset
from slotlab.data.registry import store_dataset
from slotlab.data.store import Store, StoreWriter
from slotlab.errors import DataError
from slotlab.io import FolderLock


class ImageAutoencoder(Protocol):
    """What caching needs of an image autoencoder (:class:`slotlab.models.image_autoencoder.ImageAutoencoder`)."""

    config: Any

    @property
    def scaling_factor(self) -> float: ...

    @property
    def downsample(self) -> int: ...

    def encode(
        self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

    def encode_posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def fingerprint(self) -> str: ...

    def parameters(self) -> Any: ...

    training: bool

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


RESERVED = ("latents", "latents_std", "image", "labels")


def _numpy(a, index: slice) -> np.ndarray:
    x = a[index]
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def latent_store_attrs(
    autoencoder: ImageAutoencoder,
    dataset: SceneDataset,
    sample: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    dtype: str = "float32",
    extra: dict | None = None,
    posterior: bool = False,
) -> dict:
    """What identifies a latent cache: the autoencoder (config, scaling factor, weights hash), data size, sampling."""
    attrs = {
        "kind": "latents",
        "autoencoder": autoencoder.config.to_dict() | {"fingerprint": autoencoder.fingerprint()},
        "scaling_factor": autoencoder.scaling_factor,
        "downsample": autoencoder.downsample,
        "resolution": dataset.resolution,
        "items": len(dataset),
        "latent_dtype": dtype,
        "latents_from": (
            {"sample": True, "seed": seed, "batch_size": batch_size} if sample else "posterior" if posterior else "mode"
        ),
    }
    return attrs | (extra or {})


@torch.no_grad()
def cache_latents(
    autoencoder: ImageAutoencoder,
    dataset: SceneDataset,
    dst: str | Path,
    batch_size: int = 64,
    progress: bool = True,
    sample: bool = False,
    seed: int = 0,
    dtype: str = "float32",
    attrs: dict | None = None,
    posterior: bool = False,
) -> Store:
    """Encode every image of ``dataset`` with ``autoencoder`` (on its device) and write the store ``dst``.

    ``posterior``: store the posterior's mean and standard deviation (``latents``, ``latents_std``) so that LSD
    training draws a fresh sample each step; ``sample``: store one posterior sample per image; neither: the mode.

    ``attrs``: more entries for the store's identity (e.g. the source store's path). Returns the finished store.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if sample and posterior:
        raise ValueError("sample and posterior exclude each other: one sample per image, or the posterior to draw from")
    f = autoencoder.downsample
    if dataset.resolution % f:
        raise DataError(f"images of side {dataset.resolution} are not divisible by the autoencoder's factor {f}")
    clash = [k for k in dataset.extra if k in RESERVED]
    if clash:
        raise DataError(f"the dataset's extra field(s) {clash} clash with the latent store's fields {list(RESERVED)}")
    with FolderLock(dst, "data cache-latents"):
        writer = StoreWriter(
            dst, latent_store_attrs(autoencoder, dataset, sample, seed, batch_size, dtype, attrs, posterior)
        )
        if writer.complete:
            return Store(dst)
        device = next(autoencoder.parameters()).device
        was_training = autoencoder.training
        autoencoder.eval()
        n = len(dataset)
        bar = tqdm(
            total=n, initial=writer.count, unit="img", desc="cache latents", disable=not progress, dynamic_ncols=True
        )
        with bar:
            for start in range(writer.count, n, batch_size):
                index = slice(start, min(start + batch_size, n))
                images = dataset[torch.arange(index.start, index.stop)]["image"].to(device)
                items = {"image": _numpy(dataset.images, index)}
                if posterior:
                    latents, std = autoencoder.encode_posterior(images)
                    items["latents_std"] = std.float().cpu().numpy().astype(dtype)
                elif sample:
                    g = torch.Generator(device=device).manual_seed(seed + start)
                    latents = autoencoder.encode(images, sample=True, generator=g)
                else:
                    latents = autoencoder.encode(images, sample=False)
                items["latents"] = latents.float().cpu().numpy().astype(dtype)
                if dataset.labels is not None:
                    items["labels"] = _numpy(dataset.labels, index)
                items.update({k: _numpy(v, index) for k, v in dataset.extra.items()})
                writer.append(items, index.stop)
                bar.update(index.stop - index.start)
        autoencoder.train(was_training)
        return writer.finish()


def cache_store_latents(
    autoencoder: ImageAutoencoder, autoencoder_ref: str, source: Store, dst: str | Path, **options
) -> Store:
    """:func:`cache_latents` of every scene of the store ``source``, whose dataset and crop the cache keeps, as it
    keeps ``autoencoder_ref`` (how LSD training names the autoencoder that decodes the latents). ``options``: those
    of :func:`cache_latents` (``batch_size``, ``posterior``, ``progress``, ...)."""
    attrs = {
        "dataset": source.attrs.get("dataset"),
        "crop": source.attrs.get("crop"),
        "autoencoder_ref": autoencoder_ref,
    }
    return cache_latents(autoencoder, store_dataset(source), dst, attrs=attrs, **options)
