"""Lightning module for unsupervised object discovery with the Slot Attention autoencoder."""

from __future__ import annotations

import math

import lightning as L
import torch

from slotlab.config import ExperimentConfig, config_from_dict
from slotlab.errors import TrainingError
from slotlab.evaluation import predicted_labels
from slotlab.metrics import ari_score
from slotlab.models import SlotAutoencoder
from slotlab.training.schedules import warmup_exponential_decay


class ObjectDiscoveryModule(L.LightningModule):
    """Trains a :class:`SlotAutoencoder` with MSE, Adam and the official warm-up + decay schedule.

    Validation computes FG-ARI and ARI (averaged over images) with seeded slot noise.
    """

    def __init__(self, config: ExperimentConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = config_from_dict(config)
        self.config = config
        self.save_hyperparameters({"config": config.to_dict()})
        self.model = SlotAutoencoder(config.model)
        self.channels_last = config.trainer.channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # a compiled bound method, not a module, so the weights are not registered twice
        self._forward = torch.compile(self.model.forward) if config.trainer.compile else self.model.forward
        self._val_scores: list[torch.Tensor] = []

    def _images(self, batch) -> torch.Tensor:
        images = batch["image"]
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def training_step(self, batch, batch_idx):
        out = self._forward(self._images(batch))
        loss = out.loss
        if not torch.isfinite(loss):
            raise TrainingError(f"the training loss became {loss.item()} at step {self.global_step}; lower optim.lr or check the data")
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

    def configure_optimizers(self):
        o = self.config.optim
        optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_exponential_decay(step, o.warmup_steps, o.decay_rate, o.decay_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = self.config.optim.grad_clip
        if clip is not None and not math.isinf(clip):
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
