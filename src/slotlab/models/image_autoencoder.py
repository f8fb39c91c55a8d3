"""The image autoencoder of Latent Slot Diffusion: a diffusers ``AutoencoderKL`` (KL-regularised VAE).

Images [B, 3, H, W] in [-1, 1] -> latents [B, C, H/f, W/f] (times ``scaling_factor``, so that they have about unit
standard deviation, as the diffusion model expects) -> images. Either the pretrained Stable Diffusion VAE (KL-f8,
``scaling_factor`` 0.18215 from its config) or a small one of our own, built from :class:`ImageAutoencoderConfig`
and trained with MSE + a weak KL term (:class:`slotlab.training.autoencoder.AutoencoderModule`); the latter's
scaling factor is estimated after training as 1 / std of its latents (:meth:`ImageAutoencoder.estimate_scaling_factor`).

Saved folder (:meth:`ImageAutoencoder.save_pretrained`): the VAE as diffusers writes it, so diffusers' own tools
load ``DIR/vae`` as is::

    DIR/image_autoencoder.json                   our config (scaling_factor included once estimated) and, as every
                                                 slotlab model's config file, "_class_name"
    DIR/vae/config.json                          the diffusers AutoencoderKL config
    DIR/vae/diffusion_pytorch_model.safetensors  its weights (safetensors only, never pickles)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.errors import ConfigError, DataError
from slotlab.fields import NonNegativeFloat, PositiveFloat, PositiveInt, build
from slotlab.io import atomic_write_text, read_json
from slotlab.models.base import SavedModel

CONFIG_FILE = "image_autoencoder.json"
VAE_FOLDER = "vae"


@dataclass
class ImageAutoencoderConfig:
    """A pretrained diffusers VAE (``pretrained`` set) or the architecture of our own (``pretrained`` None)."""

    pretrained: str | None = None  # a Hugging Face hub id or a local folder (e.g. "stabilityai/stable-diffusion-2-1")
    subfolder: str | None = "vae"  # the VAE's folder inside ``pretrained``
    resolution: PositiveInt = 64  # side of the images it is used at
    # our own autoencoder (ignored when ``pretrained`` is set): downsampling factor f = 2 ** (len - 1)
    block_out_channels: list[PositiveInt] = field(default_factory=lambda: [32, 64, 64])  # [64, 128, 256, 256]: f = 8
    layers_per_block: PositiveInt = 1
    latent_channels: PositiveInt = 4
    norm_num_groups: PositiveInt = 16  # GroupNorm groups; must divide every entry of block_out_channels
    # latents = z * scaling_factor. None: the pretrained VAE's own value (0.18215 for SD), or for our own
    # autoencoder 1.0 until it is estimated after training (1 / std of the latents) and written here
    scaling_factor: PositiveFloat | None = None
    kl_weight: NonNegativeFloat = 1e-6  # weight of the KL term (see ImageAutoencoder.forward for its normalisation)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageAutoencoderOutput:
    reconstruction: Tensor  # [B, 3, H, W] in [-1, 1] space (not clamped)
    latents: Tensor  # [B, C, H/f, W/f] scaled latents that were decoded (a posterior sample or its mode)
    mse: Tensor  # scalar: mean squared error to the input
    kl: Tensor  # scalar: KL(q(z|x) || N(0, I)) summed over latent values, averaged over images
    loss: Tensor  # scalar: mse + kl_weight * kl / (3 H W)


class ImageAutoencoder(SavedModel, tags=["autoencoder"]):
    """A diffusers ``AutoencoderKL`` with the scaling factor applied in :meth:`encode` and undone in :meth:`decode`.

    ``vae`` (an ``AutoencoderKL``) skips building or loading.
    """

    config_class = ImageAutoencoderConfig
    config_file = CONFIG_FILE
    config: ImageAutoencoderConfig
    vae: Any  # a diffusers AutoencoderKL

    def __init__(self, config: ImageAutoencoderConfig, vae: nn.Module | None = None):
        super().__init__(config)
        config = self.config
        if vae is None:
            vae = load_vae(config.pretrained, config.subfolder) if config.pretrained else build_vae(config)
        self.vae = vae.train()  # diffusers' from_pretrained returns eval mode; modules start in training mode
        # the scaling factor also travels in every state dict (Lightning checkpoints), NaN while not yet estimated
        scale = config.scaling_factor if config.scaling_factor is not None else self._default_scaling()
        self.register_buffer("latent_scale", torch.tensor(math.nan if scale is None else scale, dtype=torch.float64))

    # -- properties -------------------------------------------------------------------------------------------

    @property
    def downsample(self) -> int:
        """f: image side / latent side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def latent_size(self) -> int:
        """Side of the latents of images at ``config.resolution``."""
        return self.config.resolution // self.downsample

    @property
    def scaling_factor(self) -> float:
        """What latents are multiplied by: the config's value, else the VAE's own (1.0 for ours until estimated)."""
        if self.config.scaling_factor is not None:
            return self.config.scaling_factor
        return float(self.vae.config.scaling_factor)

    @property
    def needs_scaling_estimate(self) -> bool:
        """True for our own autoencoder while its scaling factor has not been estimated."""
        return self.config.pretrained is None and self.config.scaling_factor is None

    def _default_scaling(self) -> float | None:
        return float(self.vae.config.scaling_factor) if self.config.pretrained else None

    def _shift(self) -> float:
        shift = getattr(self.vae.config, "shift_factor", None)  # set by some newer VAEs (SD3, Flux); None for SD
        return 0.0 if shift is None else float(shift)

    # -- encode / decode --------------------------------------------------------------------------------------

    def posterior(self, images: Tensor):
        """images [B, 3, H, W] in [-1, 1] -> diffusers' DiagonalGaussianDistribution over unscaled latents."""
        self._check_images(images)
        return self.vae.encode(images).latent_dist

    def encode(self, images: Tensor, sample: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """images [B, 3, H, W] -> scaled latents [B, C, H/f, W/f]: a posterior sample, or its mode if not ``sample``."""
        dist = self.posterior(images)
        z = dist.sample(generator) if sample else dist.mode()
        return (z - self._shift()) * self.scaling_factor

    def encode_posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [B, 3, H, W] -> the scaled posterior's mean and standard deviation, [B, C, H/f, W/f] each:
        ``mean + std * eps`` with ``eps ~ N(0, 1)`` is a sample :meth:`encode` draws."""
        dist = self.posterior(images)
        return (dist.mode() - self._shift()) * self.scaling_factor, dist.std * self.scaling_factor

    def decode(self, latents: Tensor, clamp: bool = False) -> Tensor:
        """Scaled latents [B, C, h, w] -> images [B, 3, h f, w f] in [-1, 1] space (clamped if ``clamp``)."""
        images = self.vae.decode(latents / self.scaling_factor + self._shift()).sample
        return images.clamp(-1, 1) if clamp else images

    def forward(
        self, images: Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> ImageAutoencoderOutput:
        """Reconstruct and compute the training loss.

        The KL is summed over latent values per image (diffusers' ``kl()``), then averaged over images; in the
        loss it is divided by the number of values per image 3 H W, because the MSE is a mean over them: so
        ``kl_weight`` keeps the meaning it has in Latent Diffusion, whose losses are per-image sums (1e-6 there).
        """
        dist = self.posterior(images)
        z = dist.sample(generator) if sample else dist.mode()
        reconstruction = self.vae.decode(z).sample
        mse = F.mse_loss(reconstruction.float(), images.float())
        kl = dist.kl().float().mean()
        loss = mse + self.config.kl_weight * kl / images[0].numel()
        latents = (z - self._shift()) * self.scaling_factor
        return ImageAutoencoderOutput(reconstruction, latents, mse, kl, loss)

    def _check_images(self, images: Tensor) -> None:
        f = self.downsample
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2] % f or images.shape[-1] % f:
            raise ValueError(f"expected images [B, 3, H, W] with H and W divisible by {f}, got {list(images.shape)}")

    # -- scaling factor ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def latent_moments(self, batches: Iterable, max_batches: int | None = 16, seed: int = 0) -> Tensor:
        """Count, sum and sum of squares (float64 [3]) of unscaled posterior samples over up to ``max_batches``.

        ``batches`` yields images [B, 3, H, W] or dicts with an ``"image"`` entry. Samples (not modes) with a
        seeded generator: the diffusion model is trained on samples, and so the statistics are reproducible.
        """
        device = next(self.parameters()).device
        g = torch.Generator(device=device).manual_seed(seed)
        moments = torch.zeros(3, dtype=torch.float64, device=device)
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            images = (batch["image"] if isinstance(batch, dict) else batch).to(device)
            z = self.posterior(images).sample(g).double() - self._shift()
            count = torch.tensor(z.numel(), dtype=torch.float64, device=device)
            moments += torch.stack([count, z.sum(), z.square().sum()])
        return moments

    def set_scaling_factor(self, value: float) -> None:
        """Use (and remember in the config, the VAE's config and the state dict) this scaling factor."""
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"the scaling factor must be positive and finite, got {value}")
        self.config.scaling_factor = value
        self.vae.register_to_config(scaling_factor=value)
        self.latent_scale.fill_(value)  # type: ignore[operator]

    def scaling_from_moments(self, moments: Tensor) -> float:
        """1 / std from :meth:`latent_moments` (maybe summed over DDP ranks), stored with :meth:`set_scaling_factor`."""
        n, s, sq = moments.double().tolist()
        if n < 2:
            raise DataError("no latents to estimate the scaling factor from (empty data)")
        var = (sq - s * s / n) / (n - 1)
        value = 1.0 / math.sqrt(max(var, 1e-24))
        self.set_scaling_factor(value)
        return float(self.config.scaling_factor or value)

    def estimate_scaling_factor(self, batches: Iterable, max_batches: int | None = 16, seed: int = 0) -> float:
        """Set the scaling factor to 1 / std of the unscaled latents (as Latent Diffusion does) and return it."""
        return self.scaling_from_moments(self.latent_moments(batches, max_batches, seed))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        value = float(self.latent_scale)
        if math.isfinite(value) and self.config.scaling_factor != value:  # a checkpoint taken after estimation
            self.config.scaling_factor = value
            self.vae.register_to_config(scaling_factor=value)
        elif not math.isfinite(value) and self.config.scaling_factor is not None:  # keep ours over an older NaN
            self.latent_scale.fill_(self.config.scaling_factor)

    # -- saving / loading -------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:  # type: ignore[override]
        """Write the VAE (safetensors + its config) to ``DIR/vae`` and our config to ``DIR/image_autoencoder.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(directory / VAE_FOLDER, safe_serialization=True)
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.config_record(), indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **_) -> ImageAutoencoder:  # type: ignore[override]
        """Load what :meth:`save_pretrained` wrote (the ``pretrained`` entry is kept as a record, not reloaded)."""
        directory = Path(directory)
        values = read_json(directory / CONFIG_FILE, f"{directory} holds no saved image autoencoder (no {CONFIG_FILE})")
        try:
            config = build(ImageAutoencoderConfig, values, str(directory / CONFIG_FILE))
        except ConfigError as e:
            raise DataError(str(e)) from None
        return cls(config, vae=load_vae(str(directory), VAE_FOLDER))

    def fingerprint(self) -> str:
        """A short hash of the weights and scaling factor: identifies the autoencoder in cached-latent stores."""
        h = hashlib.sha256(repr(self.scaling_factor).encode())
        for name, t in self.vae.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def load_image_autoencoder(
    name: str | Path, subfolder: str | None = "vae", resolution: int | None = None, key: str = "model.autoencoder"
) -> ImageAutoencoder:
    """A folder written by :meth:`ImageAutoencoder.save_pretrained`, else a pretrained diffusers VAE: a hub id or a
    local diffusers folder, with the VAE in ``subfolder`` (``resolution`` only fills in the config's record).
    ``key``: the setting that names it, for the message when it cannot be had."""
    if (Path(name).expanduser() / CONFIG_FILE).is_file():
        return ImageAutoencoder.from_pretrained(Path(name).expanduser())
    check_autoencoder_available(str(name), subfolder, key)
    config = ImageAutoencoderConfig(pretrained=str(name), subfolder=subfolder)
    if resolution is not None:
        config.resolution = resolution
    return ImageAutoencoder(config, vae=load_vae(str(name), subfolder, key))


def build_vae(config: ImageAutoencoderConfig) -> Any:
    """Our own KL autoencoder: one DownEncoderBlock2D / UpDecoderBlock2D per entry of ``block_out_channels``."""
    from diffusers import AutoencoderKL

    channels = list(config.block_out_channels)
    if not channels:
        raise ConfigError("model.block_out_channels must not be empty")
    bad = [c for c in channels if c % config.norm_num_groups]
    if bad:
        raise ConfigError(f"model.norm_num_groups = {config.norm_num_groups} does not divide block_out_channels {bad}")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.resolution,
        scaling_factor=1.0,
    )


def _looks_like_path(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~", "\\")) or name.count("/") > 1


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub can be reached at all (offline mode set, no DNS, no route: False, at once)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_message(name: str, subfolder: str | None, key: str, reason: str) -> str:
    include = f" --include '{subfolder}/*'" if subfolder else ""
    sub = f"{subfolder}/" if subfolder else ""
    where = f"{name} (subfolder {subfolder})" if subfolder else name
    return (
        f"cannot load the VAE {where}: {reason}; on a machine with internet run `hf download {name}{include}` and "
        "copy the cache ($HF_HOME/hub, default ~/.cache/huggingface/hub) here, or set "
        f"{key} to a local folder holding {sub}config.json and {sub}diffusion_pytorch_model.safetensors"
    )


def check_autoencoder_available(name: str, subfolder: str | None = "vae", key: str = "model.autoencoder") -> None:
    """A one-line :class:`DataError`, at once, when the autoencoder ``name`` can be neither read from disk (a slotlab
    or diffusers folder, the Hugging Face cache) nor downloaded; ``key`` is the setting that names it."""
    folder = Path(name).expanduser()
    if (folder / CONFIG_FILE).is_file() or (folder / (subfolder or "") / "config.json").is_file():
        return
    if _looks_like_path(name):
        raise DataError(
            f"{key}={name}: not a saved image autoencoder nor a diffusers folder (no {CONFIG_FILE} or "
            f"{subfolder or '.'}/config.json)"
        )
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, f"{subfolder}/config.json" if subfolder else "config.json")
    if isinstance(cached, str) or _hub_reachable():
        return
    raise DataError(
        _offline_message(name, subfolder, key, "not in the Hugging Face cache and the Hub cannot be reached")
    )


def load_vae(name: str, subfolder: str | None = "vae", key: str = "model.pretrained") -> Any:
    """``AutoencoderKL.from_pretrained`` from the hub cache or a local folder, safetensors only.

    Raises :class:`DataError` with one line saying what to fetch when it is not there (e.g. offline), at once:
    the cache is tried first, and the Hub only if it can be reached. ``key``: the setting that names the VAE.
    """
    from diffusers import AutoencoderKL
    from diffusers.utils import is_accelerate_available

    local = _looks_like_path(name)
    where = f"{name} (subfolder {subfolder})" if subfolder else name
    if local:
        folder = Path(name).expanduser() / (subfolder or "")
        if not (folder / "config.json").is_file():
            raise DataError(f"cannot load the VAE {where}: {folder / 'config.json'} not found")
        name = str(Path(name).expanduser())
    kwargs = dict(subfolder=subfolder, use_safetensors=True, low_cpu_mem_usage=is_accelerate_available())
    try:
        return AutoencoderKL.from_pretrained(name, local_files_only=not local, **kwargs)
    except (OSError, ValueError) as e:  # not cached: OSError; huggingface_hub's errors derive from it
        reason = " ".join(str(e).split())[:200]
        if local:
            raise DataError(f"cannot load the VAE {where}: {reason}") from None
    if not _hub_reachable():
        raise DataError(
            _offline_message(name, subfolder, key, "not in the Hugging Face cache and the Hub cannot be reached")
        )
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # no retry chatter: a failure is reported in one line below
    try:
        return AutoencoderKL.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise DataError(_offline_message(name, subfolder, key, f"it could not be downloaded ({reason})")) from None
    finally:
        hub_logger.setLevel(level)
