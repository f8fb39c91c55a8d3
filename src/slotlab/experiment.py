"""Run an experiment into a folder: data -> the kind's Lightning module -> trainer -> checkpoints, logs, curve, model.

A run folder holds ``checkpoints/`` (``last.ckpt``, and ``best.ckpt`` by the kind's validation metric when the data
can be scored), ``logs/`` (TensorBoard), ``curve.jsonl`` (validation metrics over steps and seconds) and ``model/``
(the final weights: safetensors + config.json + experiment.yaml).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from slotlab.checkpoints import save_trained
from slotlab.config import ExperimentConfig
from slotlab.data.registry import build_dataset
from slotlab.errors import ConfigError
from slotlab.kinds import kind
from slotlab.training.base import SlotModule
from slotlab.training.precision import resolve_precision
from slotlab.training.trainer import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    SceneDataModule,
    build_trainer,
    configure_threads,
)

__all__ = ["BEST_CHECKPOINT", "LAST_CHECKPOINT", "RUN_OUTPUTS", "TrainResult", "claim_run_folder", "train"]

RUN_OUTPUTS = ("checkpoints", "logs", "curve.jsonl", "model")  # what a training run writes into its folder


@dataclass
class TrainResult:
    module: SlotModule
    trainer: L.Trainer
    model_dir: Path
    seconds: float


def _is_replica() -> bool:
    """True in the processes a multi-device launch adds (DDP ranks other than 0, other nodes)."""
    return any(os.environ.get(k, "0") != "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def claim_run_folder(out_dir: Path, resume: str | None, overwrite: bool) -> None:
    """A new run never writes over an earlier one unnoticed: a folder holding a run's outputs is continued only
    with ``resume`` and started again only with ``overwrite`` (which removes those outputs first)."""
    previous = [name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    if resume is not None or not previous or _is_replica():
        return
    if not overwrite:
        raise ConfigError(
            f"{out_dir} already holds a training run ({', '.join(previous)}); continue it with --resume, "
            "start it again with --overwrite, or choose another --out"
        )
    for name in previous:
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def train(
    config: ExperimentConfig,
    out_dir: str | Path,
    resume: str | None = None,
    progress: bool = True,
    callbacks: list[Callback] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``config`` into ``out_dir``. ``resume``: a .ckpt or "last". A folder that already holds a run needs
    ``resume`` (continue it) or ``overwrite`` (remove it and start again)."""
    k = kind(config.task)
    out_dir = Path(out_dir)
    claim_run_folder(out_dir, resume, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    configure_threads(config)
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    start = time.monotonic()
    train_set, val_set = build_dataset(config.data, "train"), build_dataset(config.data, "val")
    if train_set.resolution != config.model.resolution:
        raise ConfigError(
            f"data.resolution {train_set.resolution} differs from model.resolution {config.model.resolution}"
        )
    k.module.check_data(config, train_set)
    data = SceneDataModule(train_set, val_set, config.optim.batch_size, config.trainer.seed, config.data.num_workers)
    module = k.build_module(config)
    # "auto" becomes what runs (and what model/config.json records)
    config.trainer.precision = resolve_precision(config, module, train_set)  # type: ignore[assignment]
    monitor = k.monitor if k.evaluator.can_score(val_set) else None
    trainer = build_trainer(config, out_dir, progress, callbacks, monitor=monitor)
    if resume == "last":
        last = out_dir / "checkpoints" / LAST_CHECKPOINT
        resume = str(last) if last.is_file() else None
    with warnings.catch_warnings():
        # SceneDataModule resumes mid-epoch itself (its sampler skips the batches done), which Lightning cannot see
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    if module.resave_last_checkpoint and trainer.is_global_zero:  # e.g. with the autoencoder's scaling factor
        trainer.save_checkpoint(out_dir / "checkpoints" / LAST_CHECKPOINT)
    model_dir = out_dir / "model"
    if trainer.is_global_zero:
        save_trained(module.model, config, model_dir)
    return TrainResult(module, trainer, model_dir, time.monotonic() - start)
