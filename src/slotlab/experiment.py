"""Run an experiment into a folder: data -> the kind's Lightning module -> trainer -> checkpoints, logs, curve, model.

A run folder holds ``checkpoints/`` (``last.ckpt``, and ``best.ckpt`` by the kind's validation metric when the data
can be scored), ``logs/`` (TensorBoard), ``curve.jsonl`` (validation metrics over steps and seconds) and ``model/``
(the final weights: safetensors + config.json + experiment.yaml).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from slotlab.checkpoints import config_of_checkpoint, read_checkpoint, save_trained, warm_start_weights
from slotlab.config import ExperimentConfig, apply_overrides, config_from_dict, read_preset
from slotlab.data.registry import build_dataset
from slotlab.errors import ConfigError
from slotlab.io import FolderLock, atomic_write_text
from slotlab.kinds import kind
from slotlab.training.base import SlotModule
from slotlab.training.checkpoint_io import patch_checkpoint
from slotlab.training.precision import resolve_compile, resolve_switches
from slotlab.training.trainer import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    SceneDataModule,
    build_trainer,
    configure_threads,
)

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "RESUMABLE",
    "RUN_OUTPUTS",
    "TrainResult",
    "claim_run_folder",
    "config_to_resume",
    "resume_checkpoint",
    "resumed_config",
    "train",
    "trim_curve",
]

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
    if not previous or _is_replica():
        return
    if resume is not None and resume != "last" and Path(resume).resolve().parent != (out_dir / "checkpoints").resolve():
        raise ConfigError(
            f"{out_dir} already holds another training run ({', '.join(previous)}); to go on from {resume} "
            "give an empty --out, or resume that run from its own checkpoint"
        )
    if resume is not None:
        return
    if not overwrite:
        raise ConfigError(
            f"{out_dir} already holds a training run ({', '.join(previous)}); continue it with --resume, "
            "start it again with --overwrite, or choose another --out"
        )
    for name in previous:
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# What may change when a run is resumed: how long and how it runs, where the data lies. Anything else (the model,
# the data, the optimiser, the seeds) would silently not apply or would break the run, and is refused.
RESUMABLE = frozenset(
    {
        "name",
        "optim.max_steps",
        "data.path",
        "data.val_path",
        "data.num_workers",
        "trainer.accelerator",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.strategy",
        "trainer.precision",
        "trainer.compile",
        "trainer.channels_last",
        "trainer.max_time_minutes",
        "trainer.val_every_n_steps",
        "trainer.checkpoint_every_n_steps",
        "trainer.log_every_n_steps",
        "trainer.num_threads",
    }
)


# Settings that "auto" resolves by timing when a run starts; the checkpoint records the choice, and a resumed run
# asking for "auto" again keeps it (timing anew could pick another, and the resumed steps would differ in the last bits)
AUTO_SWITCHES = ("trainer.precision", "trainer.channels_last", "trainer.compile")
# Settings that training itself fills in at its end, recorded in the exported model/experiment.yaml: resuming from
# that file asks for the estimate, where the checkpoint has None; the resumed run keeps None and estimates again
ESTIMATED = ("model.scaling_factor",)


def _flat(values: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resumed_config(saved: ExperimentConfig, asked: ExperimentConfig) -> ExperimentConfig:
    """The config a resumed run goes on with: the checkpoint's, with the settings in :data:`RESUMABLE` taken from
    the command; a change to anything else is refused in one line."""
    old, new = _flat(saved.to_dict()), _flat(asked.to_dict())
    for key in AUTO_SWITCHES:  # "auto" was resolved when the run started: the resumed half takes the same choice
        if new.get(key) == "auto":
            new[key] = old.get(key)
    for key in ESTIMATED:
        if old.get(key) is None:
            new[key] = None
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k not in RESUMABLE]
    if changed:
        k = changed[0]
        more = f" (and {len(changed) - 1} more: {', '.join(changed[1:4])})" if len(changed) > 1 else ""
        raise ConfigError(
            f"{k} cannot change on --resume (the run has {old.get(k)!r}, the command asks for "
            f"{new.get(k)!r}){more}; start a new run (--overwrite or another --out) to change it"
        )
    values = saved.to_dict()
    for key in RESUMABLE:
        section, _, name = key.rpartition(".")
        (values[section] if section else values)[name] = new[key]
    return config_from_dict(values)


def config_to_resume(preset: str | None, out_dir: str | Path, resume: str, overrides: list[str]) -> ExperimentConfig:
    """What ``slotlab train [PRESET] --out OUT --resume [CKPT] OVERRIDES`` asks for: the run's own settings, read
    from the checkpoint, with ``OVERRIDES`` applied (:func:`train` refuses those outside :data:`RESUMABLE`). The
    overrides the run started with need not be given again, and an edited preset file does not change a run;
    ``PRESET``, if given, must train the run's task."""
    path = _resume_from(Path(out_dir), resume)
    assert path is not None
    saved = config_of_checkpoint(read_checkpoint(path, mmap=True), path)
    task = saved.task if preset is None else config_from_dict(read_preset(preset)).task
    if task != saved.task:
        raise ConfigError(
            f"--resume: {preset} trains {task} but the run of {path} ({saved.name}) trains {saved.task}; give that "
            "run's preset or none, or start a new run (--overwrite or another --out)"
        )
    estimated = {key for key in ESTIMATED if _flat(saved.to_dict()).get(key) is None}
    for item in overrides:  # resumed_config would keep None for these: refuse the override rather than drop it
        if (key := item.partition("=")[0].strip()) in estimated:
            raise ConfigError(f"{key} cannot change on --resume (the run estimates it when training ends)")
    return config_from_dict(apply_overrides(saved.to_dict(), overrides))


def trim_curve(path: Path, step: int) -> None:
    """Drop ``curve.jsonl`` rows past ``step`` (and a row cut off mid-write): what a crash after the last
    checkpoint left behind, which the resumed run writes again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def resume_checkpoint(out_dir: str | Path, resume: str) -> Path:
    """The checkpoint ``--resume`` names: ``OUT/checkpoints/last.ckpt`` for "last", else the path given."""
    return Path(out_dir) / "checkpoints" / LAST_CHECKPOINT if resume == "last" else Path(resume)


def _resume_from(out_dir: Path, resume: str | None) -> Path | None:
    if resume is None:
        return None
    path = resume_checkpoint(out_dir, resume)
    if not path.is_file():
        hint = "start the run with a preset, without --resume" if resume == "last" else "give an existing .ckpt"
        raise ConfigError(f"--resume: {path} does not exist; {hint}")
    return path


def train(
    config: ExperimentConfig,
    out_dir: str | Path,
    resume: str | None = None,
    progress: bool = True,
    callbacks: list[Callback] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``config`` into ``out_dir``. ``resume``: a .ckpt or "last" (``out_dir/checkpoints/last.ckpt``). A
    folder that already holds a run needs ``resume`` (continue it) or ``overwrite`` (remove it and start again).

    Everything that can be checked is checked before the folder is touched: the config, the checkpoint to resume
    (read tensors-only; what may change on resume: :data:`RESUMABLE`), the data, the model it builds. Then the
    folder's writer lock is taken (a second writer is refused, naming the holder), and checkpoints are written
    atomically."""
    k = kind(config.task)
    out_dir = Path(out_dir)
    resume_path = _resume_from(out_dir, resume)
    step = 0
    if resume_path is not None:
        ckpt = read_checkpoint(resume_path)  # refuses a file that would run code, or a corrupt one, in one line
        saved = config_of_checkpoint(ckpt, resume_path)
        config, step = resumed_config(saved, config), int(ckpt.get("global_step", 0))
    configure_threads(config)
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    start = time.monotonic()
    train_set, val_set = build_dataset(config.data, "train"), build_dataset(config.data, "val")
    if train_set.resolution != config.model.resolution:
        raise ConfigError(
            f"data.resolution {train_set.resolution} differs from model.resolution {config.model.resolution}"
        )
    k.module.check_data(config, train_set)
    warm = None  # a resumed run has its weights in its checkpoint
    if config.trainer.init_from and resume_path is None:
        warm = warm_start_weights(k.build_model(config.model), config.trainer.init_from, config.trainer.init_parts)
    module = k.build_module(config)  # built (and so checked) before the folder is touched
    if warm is not None:
        module.model.load_state_dict(warm, strict=False)
    # a start that fails leaves no folder behind (FolderLock removes the one it made)
    with FolderLock(out_dir, f"train {config.name}") if not _is_replica() else contextlib.nullcontext():
        claim_run_folder(out_dir, resume, overwrite)
        if resume_path is not None:
            trim_curve(out_dir / "curve.jsonl", step)
        return _fit(k, config, out_dir, train_set, val_set, resume_path, module, progress, callbacks, start)


def _fit(k, config, out_dir, train_set, val_set, resume_path, module, progress, callbacks, start) -> TrainResult:
    data_seed = config.trainer.seed if config.trainer.data_seed is None else config.trainer.data_seed
    data = SceneDataModule(train_set, val_set, config.optim.batch_size, data_seed, config.data.num_workers)
    # "auto" becomes what runs (and what model/config.json records)
    config.trainer.precision, config.trainer.channels_last = resolve_switches(config, module, train_set)  # type: ignore[assignment]
    config.trainer.compile = resolve_compile(config, module, train_set)
    module.hparams["config"] = config.to_dict()  # the checkpoints record what "auto" chose, for an exact resume
    monitor = k.monitor if k.evaluator.can_score(val_set) else None
    trainer = build_trainer(config, out_dir, progress, callbacks, monitor=monitor)
    with warnings.catch_warnings():
        # SceneDataModule resumes mid-epoch itself (its sampler skips the batches done), which Lightning cannot see
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")  # Lightning's own deprecation
        warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging")
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume_path, weights_only=True)
        except SystemExit as e:  # Lightning turns Ctrl-C into exit(1) after saving what it can
            if trainer.interrupted:
                raise KeyboardInterrupt from e
            raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    if (entries := module.end_of_fit_state()) and trainer.is_global_zero:  # the autoencoder's scaling factor
        patch_checkpoint(out_dir / "checkpoints" / LAST_CHECKPOINT, entries)
    model_dir = out_dir / "model"
    if trainer.is_global_zero:
        save_trained(module.model, config, model_dir)
    return TrainResult(module, trainer, model_dir, time.monotonic() - start)
