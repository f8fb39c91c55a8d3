"""Experiment configuration: typed dataclasses, YAML presets and dotted command-line overrides.

A preset is a YAML file in ``configs/`` whose top-level sections match :class:`ExperimentConfig`.
Overrides look like ``optim.lr=1e-3`` or ``model.encoder_channels=[32,32]`` (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from slotlab.errors import ConfigError
from slotlab.models.image_autoencoder import ImageAutoencoderConfig
from slotlab.models.lsd import LatentSlotDiffusionConfig
from slotlab.models.object_discovery import SlotAutoencoderConfig
from slotlab.models.set_prediction import SlotSetPredictorConfig

# The model section of a config is read as the task's model config.
MODEL_CONFIGS: dict[str, type] = {
    "object_discovery": SlotAutoencoderConfig,
    "set_prediction": SlotSetPredictorConfig,
    "autoencoder": ImageAutoencoderConfig,  # the image autoencoder stage of LSD
    "lsd": LatentSlotDiffusionConfig,
}


@dataclass
class DataConfig:
    dataset: str = "tetrominoes"  # a name from slotlab.data.DATASETS
    path: str | None = None  # a converted store (`slotlab data convert`) or, for "npz", the file; unset: procedural
    val_path: str | None = None  # a second store for validation/test (else the last 2 * val_size items of path)
    train_size: int = 60_000  # procedural datasets: scenes generated for training
    val_size: int = 320  # held-out scenes evaluated during and after training
    seed: int = 0  # procedural datasets: the training set's seed (validation uses a disjoint one)
    crop: list[int] | None = None  # [top, left, height, width] applied before resizing
    resolution: int = 128  # images are resized (bilinear) to this side after the crop
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 4e-4
    batch_size: int = 64  # per device
    max_steps: int = 500_000
    warmup_steps: int = 10_000
    decay_rate: float = 0.5  # lr * decay_rate ** (step / decay_steps), counted from step 0 (official code)
    decay_steps: int = 100_000
    grad_clip: float | None = None  # max gradient norm; None = no clipping (paper)
    optimizer: str = "adam"  # "adam" or "adamw"
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (LSD: 0.01)


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"  # or "bf16-mixed", "16-mixed"; "auto": the faster of fp32 and bf16 here (training/precision.py)
    compile: bool = False  # torch.compile the model
    channels_last: bool = False
    seed: int = 0
    max_time_minutes: float | None = None  # stop training after this long (the step count is then logged)
    val_every_n_steps: int = 5_000
    checkpoint_every_n_steps: int = 5_000
    log_every_n_steps: int = 50
    num_threads: int | None = None  # torch intra-op threads on CPU (None: torch's default)
    ema_decay: float | None = None  # keep an exponential moving average of the weights (e.g. 0.999); validation,
    # checkpoints and the exported model then use the averaged weights


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    task: str = "object_discovery"  # a key of MODEL_CONFIGS
    model: Any = field(default_factory=SlotAutoencoderConfig)  # the task's model config
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def config_dirs() -> list[Path]:
    """Where presets live: the installed package's copy, then the source checkout's ``configs/``."""
    here = Path(__file__).resolve().parent
    return [here / "configs", here.parents[1] / "configs"]


def list_presets() -> list[str]:
    names = set()
    for d in config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def preset_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    for d in config_dirs():
        if (d / f"{p}.yaml").is_file():
            return d / f"{p}.yaml"
    raise ConfigError(f"unknown preset {str(name_or_path)!r}; presets: {', '.join(list_presets())}")


def _check_value(typ, value, where: str):
    """Check (and where lossless, convert) a leaf value against its annotated type."""
    args = [a for a in get_args(typ) if a is not type(None)] if get_origin(typ) in (Union, UnionType) else [typ]
    if value is None:
        if type(None) in get_args(typ) or typ is Any:
            return None
        raise ConfigError(f"{where} must not be null")
    for t in args:
        if t is Any:
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
            except ValueError:
                continue
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and isinstance(value, t):
            return value
        if get_origin(t) is list and isinstance(value, list):
            (item,) = get_args(t)
            return [_check_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{where} = {value!r} is not a valid {getattr(typ, '__name__', None) or typ}")


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {values!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where or 'config'}; expected some of {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        typ, here = hints[key], f"{where}.{key}".lstrip(".")
        kwargs[key] = _build(typ, value, here) if dataclasses.is_dataclass(typ) else _check_value(typ, value, here)
    return cls(**kwargs)


def _model_config_class(task: Any) -> type:
    if task not in MODEL_CONFIGS:
        raise ConfigError(f"unknown task {task!r}; tasks: {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[task]


def config_from_dict(values: dict) -> ExperimentConfig:
    if not isinstance(values, dict):
        raise ConfigError(f"config must be a mapping, got {values!r}")
    model_cls = _model_config_class(values.get("task", "object_discovery"))
    config = _build(ExperimentConfig, {k: v for k, v in values.items() if k != "model"}, "")
    config.model = _build(model_cls, values.get("model", {}), "model")
    return config


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides (value parsed as YAML) to a nested config dict, in place.

    Keys are checked against :class:`ExperimentConfig`: only its sections can be entered.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        parts = key.strip().split(".")
        node, cls = values, ExperimentConfig
        for i, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
            if part not in fields:
                raise ConfigError(f"override {item!r}: no key {'.'.join(parts[: i + 1])!r}")
            typ = get_type_hints(cls)[part]
            if cls is ExperimentConfig and part == "model":
                typ = _model_config_class(values.get("task", "object_discovery"))
            if i == len(parts) - 1:
                break
            if not dataclasses.is_dataclass(typ):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])!r} is a value, not a section")
            node, cls = node.setdefault(part, {}), typ
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return values


def load_config(preset: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a preset (name or YAML path), apply overrides, check every key and return the typed config."""
    with open(preset_path(preset)) as f:
        values = yaml.safe_load(f) or {}
    return config_from_dict(apply_overrides(values, overrides or []))
