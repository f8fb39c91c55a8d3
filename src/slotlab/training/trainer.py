"""The Lightning side of a training run: the data module, the curve logger and the trainer with its callbacks.

:func:`slotlab.experiment.train` puts them together with a model kind's Lightning module.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from slotlab.data.datasets import SceneDataset, SequentialBatchSampler, ShuffledBatchSampler
from slotlab.errors import ConfigError
from slotlab.training.base import run_timer
from slotlab.training.checkpoint_io import AtomicCheckpointIO

if TYPE_CHECKING:
    from slotlab.config import ExperimentConfig

LAST_CHECKPOINT = "last.ckpt"


class SceneDataModule(L.LightningDataModule):
    """Serves in-memory datasets in whole batches; each DDP rank draws its own share of every epoch."""

    def __init__(self, train: SceneDataset, val: SceneDataset | None, batch_size: int, seed: int, num_workers: int = 0):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers

    def _loader(self, dataset: SceneDataset, sampler) -> DataLoader:
        # a generator of its own: making an iterator then draws nothing from the global random state, which training
        # draws its noise from (so a resumed run, which makes its iterators at other times, draws the same noise)
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self):
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        # a resumed run (Lightning has restored the step by now) goes on after the batches already trained on
        start = self.trainer.global_step if self.trainer else 0
        return self._loader(
            self.train, ShuffledBatchSampler(len(self.train), self.batch_size, self.seed, rank, world, start_step=start)
        )

    def val_dataloader(self):
        if self.val is None:
            return []
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if 0 < len(self.val) < world:  # a rank without a shard would skip validation, and the others wait for it
            raise ConfigError(
                f"the validation data has {len(self.val)} items, fewer than the {world} processes that share it; "
                f"give at least {world} (data.val_size)"
            )
        shard = self.val if world == 1 else self.val.subset(slice(rank, None, world))
        return self._loader(shard, SequentialBatchSampler(len(shard), self.batch_size))


class CurveLogger(Callback):
    """Appends ``{"step", "seconds", "fg_ari", ...}`` after every validation to ``curve.jsonl`` (rank 0).

    ``seconds`` is training time: it counts from the start of the run and, after ``--resume``, goes on from the
    time saved in the checkpoint (the time between that checkpoint and the interruption is not counted)."""

    def __init__(self, path: Path):
        self.path, self.start, self.offset = path, time.monotonic(), 0.0

    @property
    def seconds(self) -> float:
        return self.offset + time.monotonic() - self.start

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.offset, self.start = float(state_dict["seconds"]), time.monotonic()

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"step": trainer.global_step, "seconds": round(self.seconds, 1)}
        row.update(
            {
                k.split("/", 1)[1]: round(float(v), 5)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("val/")
            }
        )
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


class RandomStates(Callback):
    """Saves the global random states in every checkpoint and puts them back on resume, so a resumed run draws the
    noise the uninterrupted run would have drawn (slot initialisation, diffusion noise, posterior samples: all of
    which come from torch's global generators during training)."""

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(state_dict["cuda"]))


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every n training steps and at the run's last step (a time limit stops anywhere: a resume then goes
    on from where the run stopped, not from the checkpoint before). On a step that also validates it is written
    after the validation (after :class:`CurveLogger`'s row), so that a kill between the two never leaves a checkpoint
    ahead of ``curve.jsonl``. Every save happens within the step's epoch, so the loop state it records resumes the
    uninterrupted run's order of batches."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        periodic = self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0
        last = trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step  # a Timer's stop is set by now
        if (periodic or last) and not self._should_skip_saving_checkpoint(trainer):
            if _validates_after_this_batch(trainer):
                self._defer_save_until_validation = True  # Lightning's own hook: saved in on_validation_end
                return
            if last and not periodic:
                candidates = self._monitor_candidates(trainer)
                self._save_topk_checkpoint(trainer, candidates)
                self._save_last_checkpoint(trainer, candidates)
                return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def _validates_after_this_batch(trainer: L.Trainer) -> bool:
    """Whether the training loop runs a validation with at least one batch right after the current batch."""
    data = getattr(trainer, "datamodule", None)
    if data is None or not getattr(data, "val", None) or not trainer.enable_validation:
        return False
    loop = trainer.fit_loop
    return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))  # type: ignore[arg-type]


class ProgressBar(TQDMProgressBar):
    """Lightning's bar, with the minutes left under ``trainer.max_time_minutes`` (the step total is then a cap that a
    time-limited run may stop far short of)."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        timer = run_timer(trainer)
        if timer is not None and (left := timer.time_remaining()) is not None:
            items["left"] = f"{max(left, 0.0) / 60:.1f} min"
        return items


BEST_CHECKPOINT = "best.ckpt"  # best validation metric of the task (FG-ARI, AP at 1), beside last.ckpt


def build_trainer(
    config: ExperimentConfig,
    out_dir: Path,
    progress: bool = True,
    callbacks: list[Callback] | None = None,
    monitor: str | None = None,
) -> L.Trainer:
    """The Lightning trainer of ``config``: last.ckpt every ``checkpoint_every_n_steps`` and at the last step,
    TensorBoard logs, ``curve.jsonl``, the EMA of the weights if asked for, a progress bar; with ``monitor`` (a
    validation metric, higher is better: the kind's, when the data can be scored) also ``checkpoints/best.ckpt``."""
    t = config.trainer
    ckpt = StepCheckpoint(
        dirpath=out_dir / "checkpoints", every_n_train_steps=t.checkpoint_every_n_steps, save_last=True, save_top_k=1
    )
    cbs: list[Callback] = [ckpt, LearningRateMonitor("step"), CurveLogger(out_dir / "curve.jsonl"), RandomStates()]
    if monitor is not None:
        cbs.append(
            ModelCheckpoint(
                dirpath=out_dir / "checkpoints",
                filename=Path(BEST_CHECKPOINT).stem,
                monitor=monitor,
                mode="max",
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    if t.ema_decay is not None:
        cbs.append(EMAWeightAveraging(decay=t.ema_decay))
    if progress:
        cbs.append(ProgressBar(refresh_rate=20))
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,  # type: ignore[arg-type]  # checked by TrainerConfig, resolved from auto
        max_steps=config.optim.max_steps,
        max_epochs=-1,
        max_time={"seconds": t.max_time_minutes * 60} if t.max_time_minutes else None,  # type: ignore[dict-item]
        val_check_interval=t.val_every_n_steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        logger=TensorBoardLogger(str(out_dir), name="logs", version=""),
        callbacks=cbs + (callbacks or []),
        enable_progress_bar=progress,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(out_dir),
        plugins=[AtomicCheckpointIO()],
    )


def configure_threads(config: ExperimentConfig) -> None:
    if config.trainer.num_threads:
        torch.set_num_threads(config.trainer.num_threads)
