"""Lightning module for unsupervised object discovery with the Slot Attention autoencoder."""

from __future__ import annotations

import torch

from slotlab.evaluation import predicted_labels
from slotlab.metrics import ari_score
from slotlab.models import SlotAutoencoder
from slotlab.training.base import SlotModule


class ObjectDiscoveryModule(SlotModule):
    """Trains a :class:`SlotAutoencoder` with MSE, Adam and the official warm-up + decay schedule.

    Validation computes FG-ARI and ARI (averaged over images) with seeded slot noise.
    """

    def __init__(self, config):
        super().__init__(config)
        self._val_scores: list[torch.Tensor] = []

    def build_model(self, config) -> SlotAutoencoder:
        return SlotAutoencoder(config.model)

    def training_step(self, batch, batch_idx):
        out = self._forward(self._images(batch))
        loss = out.loss
        self._check_finite(loss)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        g = torch.Generator(device=self.device).manual_seed(self.config.trainer.seed + batch_idx)
        images = self._images(batch)
        out = self.model(images, generator=g)
        self.log("val/mse", out.loss, sync_dist=True)
        if "labels" in batch:
            pred = predicted_labels(out.masks)
            fg = ari_score(batch["labels"], pred, foreground_only=True)
            full = ari_score(batch["labels"], pred, foreground_only=False)
            self._val_scores.append(torch.stack([fg, full], dim=1))

    def on_validation_epoch_end(self):
        if not self._val_scores:
            return
        scores = torch.cat(self._val_scores)
        self._val_scores.clear()
        valid = ~scores.isnan()
        # sums and counts over images, so the mean is exact across DDP ranks
        totals = torch.stack([scores.nan_to_num().sum(0), valid.sum(0).double()]).to(self.device)
        totals = self.all_gather(totals)
        if totals.ndim == 3:
            totals = totals.sum(0)
        fg, full = (totals[0] / totals[1].clamp(min=1)).tolist()
        # identical on every rank after the all_gather, so ModelCheckpoint can monitor it everywhere
        self.log_dict({"val/fg_ari": fg, "val/ari": full}, prog_bar=True)
