"""What every slotlab Lightning module shares: the experiment config in, the model and the kind's evaluator from the
registry (:meth:`slotlab.kinds.ModelKind.build_module`), speed switches, Adam with the official warm-up +
exponential decay, gradient clipping, the NaN check, and validation through the evaluator (the metric path that
``slotlab eval`` uses too)."""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from torch import Tensor, nn

from slotlab.data.datasets import SceneDataset
from slotlab.errors import ConfigError, TrainingError
from slotlab.evaluation import Evaluator
from slotlab.training.schedules import cooldown, warmup_exponential_decay

if TYPE_CHECKING:
    from slotlab.config import ExperimentConfig


def named_parts(model: nn.Module, names, setting: str = "optim.part_lr") -> dict[str, nn.Module]:
    """The model's top-level parts by name; ``names`` (the keys of ``setting``, e.g. ``optim.part_lr``) must all be
    among them, else a one-line :class:`ConfigError`."""
    parts = dict(model.named_children())
    for name in names:
        if name not in parts:
            raise ConfigError(f"{setting} names {name!r}, not a part of this model ({', '.join(parts)})")
    return parts


def compiled(forward, mode: bool | str):
    """``forward`` under ``torch.compile`` as ``trainer.compile`` asks (False, or "auto" until it is decided:
    unchanged; True: inductor's default mode; else the mode's name). Under "reduce-overhead" each call starts a new
    step for CUDA graph trees, so a training step's graph may reuse the memory of the step before (whose loss has been
    logged and backpropagated)."""
    if mode is False or mode == "auto":
        return forward
    # static shapes: training batches have one size, and symbolic batch sizes trip torch.randn in the slots' init
    graphed = torch.compile(forward, mode=None if mode is True else mode, dynamic=False)
    if mode != "reduce-overhead":
        return graphed

    def step(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return graphed(*args, **kwargs)

    return step


def parameter_groups(
    model: nn.Module, lr: float, part_lr: dict[str, float], part_start_step: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one per top-level part named in ``part_lr`` (its rate ``lr`` times the
    multiplier, >= 0 as the config checks; 0: the part is frozen and left out) or in ``part_start_step`` (its first
    step, kept in the group as ``start_step`` for the schedule), one for the rest at ``lr``. Only trainable
    parameters; a part the model lacks is a one-line :class:`ConfigError`."""
    starts = part_start_step or {}
    parts = named_parts(model, part_lr) | named_parts(model, starts, "optim.part_start_step")
    names = list(dict.fromkeys([*part_lr, *starts]))
    groups = [
        {
            "params": [p for p in parts[name].parameters() if p.requires_grad],
            "lr": lr * part_lr.get(name, 1.0),
            "part": name,
            "start_step": starts.get(name, 0),
        }
        for name in names
        if part_lr.get(name, 1.0) > 0
    ]
    named = {id(p) for name in names for p in parts[name].parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in named]
    return [g for g in [{"params": rest, "lr": lr}, *groups] if g["params"]]


def run_timer(trainer) -> Timer | None:
    """The timer Lightning adds for a time limit (``trainer.max_time_minutes``), or None."""
    callbacks = getattr(trainer, "callbacks", [])  # Lightning sets the list at run time
    return next((c for c in callbacks if isinstance(c, Timer)), None)


class SlotModule(L.LightningModule):
    """Trains ``model`` as ``config`` says. Subclasses define :meth:`training_step`; validation runs the evaluator
    on every batch and logs its metrics (``val/...``) at the end of the epoch."""

    needs: ClassVar[tuple[str, ...]] = ()  # batch fields the training step reads beside "image" (e.g. "targets")

    def end_of_fit_state(self) -> dict[str, Tensor]:
        """State-dict entries that fitting set at its very end, after ``last.ckpt`` was written (the autoencoder's
        scaling factor); :func:`slotlab.training.checkpoint_io.patch_checkpoint` writes them into it. None here."""
        return {}

    @classmethod
    def check_data(cls, config: ExperimentConfig, train_set: SceneDataset) -> None:
        """A one-line :class:`ConfigError` when the training data cannot train this kind."""
        missing = [
            f for f in cls.needs if f not in train_set.extra and not (f == "labels" and train_set.labels is not None)
        ]
        if missing:
            raise ConfigError(
                f"task {config.task} needs a dataset with {', '.join(missing)} (e.g. clevr for "
                f"targets), not {config.data.dataset!r}"
            )

    model: Any  # the kind's model

    def __init__(self, config: ExperimentConfig, model: nn.Module, evaluator: Evaluator, monitor: str | None = None):
        super().__init__()
        self.config = config
        self.save_hyperparameters({"config": config.to_dict()})
        self.model = model
        parts = named_parts(model, config.optim.part_lr)  # a part the model lacks: one line, now
        named_parts(model, config.optim.part_start_step, "optim.part_start_step")
        for name, scale in config.optim.part_lr.items():
            if scale == 0:  # frozen: no gradients computed for it
                parts[name].requires_grad_(False)
        self.evaluator, self.monitor = evaluator, monitor  # monitor: the metric shown in the progress bar
        self.val_metrics = evaluator.metrics()
        self.last_validation: dict[str, float] = {}  # what the last validation computed, unrounded
        self.channels_last = False
        self.set_channels_last(config.trainer.channels_last is True)  # "auto": decided when training starts
        # a compiled bound method, not a module, so the weights are not registered twice
        self._forward = compiled(self.model.forward, config.trainer.compile)

    def set_channels_last(self, on: bool) -> None:
        """Lay the model's conv weights (and the images it is given) out channels-last, or back."""
        if on != self.channels_last:
            layout = torch.channels_last if on else torch.contiguous_format
            self.model.to(memory_format=layout)  # type: ignore[call-overload]
        self.channels_last = on

    def _images(self, batch) -> Tensor:
        images = batch["image"]
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _check_finite(self, loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss.item()} at step {self.global_step}; lower optim.lr or check the data"
            )

    def validation_batch(self, batch: dict) -> dict:
        """The batch as the evaluator gets it (subclasses add what validation needs, e.g. LSD's latents)."""
        return {**batch, "image": self._images(batch)}

    def validation_step(self, batch, batch_idx):
        g = torch.Generator(device=self.device).manual_seed(self.config.trainer.seed + batch_idx)
        self.evaluator.update(self.model, self.validation_batch(batch), self.val_metrics, g)

    def on_validation_epoch_end(self):
        values = self.val_metrics.compute()  # reduced over DDP ranks: the same on every rank
        self.val_metrics.reset()
        self.last_validation = values
        logged = {f"val/{k}": float(v) for k, v in values.items() if k != "num_objects"}
        shown = {k: v for k, v in logged.items() if k == self.monitor}
        self.log_dict(shown, prog_bar=True)
        self.log_dict({k: v for k, v in logged.items() if k not in shown}, prog_bar=False)

    def configure_optimizers(self):
        o = self.config.optim
        optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.optimizer]
        groups = parameter_groups(self.model, o.lr, o.part_lr, o.part_start_step)
        optimizer = optimizer_class(groups, lr=o.lr, weight_decay=o.weight_decay)

        def multiplier(step: int, start: int = 0) -> float:
            if step < start:  # a part held still (optim.part_start_step)
                return 0.0
            rate = warmup_exponential_decay(step, o.warmup_steps, o.decay_rate, o.decay_steps)
            if start:  # its own warm-up from its first step; the decay still counts from step 0
                rate *= min(1.0, (step - start) / o.warmup_steps) if o.warmup_steps > 0 else 1.0
            return rate * cooldown(self.progress(step), o.cooldown_fraction) if o.cooldown_fraction else rate

        starts = [g.get("start_step", 0) for g in optimizer.param_groups]
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, [partial(multiplier, start=s) for s in starts])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def progress(self, step: int) -> float:
        """How far the run is, in [0, 1]: the larger of ``step / optim.max_steps`` and, under
        ``trainer.max_time_minutes``, the share of the time spent (Lightning's timer, restored on resume). Only the
        cooldown reads it; without a time limit it depends on the step alone, so runs stay exactly repeatable."""
        done = step / self.config.optim.max_steps
        timer = run_timer(self._trainer)
        if timer is not None and (left := timer.time_remaining()) is not None:
            spent = timer.time_elapsed()
            done = max(done, spent / max(spent + left, 1e-9))
        return min(1.0, done)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = self.config.optim.grad_clip
        if clip is not None and not math.isinf(clip):
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
