"""What every slotlab Lightning module shares: config in, model built from it, speed switches, Adam with the
official warm-up + exponential decay, gradient clipping and the NaN check."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from slotlab.config import ExperimentConfig, config_from_dict
from slotlab.errors import ConfigError, TrainingError
from slotlab.training.schedules import warmup_exponential_decay


class SlotModule(L.LightningModule):
    """Subclasses build ``self.model`` in :meth:`build_model` and define the training and validation steps."""

    def __init__(self, config: ExperimentConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = config_from_dict(config)
        self.config = config
        self.save_hyperparameters({"config": config.to_dict()})
        self.model = self.build_model(config)
        self.channels_last = config.trainer.channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # a compiled bound method, not a module, so the weights are not registered twice
        self._forward = torch.compile(self.model.forward) if config.trainer.compile else self.model.forward

    def build_model(self, config: ExperimentConfig) -> nn.Module:
        raise NotImplementedError

    def _images(self, batch) -> torch.Tensor:
        images = batch["image"]
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(f"the training loss became {loss.item()} at step {self.global_step}; lower optim.lr or check the data")

    def configure_optimizers(self):
        o = self.config.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        if o.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        elif o.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            raise ConfigError(f"optim.optimizer must be 'adam' or 'adamw', got {o.optimizer!r}")
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_exponential_decay(step, o.warmup_steps, o.decay_rate, o.decay_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = self.config.optim.grad_clip
        if clip is not None and not math.isinf(clip):
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate a tensor's rows from every DDP rank (ranks may hold different numbers of rows)."""
        if self.trainer is None or self.trainer.world_size == 1:
            return x
        x = x.to(self.device)
        sizes = self.all_gather(torch.tensor(x.shape[0], device=self.device)).flatten().tolist()
        padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=self.device)
        padded[: x.shape[0]] = x
        gathered = self.all_gather(padded)  # [world, max, ...]
        return torch.cat([gathered[r, :n] for r, n in enumerate(sizes)]).cpu()
