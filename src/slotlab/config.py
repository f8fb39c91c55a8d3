"""Experiment configuration: typed dataclasses, YAML presets and dotted command-line overrides.

An experiment is a model kind (``task``, a name in :mod:`slotlab.kinds`) with its model config, plus the data,
optim and trainer sections. A preset is a YAML file in ``configs/`` whose top-level keys match
:class:`ExperimentConfig`. Overrides look like ``optim.lr=1e-3`` or ``model.encoder_channels=[32,32]`` (values parsed
as YAML). Every value is checked when the config is loaded (types, ``Literal`` choices, number ranges:
:mod:`slotlab.fields`), before anything is written, with one-line errors naming the key.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from slotlab.data.config import DataConfig
from slotlab.errors import ConfigError
from slotlab.fields import build
from slotlab.kinds import kind
from slotlab.models import SlotAutoencoderConfig
from slotlab.training.config import OptimConfig, TrainerConfig

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "OptimConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_dirs",
    "config_from_dict",
    "list_presets",
    "load_config",
    "model_config_class",
    "preset_header",
    "preset_path",
    "preset_summary",
]


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    task: str = "object_discovery"  # the model kind: a name registered in slotlab.kinds
    model: Any = field(default_factory=SlotAutoencoderConfig)  # the kind's model config
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
    names: set[str] = set()
    for d in config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def preset_header(name_or_path: str | os.PathLike) -> str:
    """The comment block a preset file opens with (what it trains and why its settings are what they are)."""
    lines = preset_path(name_or_path).read_text(encoding="utf-8").splitlines()
    header = itertools.takewhile(lambda line: line.startswith("#"), lines)
    return "".join(line + "\n" for line in header)


def preset_summary(name_or_path: str | os.PathLike) -> str:
    """The one-sentence summary a preset opens with (the first line of its header); '' if it has none."""
    return preset_header(name_or_path).partition("\n")[0].removeprefix("#").strip()


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


def model_config_class(task: Any) -> type:
    """The model config dataclass of the kind named ``task``."""
    if not isinstance(task, str):
        raise ConfigError(f"task = {task!r} is not the name of a model kind")
    return kind(task).config


def config_from_dict(values: dict) -> ExperimentConfig:
    """A checked :class:`ExperimentConfig` from nested plain values (YAML, a checkpoint's hyperparameters)."""
    if not isinstance(values, dict):
        raise ConfigError(f"config must be a mapping, got {values!r}")
    model_cls = model_config_class(values.get("task", "object_discovery"))
    config = build(ExperimentConfig, {k: v for k, v in values.items() if k != "model"}, "")
    config.model = build(model_cls, values.get("model") or {}, "model")
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
        node: dict = values
        cls: Any = ExperimentConfig
        for i, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if part not in fields:
                raise ConfigError(f"override {item!r}: no key {'.'.join(parts[: i + 1])!r}")
            typ = get_type_hints(cls)[part]
            if cls is ExperimentConfig and part == "model":
                typ = model_config_class(values.get("task", "object_discovery"))
            if i == len(parts) - 1:
                break
            if not dataclasses.is_dataclass(typ):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])!r} is a value, not a section")
            if not isinstance(node.get(part), dict):  # absent, or left empty in the YAML
                node[part] = {}
            node, cls = node[part], typ
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return values


def read_preset(preset: str | os.PathLike) -> dict:
    """A preset's YAML as plain values (a one-line error when it is not a valid YAML mapping)."""
    path = preset_path(preset)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
    if values is None:  # an empty file would silently be every default
        raise ConfigError(f"{path}: an empty preset; give at least its task (`slotlab presets NAME` prints one)")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(values).__name__}")
    return values


def load_config(preset: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a preset (name or YAML path), apply overrides, check every key and return the typed config."""
    return config_from_dict(apply_overrides(read_preset(preset), overrides or []))
