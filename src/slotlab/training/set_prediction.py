"""Lightning module for supervised set prediction (CLEVR object properties) with Slot Attention."""

from __future__ import annotations

from slotlab.training.base import SlotModule


class SetPredictionModule(SlotModule):
    """Trains a :class:`~slotlab.models.set_prediction.SlotSetPredictor` with the Hungarian Huber loss.

    Validation (the kind's evaluator) computes AP at every distance threshold over the whole validation set (all
    ranks' predictions ranked together), with seeded slot noise."""

    needs = ("targets",)

    def training_step(self, batch, batch_idx):
        out = self._forward(self._images(batch), batch["targets"])
        self._check_finite(out.loss)
        self.log("train/loss", out.loss, prog_bar=True)
        return out.loss
