"""Lightning module for supervised set prediction (CLEVR object properties) with Slot Attention."""

from __future__ import annotations

import torch

from slotlab.metrics.average_precision import average_precisions
from slotlab.models.set_prediction import SlotSetPredictor
from slotlab.training.base import SlotModule


class SetPredictionModule(SlotModule):
    """Trains a :class:`SlotSetPredictor` with the Hungarian Huber loss.

    Validation computes AP at every distance threshold over the whole validation set (all ranks' predictions
    ranked together), with seeded slot noise.
    """

    def __init__(self, config):
        super().__init__(config)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def build_model(self, config) -> SlotSetPredictor:
        return SlotSetPredictor(config.model)

    def training_step(self, batch, batch_idx):
        out = self._forward(self._images(batch), batch["targets"])
        self._check_finite(out.loss)
        self.log("train/loss", out.loss, prog_bar=True)
        return out.loss

    def validation_step(self, batch, batch_idx):
        g = torch.Generator(device=self.device).manual_seed(self.config.trainer.seed + batch_idx)
        out = self.model(self._images(batch), batch["targets"], generator=g)
        self.log("val/loss", out.loss, sync_dist=True)
        self._val_outputs.append((out.predictions.float().cpu(), batch["targets"].float().cpu()))

    def on_validation_epoch_end(self):
        k, f = self.config.model.num_slots, self.config.model.num_outputs
        local_p = torch.cat([p for p, _ in self._val_outputs]) if self._val_outputs else torch.zeros(0, k, f)
        local_t = torch.cat([t for _, t in self._val_outputs]) if self._val_outputs else torch.zeros(0, 10, f)
        preds, targets = self.gather_rows(local_p), self.gather_rows(local_t)  # every rank joins the gather
        if len(preds) == 0:
            return
        self._val_outputs.clear()
        aps = average_precisions(preds, targets)
        self.log_dict({f"val/{k}": v for k, v in aps.items()}, prog_bar=False)
