"""The registry of model kinds: the one place that says what a kind of model is and what it can do.

A kind declares, once: its model config (the ``model:`` section of a preset), its model class, its Lightning module,
the validation metric that picks ``checkpoints/best.ckpt``, its evaluator (the metric path of validation and
``slotlab eval``) and its picture (``slotlab visualize``). Commands ask the registry for a model's kind
(:func:`kind_of`, :func:`kind_of_folder`) and refuse, in one line, a kind that cannot serve them
(:meth:`ModelKind.require`). Adding a kind is its own files plus one :func:`register` line below.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slotlab.errors import ConfigError, DataError
from slotlab.evaluation import (
    IMAGE_AUTOENCODER,
    LATENT_SLOT_DIFFUSION,
    OBJECT_DISCOVERY,
    SET_PREDICTION,
    Evaluator,
    run_evaluator,
)
from slotlab.models import SavedModel, SlotAutoencoder, SlotAutoencoderConfig, SlotModel
from slotlab.models.base import CLASS_KEY, CONFIG_FILE
from slotlab.models.image_autoencoder import ImageAutoencoder, ImageAutoencoderConfig
from slotlab.models.lsd import LatentSlotDiffusion, LatentSlotDiffusionConfig
from slotlab.models.set_prediction import SlotSetPredictor, SlotSetPredictorConfig
from slotlab.training.autoencoder import AutoencoderModule
from slotlab.training.base import SlotModule
from slotlab.training.lsd import LSDModule
from slotlab.training.object_discovery import ObjectDiscoveryModule
from slotlab.training.set_prediction import SetPredictionModule
from slotlab.visualize import draw_lsd_grid, draw_model_grid, draw_set_prediction_grid

Picture = Callable[..., Path]  # (model, dataset, path, num_images=8, seed=0, sampling=None) -> the PNG written

EXPERIMENT_FILE = "experiment.yaml"  # the full experiment config, saved beside exported weights

# What a command needs of a model, by capability: "slots" (a SlotModel: encode, slot masks), "images" (it draws
# images from slots: render), "latents" (it draws them through a frozen image autoencoder, by diffusion),
# "picture" (the kind has a picture).
NEEDS: dict[str, tuple[str, ...]] = {
    "eval": (),
    "visualize": ("picture",),
    "reconstruct": ("slots", "images", "latents"),
    "edit": ("slots", "images"),
    "compose": ("slots", "images"),
    "concepts": ("slots", "images"),  # members are collected with their masks as the model draws them
    "fid": ("slots", "images"),
    "probe": ("slots",),
    "app": ("slots",),
}


@dataclass(frozen=True)
class ModelKind:
    name: str
    config: type  # the model section's dataclass
    model: type[SavedModel]  # built from a config; saved as safetensors + config.json
    module: type[SlotModule]  # the Lightning module that trains it
    monitor: str  # validation metric (higher is better) that picks checkpoints/best.ckpt
    evaluator: Evaluator  # how it is scored, in validation and by `slotlab eval`
    picture: Picture | None  # what `slotlab visualize` draws
    title: str = "a model"  # how messages name it, with its article: "a Latent Slot Diffusion"

    @property
    def capabilities(self) -> frozenset[str]:
        caps = set()
        if issubclass(self.model, SlotModel):
            caps.add("slots")
            if self.model.draws_images:
                caps.add("images")
            if self.model.decodes_latents:
                caps.add("latents")
        if self.picture is not None:
            caps.add("picture")
        return frozenset(caps)

    def serves(self, command: str) -> bool:
        return set(NEEDS.get(command, ())) <= self.capabilities

    def require(self, command: str, where: str = "the checkpoint") -> ModelKind:
        """This kind, or a one-line :class:`DataError` when it cannot serve ``command``."""
        if not self.serves(command):
            able = " or ".join(k.title for k in KINDS.values() if k.serves(command)) or "no"
            raise DataError(
                f"`slotlab {command}` works only with {able} model; {where} holds {self.title} "
                f"({self.model.__name__}), not {able} model"
            )
        return self

    def build_model(self, model_config: Any):
        """A new model of this kind; a config its modules refuse (e.g. 2 conv channels but 3 strides) is a one-line
        :class:`ConfigError`."""
        try:
            return self.model(model_config)
        except ValueError as e:
            raise ConfigError(f"model: {e}") from None

    def build_module(self, config) -> SlotModule:
        """The Lightning module for the experiment ``config`` (whose ``task`` is this kind), with a new model."""
        return self.module(config, self.build_model(config.model), self.evaluator, self.monitor)

    def evaluate(self, model, dataset, **kwargs) -> dict:
        """:func:`slotlab.evaluation.run_evaluator` with this kind's evaluator."""
        return run_evaluator(self.evaluator, model, dataset, **kwargs)


KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Add a kind to the registry (its name and its model class must be new)."""
    if kind.name in KINDS:
        raise ValueError(f"model kind {kind.name!r} is registered already")
    if any(k.model is kind.model for k in KINDS.values()):
        raise ValueError(f"{kind.model.__name__} is the model of a registered kind already")
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    KINDS.pop(name, None)


def kind(name: str) -> ModelKind:
    """The kind called ``name`` (a preset's ``task``), or a one-line :class:`ConfigError` listing the kinds."""
    if name not in KINDS:
        raise ConfigError(f"unknown task {name!r}; tasks: {', '.join(KINDS)}")
    return KINDS[name]


def kind_of(model: Any) -> ModelKind:
    """The kind of a model instance (or class), by its class."""
    cls = model if isinstance(model, type) else type(model)
    for base in cls.__mro__:
        for k in KINDS.values():
            if k.model is base:
                return k
    raise DataError(f"a {cls.__name__} is not a slotlab model of any kind ({', '.join(KINDS)})")


def kind_of_record(record: dict, where: str = "config.json") -> ModelKind:
    """The kind whose model class config.json names (``_class_name``)."""
    name = record.get(CLASS_KEY)
    for k in KINDS.values():
        if k.model.__name__ == name:
            return k
    raise DataError(f"{where}: {CLASS_KEY} {name!r} is not a slotlab model class")


def kind_of_folder(path: str | Path) -> ModelKind:
    """The kind of a saved model folder: the ``_class_name`` in its config file (``config.json``, or the file the
    model class writes, e.g. the image autoencoder's). For folders written before it was recorded: experiment.yaml's
    task, else the config's keys."""
    path = Path(path)
    for k in KINDS.values():
        config_file = path / k.model.config_file
        if config_file.is_file():
            record = _read_record(config_file)
            if CLASS_KEY in record:
                return kind_of_record(record, str(config_file))
            if config_file.name != CONFIG_FILE:  # a config file of the kind's own: the kind's folder
                return k
    if (path / EXPERIMENT_FILE).is_file():
        try:
            task = yaml.safe_load((path / EXPERIMENT_FILE).read_text()).get("task", "object_discovery")
        except (yaml.YAMLError, AttributeError) as e:
            raise DataError(f"{path / EXPERIMENT_FILE}: not a valid experiment config ({_first_line(e)})") from None
        return kind(task)
    if not (path / CONFIG_FILE).is_file():
        raise DataError(f"{path}: not a slotlab model folder (needs config.json and model.safetensors)")
    record = _read_record(path / CONFIG_FILE)  # a bare save_pretrained folder of an earlier version: its keys tell
    return kind(
        "set_prediction"
        if "num_outputs" in record
        else "lsd"
        if "cross_attention_dim" in record
        else "object_discovery"
    )


def evaluate(model, dataset, **kwargs) -> dict:
    """The metrics of ``model`` on ``dataset``, by its kind's evaluator (``batch_size``, ``seed``,
    ``num_iterations``, ``progress``: see :func:`slotlab.evaluation.run_evaluator`)."""
    return kind_of(model).evaluate(model, dataset, **kwargs)


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a valid model config ({_first_line(e)})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a JSON object of config values")
    return record


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]


# ------------------------------------------------------------------------------------------- the kinds

register(
    ModelKind(
        "lsd",
        LatentSlotDiffusionConfig,
        LatentSlotDiffusion,
        LSDModule,
        "val/fg_ari",
        LATENT_SLOT_DIFFUSION,
        draw_lsd_grid,
        "a Latent Slot Diffusion",
    )
)
register(
    ModelKind(
        "object_discovery",
        SlotAutoencoderConfig,
        SlotAutoencoder,
        ObjectDiscoveryModule,
        "val/fg_ari",
        OBJECT_DISCOVERY,
        draw_model_grid,
        "an object discovery (Slot Attention autoencoder)",
    )
)
register(
    ModelKind(
        "set_prediction",
        SlotSetPredictorConfig,
        SlotSetPredictor,
        SetPredictionModule,
        "val/ap_1",
        SET_PREDICTION,
        draw_set_prediction_grid,
        "a Slot Attention set prediction",
    )
)
register(
    ModelKind(
        "autoencoder",
        ImageAutoencoderConfig,
        ImageAutoencoder,
        AutoencoderModule,
        "val/psnr",
        IMAGE_AUTOENCODER,
        None,
        "an image autoencoder (LSD's first stage)",
    )
)
