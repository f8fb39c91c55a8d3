"""What every slotlab model shares, and the one protocol of slot models.

:class:`SavedModel`: a config dataclass in, weights out as ``model.safetensors`` beside ``config.json``; the JSON
records the model's class as ``_class_name`` (as diffusers does), so loading never has to guess what a folder
holds. ``from_pretrained`` (huggingface_hub's mixin) loads a folder or a Hub repository, strictly, safetensors
only.

:class:`SlotModel`: the protocol that editing, concepts, probing, pictures and the browser explorer use, whatever
the model kind:

- ``encode(images) -> SlotAttentionOutput`` (slots [B, K, D], attention [B, T, N, K]);
- ``decode(slots)``: the kind's own typed output (broadcast decoder output, images by diffusion, set predictions);
- ``render(slots, ...) -> images`` for kinds that draw images (``draws_images``);
- ``slot_masks(enc, size)``: soft masks [B, K, size, size] (from the attention: :func:`attention_masks`);
- ``slot_width``, ``resolution``, ``image_autoencoder`` (the frozen autoencoder a latent model decodes through).

Shapes: B batch, K slots, D slot width, N = side * side attention inputs, R image side.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from slotlab.errors import ConfigError, DataError
from slotlab.fields import PositiveInt, build
from slotlab.io import atomic_path, atomic_write_text
from slotlab.modules import SlotAttentionOutput

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CLASS_KEY = "_class_name"
MaskSource = Literal["auto", "alpha", "attention"]
MASK_SOURCES: tuple[str, ...] = ("auto", "alpha", "attention")


@dataclass
class Sampling:
    """How a diffusion decoder draws images from slots (ignored by decoders that do not sample)."""

    steps: PositiveInt = 25
    sampler: Literal["dpm", "ddim"] = "dpm"
    guidance: float = 1.0  # classifier-free guidance scale (1: none)


class SavedModel(nn.Module, PyTorchModelHubMixin, library_name="slotlab", tags=["object-centric"]):
    """A model built from a config dataclass (``config_class``) and saved as safetensors + config.json."""

    config_class: ClassVar[type]
    config_file: ClassVar[str] = CONFIG_FILE
    config: Any  # the JSON beside the weights that records the config and the class

    def __init__(self, config: Any):
        super().__init__()
        self.config = config if isinstance(config, self.config_class) else build(self.config_class, config, "config")

    @property
    def resolution(self) -> int:
        """Side of the square images the model takes."""
        return self.config.resolution

    def config_record(self) -> dict:
        """What config.json holds: the config's values and the class that reads them."""
        return {CLASS_KEY: type(self).__name__, **asdict(self.config)}

    def fingerprint(self) -> str:
        """A short hash of the weights: tells whether slots (a concept library, a cache) came from this model."""
        h = hashlib.sha256()
        for name, t in self.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def _save_pretrained(self, save_directory: Path) -> None:
        """Weights and config.json, each written to a temporary file and renamed (never left half-written)."""
        from safetensors.torch import save_model

        model = self.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        with atomic_path(Path(save_directory) / WEIGHTS_FILE) as tmp:
            save_model(model, str(tmp))
        atomic_write_text(Path(save_directory) / CONFIG_FILE, json.dumps(self.config_record(), indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, *, map_location: str = "cpu", strict: bool = True, **kwargs
    ):  # type: ignore[override]
        """A folder written by ``save_pretrained`` (or a Hub repository id): strict loading, safetensors only."""
        with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints where it loads from
            return super().from_pretrained(
                pretrained_model_name_or_path, map_location=map_location, strict=strict, **kwargs
            )


class SlotModel(SavedModel):
    """A model whose images go through slots: CNN (or UNet) features -> Slot Attention -> a decoder or a head.

    Subclasses set ``encoder`` and ``slot_attention`` and define :meth:`decode` (and :meth:`render` when they draw
    images)."""

    draws_images: ClassVar[bool] = False  # render() draws images from slots
    decodes_latents: ClassVar[bool] = False  # it draws through a frozen image autoencoder (image_autoencoder)
    default_mask_source: ClassVar[str] = "attention"
    encoder: Any
    slot_attention: Any

    @property
    def slot_width(self) -> int:
        """Width of the slots the model gives and takes (slot_dim, plus the pose with a slot frame)."""
        return self.config.slot_width

    @property
    def feature_size(self) -> int:
        """Side of the feature grid that Slot Attention attends over."""
        return self.encoder.feature_size

    @property
    def image_autoencoder(self) -> nn.Module | None:
        """The frozen image autoencoder this model decodes through (None: it decodes pixels directly)."""
        return None

    def use_autoencoder(self, autoencoder: nn.Module) -> None:
        """Decode through ``autoencoder`` (models that decode latents)."""
        raise DataError(f"a {type(self).__name__} decodes pixels directly: it has no image autoencoder to set")

    def check_images(self, images: Tensor) -> None:
        r = self.config.resolution
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (r, r):
            raise ValueError(f"expected images [B, 3, {r}, {r}], got {list(images.shape)}")

    def encode(
        self,
        images: Tensor,
        num_slots: int | None = None,
        num_iterations: int | None = None,
        generator: torch.Generator | None = None,
    ) -> SlotAttentionOutput:
        """images [B, 3, R, R] in [-1, 1] -> SlotAttentionOutput (slots [B, K, D], attn [B, T, N, K])."""
        self.check_images(images)
        return self.slot_attention(self.encoder(images), num_slots, num_iterations, generator=generator)

    def decode(self, slots: Tensor):
        """slots [B, K, D] -> the kind's typed decoder output."""
        raise NotImplementedError

    def render(
        self,
        slots: Tensor,
        sampling: Sampling | None = None,
        generator: torch.Generator | None = None,
        keep_from: Tensor | None = None,
        region: Tensor | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """slots [B, K', D] (any K') -> images [B, 3, R, R] in [-1, 1]; with ``keep_from`` images and ``region``
        bool [B, R, R], only the region is drawn from the slots and the rest is ``keep_from``'s. ``progress(i, n)``
        is told how far a sampling decoder has got."""
        raise DataError(f"a {type(self).__name__} does not draw images from its slots")

    def slot_masks(self, enc: SlotAttentionOutput, size: int, source: str = "auto") -> Tensor:
        """Soft masks [B, K, size, size] that sum to 1 over the slots: the last iteration's attention, resized
        (``source`` "attention", or "auto"). Models with decoder masks also accept "alpha"."""
        if source not in MASK_SOURCES:
            raise ConfigError(f"unknown mask source {source!r}: use one of {', '.join(MASK_SOURCES)}")
        if source == "alpha":
            raise ConfigError(
                f"alpha masks need an object discovery model; a {type(self).__name__}'s masks come from the attention"
            )
        return attention_masks(enc.attn[:, -1], size)

    def mask_source(self, source: str = "auto") -> str:
        """What ``source`` "auto" means for this model: "alpha" (decoder masks) or "attention"."""
        return self.default_mask_source if source == "auto" else source


def resize_masks(masks: Tensor, size: int) -> Tensor:
    """Masks [B, K, h, w] -> [B, K, size, size]: area averaging to shrink, bilinear (pixel centres) to grow; both
    keep the masks summing to 1 over K."""
    if masks.shape[-2:] == (size, size):
        return masks.float()
    if size < masks.shape[-1]:
        return F.interpolate(masks.float(), size=(size, size), mode="area")
    return F.interpolate(masks.float(), size=(size, size), mode="bilinear", align_corners=False)


def attention_masks(attn: Tensor, size: int) -> Tensor:
    """Attention [B, N, K] over a square grid (N = side * side, softmax over K) -> masks [B, K, size, size]."""
    b, n, k = attn.shape
    side = math.isqrt(n)
    if side * side != n:
        raise DataError(f"attention over {n} inputs is not a square grid")
    return resize_masks(attn.transpose(1, 2).reshape(b, k, side, side), size)


def mask_labels(masks: Tensor) -> Tensor:
    """Soft masks [B, K, H, W] -> the argmax slot of every pixel [B, H, W]."""
    # max's indices are argmax's (the first maximum), many times faster over a non-last dim on CPU
    return masks.max(dim=1).indices
