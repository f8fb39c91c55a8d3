"""Lightning module for unsupervised object discovery with the Slot Attention autoencoder."""

from __future__ import annotations

from slotlab.training.base import SlotModule


class ObjectDiscoveryModule(SlotModule):
    """Trains a :class:`~slotlab.models.SlotAutoencoder` with MSE, Adam and the official warm-up + decay schedule.

    Validation (the kind's evaluator) computes FG-ARI, ARI and the rest, averaged over images, with seeded slot
    noise."""

    def training_step(self, batch, batch_idx):
        out = self._forward(self._images(batch))
        loss = out.loss
        self._check_finite(loss)
        self.log("train/loss", loss, prog_bar=True)
        return loss
