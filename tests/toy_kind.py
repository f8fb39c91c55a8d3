"""A fifth model kind, declared in its own file as a user would: a config, a model, a Lightning module and an
evaluator. Registering it is one line (``register(TOY)``); tests/test_kinds.py does that and trains, saves, loads,
scores and refuses it through the registry like any other kind."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.evaluation import Evaluator
from slotlab.fields import PositiveInt
from slotlab.kinds import ModelKind
from slotlab.metrics import MeanMetric, MetricSet, psnr
from slotlab.models import SavedModel
from slotlab.training.base import SlotModule


@dataclass
class ToyConfig:
    resolution: PositiveInt = 32
    channels: PositiveInt = 4


class ToyAutoencoder(SavedModel):
    """Images -> a 1x1-conv bottleneck -> images."""

    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.down = nn.Conv2d(3, self.config.channels, 1)
        self.up = nn.Conv2d(self.config.channels, 3, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.up(torch.relu(self.down(images)))


class ToyModule(SlotModule):
    def training_step(self, batch, batch_idx):
        images = self._images(batch)
        loss = F.mse_loss(self._forward(images), images)
        self._check_finite(loss)
        return loss


class ToyEvaluator(Evaluator):
    def metrics(self) -> MetricSet:
        return MetricSet({"psnr": MeanMetric()})

    def update(self, model, batch, metrics, generator, num_iterations=None, num_slots=None):
        metrics["psnr"].update(psnr(model(batch["image"]), batch["image"]))


TOY = ModelKind("toy", ToyConfig, ToyAutoencoder, ToyModule, "val/psnr", ToyEvaluator(), None, "a toy autoencoder")
