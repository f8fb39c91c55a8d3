"""Latent Slot Diffusion (Jiang et al. 2023): Slot Attention encoder + slot-conditioned latent diffusion decoder.

Images [B, 3, R, R] in [-1, 1] -> backbone -> position embedding (pixel-centre grid), LN, MLP -> Slot Attention
(eps 1e-6) -> LN + Linear to the cross-attention width = the condition of a UNet that denoises the image's
latents (from a frozen image autoencoder, see :mod:`slotlab.models.image_autoencoder`). Training noise: DDPM,
1000 steps, linear betas 0.00085 to 0.012, epsilon prediction, MSE. Sampling: DDIM or DPM-Solver (diffusers
schedulers), optional classifier-free guidance when trained with condition dropout.

Shapes: B batch, K slots, D slot width, E cross-attention width, C latent channels, h latent side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.errors import DataError
from slotlab.fields import Fraction, NonNegativeInt, PositiveFloat, PositiveInt
from slotlab.models.base import Sampling, SlotModel
from slotlab.models.image_autoencoder import ImageAutoencoder, load_image_autoencoder
from slotlab.modules import SlotAttention
from slotlab.modules.backbones import UNetBackbone
from slotlab.modules.encoders import FeatureEncoder, conv_stack
from slotlab.modules.slot_attention import SlotInit
from slotlab.modules.slot_unet import SlotConditionedUNet, position_embedding_kind


@dataclass
class LatentSlotDiffusionConfig:
    """Everything that defines the architecture (saved as config.json beside the weights)."""

    resolution: PositiveInt = 256  # image side seen by the encoder (and by the autoencoder)
    autoencoder: str = "stabilityai/stable-diffusion-2-1"  # hub id (subfolder vae) or a slotlab autoencoder folder
    latent_channels: PositiveInt = 4
    latent_size: PositiveInt = 32  # resolution / the autoencoder's downsampling factor
    # encoder backbone: "unet" (official feature net) or "cnn" (strided convs, for CPUs)
    backbone: Literal["unet", "cnn"] = "unet"
    backbone_channels: list[PositiveInt] = field(default_factory=lambda: [128, 128, 256, 512])
    backbone_out: PositiveInt = 192
    backbone_stride: PositiveInt = 4  # unet: stem stride; cnn: ignored (use backbone_strides)
    backbone_strides: list[PositiveInt] | None = None  # cnn only
    backbone_kernel: PositiveInt = 5  # cnn only
    backbone_layers_per_block: PositiveInt = 1  # unet only
    backbone_norm_groups: PositiveInt = 16  # unet only
    # Slot Attention
    num_slots: PositiveInt = 24
    num_iterations: PositiveInt = 3
    eval_iterations: PositiveInt | None = None  # T in eval mode (validation, slotlab eval, inference); None: as trained
    slot_dim: PositiveInt = 192
    mlp_hidden: PositiveInt = 192
    slot_init: SlotInit = "gaussian"
    implicit_grad: bool = False  # gradients through the last iteration only (Chang et al. 2022); off in the paper
    slot_heads: PositiveInt = 1  # multi-head Slot Attention (heads of width slot_dim / slot_heads); 1 in the paper
    attn_eps: PositiveFloat = 1e-6
    # decoder
    decoder_channels: list[PositiveInt] = field(default_factory=lambda: [192, 384, 768, 768])
    decoder_layers_per_block: PositiveInt = 2
    decoder_attention_levels: PositiveInt = 3
    decoder_heads: PositiveInt = 24
    decoder_norm_groups: PositiveInt = 24
    cross_attention_dim: PositiveInt = 192
    # embedding added before the decoder's self- and cross-attention: "cartesian" (official), "learned" or "none"
    position_embedding: Literal["cartesian", "learned", "none"] | bool = "cartesian"  # True/False (older configs)
    # noise
    num_train_timesteps: PositiveInt = 1000
    beta_start: PositiveFloat = 0.00085
    beta_end: PositiveFloat = 0.012
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    # what the decoder predicts: the noise ("epsilon", the paper), the velocity ("v_prediction") or the clean latents
    # ("sample"); predicting the latents, it must read the slots wherever the noise hides the scene
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    # the training timesteps: "uniform" over [0, num_train_timesteps) (the paper), or "logit_normal": t / T the
    # sigmoid of a normal (timestep_logit_mean, timestep_logit_std) draw (Esser et al. 2024), fewer of the near-clean
    # steps that the decoder draws without the slots when the mean is above 0
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    timestep_logit_mean: float = 0.0
    timestep_logit_std: PositiveFloat = 1.0
    cond_dropout: Fraction = 0.0  # probability of dropping an image's slots in training (classifier-free guidance)
    # learned condition tokens beside the slots ("register" or "sink" slots, CODA): the decoder can draw from them what
    # no object owns (the ground), so the object slots need not hold it; they are not slots of Slot Attention and get
    # no mask. 0 (off) in the paper presets
    register_slots: NonNegativeInt = 0

    def __post_init__(self):
        self.position_embedding = position_embedding_kind(self.position_embedding)

    @property
    def slot_width(self) -> int:
        """Width of the slots the model gives and takes (LSD's slots carry no pose)."""
        return self.slot_dim

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LatentSlotDiffusionOutput:
    loss: Tensor | None  # the MSE of the decoder's prediction (config.prediction_type)
    slots: Tensor  # [B, K, D]
    attn: Tensor  # [B, T, N, K] Slot Attention's attention per iteration
    noise_pred: Tensor | None = None  # [B, C, h, w] the decoder's prediction: noise, velocity or latents


class LatentSlotDiffusion(SlotModel, tags=["lsd"]):
    """The LSD encoder and decoder. The image autoencoder is separate and frozen (latents come in); it is loaded
    from ``config.autoencoder`` when first needed (:attr:`image_autoencoder`) and kept out of the weights."""

    config_class = LatentSlotDiffusionConfig
    config: LatentSlotDiffusionConfig
    draws_images = decodes_latents = True

    def __init__(self, config: LatentSlotDiffusionConfig):
        super().__init__(config)
        from diffusers import DDPMScheduler

        c = self.config
        if c.backbone == "unet":
            backbone: nn.Module = UNetBackbone(
                c.resolution,
                c.backbone_channels[0],
                c.backbone_stride,
                c.backbone_channels,
                c.backbone_layers_per_block,
                c.backbone_out,
                c.backbone_norm_groups,
            )
            channels, side = c.backbone_out, int(backbone.feature_size)  # type: ignore[arg-type]
        else:
            strides = c.backbone_strides or [1] * len(c.backbone_channels)
            backbone = conv_stack(3, c.backbone_channels, c.backbone_kernel, strides)
            channels, side = c.backbone_channels[-1], c.resolution // math.prod(strides)
        self.encoder = FeatureEncoder(backbone, channels, side, c.slot_dim, ln_eps=1e-5, pixel_centres=True)
        self.slot_attention = SlotAttention(
            c.num_slots,
            c.slot_dim,
            num_iterations=c.num_iterations,
            eval_iterations=c.eval_iterations,
            mlp_hidden=c.mlp_hidden,
            eps=c.attn_eps,
            ln_eps=1e-5,
            init=c.slot_init,
            implicit_grad=c.implicit_grad,
            num_heads=c.slot_heads,
        )
        self.to_condition = nn.Sequential(nn.LayerNorm(c.slot_dim), nn.Linear(c.slot_dim, c.cross_attention_dim))
        registers = torch.randn(1, c.register_slots, c.cross_attention_dim) * 0.02 if c.register_slots else None
        self.registers = nn.Parameter(registers) if registers is not None else None
        self.decoder = SlotConditionedUNet(
            c.latent_size,
            c.latent_channels,
            c.decoder_channels,
            c.decoder_layers_per_block,
            c.decoder_attention_levels,
            c.cross_attention_dim,
            c.decoder_heads,
            c.decoder_norm_groups,
            c.position_embedding,
        )
        self.noise_scheduler: Any = DDPMScheduler(
            num_train_timesteps=c.num_train_timesteps,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            beta_schedule=c.beta_schedule,
            prediction_type=c.prediction_type,
            clip_sample=False,
        )  # latents are not in [-1, 1]

        self._autoencoder: list[ImageAutoencoder] = []  # a list: not a submodule, not in the state dict

    @property
    def image_autoencoder(self) -> ImageAutoencoder:
        """The frozen image autoencoder (``config.autoencoder``), loaded on first use, on this model's device."""
        if not self._autoencoder:
            self.use_autoencoder(load_image_autoencoder(self.config.autoencoder))
        ae = self._autoencoder[0]
        device = next(self.parameters()).device
        if next(ae.parameters()).device != device:
            ae.to(device)
        return ae

    def use_autoencoder(self, autoencoder: nn.Module) -> None:
        """Decode through ``autoencoder`` (frozen, eval mode) instead of loading ``config.autoencoder``."""
        assert isinstance(autoencoder, ImageAutoencoder), type(autoencoder)
        self._autoencoder[:] = [autoencoder.eval().requires_grad_(False)]

    def condition(self, slots: Tensor, keep: Tensor | None = None) -> Tensor:
        """slots [B, K, D] -> the decoder's cross-attention input [B, K + R, E] (R register slots, appended).
        ``keep`` [B, 1, 1] (0 or 1) drops an image's slots (classifier-free guidance); registers always stay."""
        cond = self.to_condition(slots)
        if keep is not None:
            cond = cond * keep.to(cond.dtype)
        if self.registers is not None:
            cond = torch.cat([cond, self.registers.to(cond.dtype).expand(cond.shape[0], -1, -1)], dim=1)
        return cond

    def forward(
        self,
        images: Tensor,
        latents: Tensor,
        generator: torch.Generator | None = None,
        num_iterations: int | None = None,
        num_slots: int | None = None,
    ) -> LatentSlotDiffusionOutput:
        """One training step's loss: noise the latents at a random t, predict the noise (or the velocity, or the
        latents: ``config.prediction_type``) from the slots."""
        enc = self.encode(images, num_slots, num_iterations, generator)
        keep = None
        if self.training and self.config.cond_dropout > 0:
            b = enc.slots.shape[0]
            keep = torch.rand(b, 1, 1, device=enc.slots.device, generator=generator) >= self.config.cond_dropout
        cond = self.condition(enc.slots, keep)
        noise = torch.randn(latents.shape, device=latents.device, dtype=latents.dtype, generator=generator)
        t = self.training_timesteps(latents.shape[0], latents.device, generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        pred = self.decoder(noisy, t, cond)
        loss = F.mse_loss(pred.float(), self.target(latents, noise, t).float())
        return LatentSlotDiffusionOutput(loss, enc.slots, enc.attn, pred)

    def training_timesteps(self, b: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """The timesteps of a training batch, [b] integers in [0, T), drawn as ``config.timestep_sampling`` says."""
        c = self.config
        if c.timestep_sampling == "uniform":
            return torch.randint(0, c.num_train_timesteps, (b,), device=device, generator=generator)
        z = torch.randn(b, device=device, generator=generator) * c.timestep_logit_std + c.timestep_logit_mean
        return (torch.sigmoid(z) * c.num_train_timesteps).long().clamp(max=c.num_train_timesteps - 1)

    @torch.no_grad()
    def slot_reliance(self, latents: Tensor, slots: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """How much the decoder leans on the slots: the diffusion loss (on ``config.prediction_type``'s target) when
        every image of the batch is given the next image's slots, relative to the loss with its own (same noise and
        timesteps, uniform whatever ``config.timestep_sampling``, so runs compare), minus 1. Near 0 when the decoder
        draws without reading the slots, and then the slots learn little from it. latents [B, C, h, w], slots [B, K, D]
        (B >= 2) -> a scalar."""
        b = latents.shape[0]
        noise = torch.randn(latents.shape, device=latents.device, dtype=latents.dtype, generator=generator)
        t = torch.randint(0, self.config.num_train_timesteps, (b,), device=latents.device, generator=generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        cond = torch.cat([self.condition(slots), self.condition(slots.roll(1, dims=0))])
        pred = self.decoder(noisy.repeat(2, 1, 1, 1), t.repeat(2), cond).float()
        target = self.target(latents, noise, t).float().repeat(2, 1, 1, 1)
        own, other = ((pred - target) ** 2).mean(dim=(1, 2, 3)).chunk(2)
        return other.mean() / own.mean() - 1

    def target(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the decoder learns to predict from the latents noised with ``noise`` at ``t``."""
        kind = self.config.prediction_type
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        return latents if kind == "sample" else noise

    def sampler(self, kind: str = "dpm"):
        """A diffusers scheduler for sampling with the training noise schedule: "dpm" (DPM-Solver++) or "ddim"."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        cls = {"dpm": DPMSolverMultistepScheduler, "ddim": DDIMScheduler}.get(kind)
        if cls is None:
            raise ValueError(f"unknown sampler {kind!r}: use 'dpm' or 'ddim'")
        return cls.from_config(self.noise_scheduler.config)

    @torch.no_grad()
    def generate(
        self,
        slots: Tensor,
        steps: int = 25,
        sampler: str = "dpm",
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
        known: Tensor | None = None,
        keep: Tensor | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """Decode latents [B, C, h, w] from slots [B, K, D] by reverse diffusion from noise (``progress(i, n)`` after
        every step).

        ``guidance`` > 1 mixes in the unconditional prediction (zero condition, as in training with
        ``cond_dropout``): ``pred = pred_u + guidance * (pred_c - pred_u)`` (noise, velocity or latents, as trained).

        ``known`` latents [B, C, h, w] with ``keep`` [B, 1, h, w] in [0, 1] (1 = keep): blended sampling, as in
        diffusers' inpainting with a plain UNet (Avrahami et al. 2023, Blended Latent Diffusion). After every
        step the kept cells are replaced by ``known`` noised to the next timestep with the starting noise, and by
        ``known`` itself at the end, so only the rest is generated, consistent with the kept part and the slots.
        """
        c = self.config
        if (known is None) != (keep is None):
            raise ValueError("give both known and keep, or neither")
        cond = self.condition(slots)
        uncond = (
            self.condition(slots, torch.zeros(slots.shape[0], 1, 1, device=slots.device)) if guidance != 1.0 else None
        )
        scheduler = self.sampler(sampler)
        scheduler.set_timesteps(steps, device=slots.device)
        shape = (slots.shape[0], c.latent_channels, c.latent_size, c.latent_size)
        noise = torch.randn(shape, device=slots.device, dtype=cond.dtype, generator=generator)
        if (
            known is not None
            and keep is not None
            and (known.shape != noise.shape or keep.shape != (shape[0], 1, *shape[2:]))
        ):
            raise ValueError(
                f"known {list(known.shape)} and keep {list(keep.shape)} must be {list(shape)} and "
                f"{[shape[0], 1, *shape[2:]]}"
            )
        x = noise * scheduler.init_noise_sigma
        timesteps = scheduler.timesteps
        for step, t in enumerate(timesteps):
            inp = scheduler.scale_model_input(x, t)
            ts = t.expand(x.shape[0]).to(slots.device)
            if uncond is not None:
                pred_c, pred_u = self.decoder(
                    torch.cat([inp, inp]), torch.cat([ts, ts]), torch.cat([cond, uncond])
                ).chunk(2)
                pred = pred_u + guidance * (pred_c - pred_u)
            else:
                pred = self.decoder(inp, ts, cond)
            x = scheduler.step(pred, t, x).prev_sample
            if known is not None and keep is not None:
                last = step == len(timesteps) - 1
                target = known if last else scheduler.add_noise(known, noise, timesteps[step + 1 : step + 2])
                x = torch.lerp(x, target.to(x.dtype), keep.to(x.dtype))
            if progress is not None:
                progress(step + 1, len(timesteps))
        return x

    def decode(
        self, slots: Tensor, sampling: Sampling | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """slots [B, K', D] -> images [B, 3, R, R] in [-1, 1]: reverse diffusion from noise, then the image
        autoencoder's decoder."""
        return self.render(slots, sampling, generator)

    @torch.no_grad()
    def render(
        self,
        slots: Tensor,
        sampling: Sampling | None = None,
        generator: torch.Generator | None = None,
        keep_from: Tensor | None = None,
        region: Tensor | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """As :meth:`decode`; with ``keep_from`` images and ``region`` bool [B, R, R], blended sampling over the
        latents of ``keep_from`` (every latent cell that touches the region is generated), so the drawn region fits
        its surroundings; outside those cells the image is ``keep_from``'s, pixel for pixel."""
        s = sampling or Sampling()
        ae = self.image_autoencoder
        known = keep = None
        if region is not None:
            if keep_from is None:
                raise DataError("a region to redraw needs the images to keep the rest from")
            known = ae.encode(keep_from, sample=False).float()
            keep = 1 - F.adaptive_max_pool2d(region[:, None].float(), known.shape[-2:])
        latents = self.generate(
            slots,
            steps=s.steps,
            sampler=s.sampler,
            guidance=s.guidance,
            generator=generator,
            known=known,
            keep=keep,
            progress=progress,
        )
        images = ae.decode(latents.float(), clamp=True).float()
        if keep is None or keep_from is None:
            return images
        kept_pixels = F.interpolate(keep, size=images.shape[-2:], mode="nearest")  # [B, 1, R, R] 1: kept cell
        return torch.lerp(images, keep_from.to(images), kept_pixels)
