"""Lightning module that trains our own image autoencoder (the first stage of Latent Slot Diffusion).

The scaling factor of the latents is estimated when fitting ends (:meth:`AutoencoderModule.on_train_end`, on every
DDP rank with the statistics summed over ranks; a resumed run estimates it again): 1 / std of posterior samples of
up to 16 training batches, written into ``self.model.config.scaling_factor`` and the model's ``latent_scale`` buffer,
so that ``save_pretrained`` carries it. ``last.ckpt``, written before, gets the buffer patched in
(:meth:`AutoencoderModule.end_of_fit_state`) and keeps the training state of the last step, so a resumed run goes on
exactly (loading puts the factor back into the config).
"""

from __future__ import annotations

import torch

from slotlab.training.base import SlotModule


class AutoencoderModule(SlotModule):
    """Trains an :class:`~slotlab.models.image_autoencoder.ImageAutoencoder` with MSE + KL.

    Validation (the kind's evaluator) reconstructs from the posterior mode (what the cached latents hold) and logs
    ``val/mse`` and ``val/psnr`` (per image, 10 log10(4 / mse) for images in [-1, 1], averaged over images).
    """

    scaling_batches = 16  # training batches that the scaling factor is estimated from

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # decided now, before a resumed run loads its checkpoint (which carries the first half's estimate into the
        # model's config): the latents change as training goes on, so the factor is estimated again at the end
        self.estimate_scaling = self.model.needs_scaling_estimate

    def training_step(self, batch, batch_idx):
        out = self._forward(self._images(batch))
        self._check_finite(out.loss)
        self.log("train/loss", out.loss, prog_bar=True)
        self.log_dict({"train/mse": out.mse, "train/kl": out.kl})
        return out.loss

    def on_train_end(self):
        if self.estimate_scaling and self._trainer is not None:
            # the global RNG as training left it (iterating a loader draws from it)
            with torch.random.fork_rng():
                self.finalize_scaling(self.trainer.train_dataloader)

    def end_of_fit_state(self):
        return {"model.latent_scale": self.model.latent_scale.clone()} if self.estimate_scaling else {}

    @torch.no_grad()
    def finalize_scaling(self, dataloader, max_batches: int | None = None) -> float:
        """Estimate the latents' scaling factor from ``dataloader`` (batch dicts) and store it in the model.

        Under DDP every rank must call it (the statistics are summed over ranks, so all get the same factor).
        """
        was_training = self.model.training
        self.model.eval()
        moments = self.model.latent_moments(dataloader, max_batches or self.scaling_batches, self.config.trainer.seed)
        if self._trainer is not None and self._trainer.world_size > 1:
            moments = self.all_gather(moments.to(self.device))
            moments = moments.sum(0) if moments.ndim == 2 else moments  # type: ignore[union-attr]
        value = self.model.scaling_from_moments(moments)
        self.model.train(was_training)
        return value
