"""Lightning module for Latent Slot Diffusion: the slot encoder and the diffusion decoder train jointly on the
epsilon loss over latents of a frozen image autoencoder. Validation (the kind's evaluator) segments with the last
iteration's attention and reports FG-ARI, mBO and mIoU (each over objects and over images) and the binding
diagnostics beside the validation loss."""

from __future__ import annotations

from pathlib import Path

import torch

from slotlab.data.store import Store, is_store
from slotlab.errors import ConfigError
from slotlab.models.image_autoencoder import check_autoencoder_available
from slotlab.training.base import SlotModule


class LSDModule(SlotModule):
    """Trains a :class:`~slotlab.models.lsd.LatentSlotDiffusion`. Batches may carry cached ``latents`` (with
    ``latents_std``, a cached posterior: a fresh sample is drawn each step); otherwise the model's frozen image
    autoencoder (loaded on first use, never optimised nor saved in checkpoints) encodes the images on the fly
    (posterior samples)."""

    @classmethod
    def check_data(cls, config, train_set) -> None:
        """Without cached latents the autoencoder must be at hand (one line at once if not); latents cached by one
        autoencoder must be decoded by the same one: refuse a mismatch."""
        super().check_data(config, train_set)
        if "latents" not in train_set.extra:
            check_autoencoder_available(config.model.autoencoder)
        if not config.data.path or not is_store(Path(config.data.path).expanduser()):
            return
        attrs = Store(Path(config.data.path).expanduser(), allow_incomplete=True).attrs
        if attrs.get("kind") != "latents":
            return
        ref, mine = attrs.get("autoencoder_ref"), config.model.autoencoder
        same = ref is not None and (
            ref == mine or Path(ref).expanduser().resolve() == Path(mine).expanduser().resolve()
        )
        if not same:
            raise ConfigError(
                f"{config.data.path} holds latents of the autoencoder {ref!r} but model.autoencoder is "
                f"{mine!r}; set model.autoencoder={ref}"
            )
        down = attrs.get("downsample")
        if down and config.model.resolution // down != config.model.latent_size:
            raise ConfigError(
                f"model.latent_size={config.model.latent_size} but the cached latents are "
                f"{config.model.resolution // down}x{config.model.resolution // down}"
            )

    @torch.no_grad()
    def latents(self, batch) -> torch.Tensor:
        if "latents_std" in batch:  # the sample the encoder would draw: mean + std * eps, eps from the global stream
            mean = batch["latents"].float()
            return mean + batch["latents_std"].float() * torch.randn(mean.shape, device=mean.device)
        if "latents" in batch:
            return batch["latents"].float()
        return self.model.image_autoencoder.encode(batch["image"].float()).float()

    def training_step(self, batch, batch_idx):
        out = self._forward(self._images(batch), self.latents(batch))
        self._check_finite(out.loss)
        self.log("train/loss", out.loss, prog_bar=True)
        return out.loss

    def validation_batch(self, batch: dict) -> dict:
        """Validation encodes with the posterior mode (what cached latents hold): it draws nothing from the global
        random state, so training after it goes on as it would without it (exact resume)."""
        if "latents" in batch:
            latents = batch["latents"].float()
        else:
            latents = self.model.image_autoencoder.encode(batch["image"].float(), sample=False).float()
        return {**super().validation_batch(batch), "latents": latents}
