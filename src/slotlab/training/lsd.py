"""Lightning module for Latent Slot Diffusion: the slot encoder and the diffusion decoder train jointly on the
epsilon loss over latents of a frozen image autoencoder. Validation segments with the last iteration's attention
and reports FG-ARI, mBO and mIoU (each over objects and over images) beside the validation loss."""

from __future__ import annotations

import torch

from slotlab.evaluation import attention_labels
from slotlab.metrics import SegmentationScores, ari_score
from slotlab.models.image_autoencoder import ImageAutoencoder, load_image_autoencoder
from slotlab.models.lsd import LatentSlotDiffusion
from slotlab.training.base import SlotModule


class LSDModule(SlotModule):
    """Trains a :class:`LatentSlotDiffusion`. Batches may carry cached ``latents``; otherwise the frozen
    autoencoder encodes the images on the fly (posterior samples)."""

    def __init__(self, config, autoencoder: ImageAutoencoder | None = None):
        super().__init__(config)
        # frozen and kept out of the module tree: not optimised, not saved in checkpoints (it has its own files);
        # loaded on first use, so models trained on cached latents (and segmentation-only uses) never need it
        self._autoencoder = [] if autoencoder is None else [autoencoder.eval().requires_grad_(False)]
        self._fg_ari: list[torch.Tensor] = []
        self._segmentation = SegmentationScores()

    def build_model(self, config) -> LatentSlotDiffusion:
        return LatentSlotDiffusion(config.model)

    @property
    def autoencoder(self) -> ImageAutoencoder:
        if not self._autoencoder:
            self._autoencoder.append(load_image_autoencoder(self.config.model.autoencoder).eval().requires_grad_(False))
        ae = self._autoencoder[0]
        if next(ae.parameters()).device != self.device:
            ae.to(self.device)
        return ae

    @torch.no_grad()
    def latents(self, batch) -> torch.Tensor:
        if "latents" in batch:
            return batch["latents"].float()
        return self.autoencoder.encode(batch["image"].float()).float()

    def training_step(self, batch, batch_idx):
        out = self._forward(self._images(batch), self.latents(batch))
        self._check_finite(out.loss)
        self.log("train/loss", out.loss, prog_bar=True)
        return out.loss

    def validation_step(self, batch, batch_idx):
        g = torch.Generator(device=self.device).manual_seed(self.config.trainer.seed + batch_idx)
        out = self.model(self._images(batch), self.latents(batch), generator=g)
        self.log("val/loss", out.loss, sync_dist=True)
        if "labels" in batch:
            pred = attention_labels(out.attn[:, -1], batch["labels"].shape[-1])
            self._fg_ari.append(ari_score(batch["labels"], pred, foreground_only=True).cpu())
            self._segmentation.update(batch["labels"].cpu(), pred.cpu())

    def on_validation_epoch_end(self):
        if not self._fg_ari:
            return
        fg = self.gather_rows(torch.cat(self._fg_ari))
        self._fg_ari.clear()
        seg = self._segmentation.compute()
        self._segmentation.reset()
        metrics = {"val/fg_ari": float(fg[~fg.isnan()].mean()) if (~fg.isnan()).any() else float("nan")}
        metrics |= {f"val/{k}": float(v) for k, v in seg.items() if k != "num_objects"}
        self.log_dict(metrics, prog_bar=False)
