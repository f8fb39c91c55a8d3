"""Build the Lightning trainer for an experiment and run it: data -> model -> loss/metrics -> logs, checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

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

from slotlab.checkpoints import save_trained
from slotlab.config import ExperimentConfig
from slotlab.data.datasets import (
    SceneDataset,
    SequentialBatchSampler,
    ShuffledBatchSampler,
)
from slotlab.data.registry import build_dataset
from slotlab.errors import ConfigError
from slotlab.training.autoencoder import AutoencoderModule
from slotlab.training.base import SlotModule
from slotlab.training.lsd import LSDModule
from slotlab.training.object_discovery import ObjectDiscoveryModule
from slotlab.training.precision import resolve_precision
from slotlab.training.set_prediction import SetPredictionModule

# Per task: the Lightning module, and the validation metric (higher is better) that picks best.ckpt.
TASKS: dict[str, tuple[type[SlotModule], str]] = {
    "object_discovery": (ObjectDiscoveryModule, "val/fg_ari"),
    "set_prediction": (SetPredictionModule, "val/ap_1"),
    "autoencoder": (AutoencoderModule, "val/psnr"),
    "lsd": (LSDModule, "val/fg_ari"),
}



class SceneDataModule(L.LightningDataModule):
    """Serves in-memory datasets in whole batches; each DDP rank draws its own share of every epoch."""

    def __init__(self, train: SceneDataset, val: SceneDataset | None, batch_size: int, seed: int, num_workers: int = 0):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers

    def _loader(self, dataset: SceneDataset, sampler) -> DataLoader:
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        # a resumed run (Lightning has restored the step by now) goes on after the batches already trained on
        start = self.trainer.global_step if self.trainer else 0
        return self._loader(self.train, ShuffledBatchSampler(len(self.train), self.batch_size, self.seed, rank, world,
                                                             start_step=start))

    def val_dataloader(self):
        if self.val is None:
            return []
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
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
        row.update({k.split("/", 1)[1]: round(float(v), 5) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


@dataclass
class TrainResult:
    module: SlotModule
    trainer: L.Trainer
    model_dir: Path
    seconds: float


def configure_threads(config: ExperimentConfig) -> None:
    if config.trainer.num_threads:
        torch.set_num_threads(config.trainer.num_threads)


BEST_CHECKPOINT = "best.ckpt"  # best validation metric of the task (FG-ARI, AP at 1), beside last.ckpt


def build_trainer(config: ExperimentConfig, out_dir: Path, progress: bool = True, callbacks: list[Callback] | None = None,
                  track_best: bool = False) -> L.Trainer:
    """``track_best``: also keep ``checkpoints/best.ckpt``, the weights with the best validation metric of the
    task (FG-ARI for object discovery, AP at distance 1 for set prediction)."""
    t = config.trainer
    ckpt = ModelCheckpoint(dirpath=out_dir / "checkpoints", every_n_train_steps=t.checkpoint_every_n_steps,
                           save_last=True, save_top_k=1)
    cbs: list[Callback] = [ckpt, LearningRateMonitor("step"), CurveLogger(out_dir / "curve.jsonl")]
    if track_best:
        cbs.append(ModelCheckpoint(dirpath=out_dir / "checkpoints", filename=Path(BEST_CHECKPOINT).stem,
                                   monitor=TASKS[config.task][1], mode="max", save_top_k=1, enable_version_counter=False))
    if t.ema_decay is not None:
        if not 0.0 < t.ema_decay < 1.0:
            raise ConfigError(f"trainer.ema_decay must be in (0, 1), got {t.ema_decay}")
        cbs.append(EMAWeightAveraging(decay=t.ema_decay))
    if progress:
        cbs.append(TQDMProgressBar(refresh_rate=20))
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
        max_steps=config.optim.max_steps, max_epochs=-1,
        max_time={"seconds": t.max_time_minutes * 60} if t.max_time_minutes else None,
        val_check_interval=t.val_every_n_steps, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps, logger=TensorBoardLogger(str(out_dir), name="logs", version=""),
        callbacks=cbs + (callbacks or []), enable_progress_bar=progress, enable_model_summary=False,
        use_distributed_sampler=False, default_root_dir=str(out_dir),
    )


def _check_latent_cache(config: ExperimentConfig) -> None:
    """Latents cached by one autoencoder must be decoded by the same one: refuse a mismatch."""
    from slotlab.data.store import Store, is_store

    if not config.data.path or not is_store(Path(config.data.path).expanduser()):
        return
    attrs = Store(Path(config.data.path).expanduser(), allow_incomplete=True).attrs
    if attrs.get("kind") != "latents":
        return
    if config.task != "lsd":
        return
    ref = attrs.get("autoencoder_ref")
    same = ref is not None and (ref == config.model.autoencoder or
                                Path(ref).expanduser().resolve() == Path(config.model.autoencoder).expanduser().resolve())
    if not same:
        raise ConfigError(f"{config.data.path} holds latents of the autoencoder {ref!r} but model.autoencoder is "
                          f"{config.model.autoencoder!r}; set model.autoencoder={ref}")
    down = attrs.get("downsample")
    if down and config.model.resolution // down != config.model.latent_size:
        raise ConfigError(f"model.latent_size={config.model.latent_size} but the cached latents are "
                          f"{config.model.resolution // down}x{config.model.resolution // down}")


RUN_OUTPUTS = ("checkpoints", "logs", "curve.jsonl", "model")  # what a training run writes into its folder


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
        raise ConfigError(f"{out_dir} already holds a training run ({', '.join(previous)}); continue it with --resume, "
                          "start it again with --overwrite, or choose another --out")
    for name in previous:
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def train(config: ExperimentConfig, out_dir: str | Path, resume: str | None = None, progress: bool = True,
          callbacks: list[Callback] | None = None, overwrite: bool = False) -> TrainResult:
    """Train ``config`` into ``out_dir``: checkpoints/ (last.ckpt, and best.ckpt by the task's validation metric when
    the data can be scored), logs/, curve.jsonl and model/ (the final weights). ``resume``: a .ckpt or "last".
    A folder that already holds a run needs ``resume`` (continue it) or ``overwrite`` (remove it and start again)."""
    if config.task not in TASKS:
        raise ConfigError(f"unknown task {config.task!r}; tasks: {', '.join(TASKS)}")
    out_dir = Path(out_dir)
    claim_run_folder(out_dir, resume, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    configure_threads(config)
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    start = time.monotonic()
    train_set, val_set = build_dataset(config.data, "train"), build_dataset(config.data, "val")
    if train_set.resolution != config.model.resolution:
        raise ConfigError(f"data.resolution {train_set.resolution} differs from model.resolution {config.model.resolution}")
    data = SceneDataModule(train_set, val_set, config.optim.batch_size, config.trainer.seed, config.data.num_workers)
    _check_latent_cache(config)
    if config.task == "set_prediction" and "targets" not in train_set.extra:
        raise ConfigError(f"task set_prediction needs a dataset with targets (e.g. clevr), not {config.data.dataset!r}")
    module = TASKS[config.task][0](config)
    # "auto" becomes what runs (and what model/config.json records)
    config.trainer.precision = resolve_precision(config, module, train_set)
    scored = {"set_prediction": "targets" in val_set.extra, "autoencoder": True}.get(config.task, val_set.labels is not None)
    trainer = build_trainer(config, out_dir, progress, callbacks, track_best=scored)
    if resume == "last":
        last = out_dir / "checkpoints" / "last.ckpt"
        resume = str(last) if last.is_file() else None
    with warnings.catch_warnings():
        # SceneDataModule resumes mid-epoch itself (its sampler skips the batches done), which Lightning cannot see
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    if config.task == "autoencoder" and trainer.is_global_zero:  # last.ckpt again, now with the scaling factor
        trainer.save_checkpoint(out_dir / "checkpoints" / "last.ckpt")
    model_dir = out_dir / "model"
    if trainer.is_global_zero:
        save_trained(module.model, config, model_dir)
    return TrainResult(module, trainer, model_dir, time.monotonic() - start)
