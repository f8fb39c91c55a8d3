"""Save and load trained models: an exported folder (safetensors + config.json + experiment.yaml), a run folder that
holds one, or a Lightning ``.ckpt``. The model kind comes from the registry (:mod:`slotlab.kinds`), never guessed
here; a checkpoint is read with ``torch.load(weights_only=True)``, so no file runs code when it is loaded."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError

from slotlab.config import ExperimentConfig, config_from_dict
from slotlab.errors import ConfigError, DataError, SlotlabError
from slotlab.io import atomic_write_text
from slotlab.kinds import EXPERIMENT_FILE, KINDS, ModelKind, kind, kind_of_folder
from slotlab.models.base import CONFIG_FILE, WEIGHTS_FILE

__all__ = [
    "EXPERIMENT_FILE",
    "checkpoint_step",
    "config_of_checkpoint",
    "load_trained",
    "model_folder",
    "read_checkpoint",
    "save_trained",
    "warm_start_weights",
]


def save_trained(model, config: ExperimentConfig, model_dir: str | Path) -> Path:
    """Weights (safetensors) + config.json + experiment.yaml, loadable by :func:`load_trained`."""
    model_dir = Path(model_dir)
    model.save_pretrained(model_dir)
    atomic_write_text(model_dir / EXPERIMENT_FILE, config.to_yaml())
    return model_dir


def _is_model_folder(p: Path) -> bool:
    """config.json + model.safetensors, or the config file a model class of its own writes (the autoencoder's)."""
    own = {k.model.config_file for k in KINDS.values()} - {CONFIG_FILE}
    return ((p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()) or any((p / f).is_file() for f in own)


def model_folder(path: str | Path) -> Path | None:
    """The model folder ``path`` names: itself, its ``model/`` (a run folder), or the folder of a
    ``model.safetensors`` file; None for a ``.ckpt``."""
    path = Path(path)
    if path.is_file() and path.name == WEIGHTS_FILE:
        path = path.parent
    if path.is_dir() and not _is_model_folder(path) and _is_model_folder(path / "model"):
        path = path / "model"
    if path.is_dir():
        if not _is_model_folder(path):
            raise DataError(f"{path}: not a slotlab model folder (needs config.json and model.safetensors)")
        return path
    if path.is_file() and path.suffix == ".ckpt":
        return None
    what = "not a checkpoint" if path.exists() else "checkpoint not found"
    raise DataError(f"{what}: {path} (give a model folder, a run folder or a .ckpt file)")


def _starts_as_zip(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return True  # unreadable: said by the caller's own message


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """A Lightning ``.ckpt`` as a dict, unpickled with ``weights_only=True``: tensors, numbers, strings and plain
    containers only. A file that needs anything else (a pickled object that could run code) is refused in one line
    before anything of it runs. ``mmap``: the tensors are mapped, not read (to look at the config alone)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        if not _starts_as_zip(path):  # torch.save writes zip files (an old-style pickle is refused here too)
            raise DataError(f"{path}: not a PyTorch checkpoint (not a file that torch.save wrote)") from None
        if not isinstance(e, pickle.UnpicklingError):
            raise DataError(f"{path}: not a readable checkpoint (truncated or corrupt? {_one_line(e, 160)})") from None
        raise DataError(
            f"{path}: refused: this checkpoint holds Python objects that slotlab does not load "
            f"(only weights and plain values are read; {_one_line(e, 160)})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise DataError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def config_of_checkpoint(ckpt: dict, path: str | Path) -> ExperimentConfig:
    """The experiment config a Lightning checkpoint was trained with (a one-line error if it has none)."""
    try:
        values = ckpt["hyper_parameters"]["config"]
    except (KeyError, TypeError):
        raise DataError(f"{path}: a checkpoint without a slotlab experiment config") from None
    try:
        return config_from_dict(values)
    except ConfigError as e:
        raise DataError(f"{path}: its experiment config is invalid ({e})") from None


def load_trained(
    path: str | Path, map_location: str = "cpu", command: str | None = None
) -> tuple[torch.nn.Module, ExperimentConfig | None]:
    """``path``: a folder written by ``save_pretrained``/``slotlab train`` (model.safetensors + config.json), a run
    folder holding ``model/``, a ``model.safetensors`` file or a Lightning ``.ckpt``. Returns the model in eval mode
    and, when known, the experiment config it was trained with. With ``command``, a kind that cannot serve it is
    refused (one line) before its weights are read."""
    folder = model_folder(path)
    if folder is not None:
        k = kind_of_folder(folder)
        if command:
            k.require(command, str(path))
        config = _experiment_of_folder(folder, k)
        try:
            model = k.model.from_pretrained(folder, map_location=map_location)
        except ConfigError as e:  # a config.json value out of its range or of the wrong type
            raise DataError(f"{folder}: {e}") from None
        except SlotlabError:
            raise
        except (RuntimeError, TypeError, ValueError, OSError, SafetensorError) as e:
            raise DataError(f"{folder}: cannot load this model ({_one_line(e)})") from None
        return model.eval(), config
    ckpt = read_checkpoint(path)
    config = config_of_checkpoint(ckpt, path)
    k = kind(config.task)
    if command:
        k.require(command, str(path))
    return _model_from_state(k, config, ckpt["state_dict"], Path(path)).to(map_location).eval(), config


def _experiment_of_folder(folder: Path, k: ModelKind) -> ExperimentConfig | None:
    exp = folder / EXPERIMENT_FILE
    if not exp.is_file():
        return None
    try:
        values = yaml.safe_load(exp.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{exp}: not valid YAML ({_one_line(e, 160)})") from None
    try:
        config = config_from_dict(values)
    except ConfigError as e:
        raise DataError(f"{exp}: {e}") from None
    if config.task != k.name:
        raise DataError(f"{exp} says task {config.task!r} but the folder holds a {k.name} model")
    return config


def _model_from_state(k: ModelKind, config: ExperimentConfig, state_dict: dict[str, Any], path: Path):
    """The model of a Lightning module's state dict (keys ``model.*``)."""
    model = k.build_model(config.model)
    weights = {name[len("model.") :]: t for name, t in state_dict.items() if name.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise DataError(f"{path}: cannot load this checkpoint ({_one_line(e)})") from None
    return model


def warm_start_weights(model: torch.nn.Module, source: str | Path, parts: list[str]) -> dict[str, torch.Tensor]:
    """The weights of ``parts`` (top-level submodules, e.g. ``encoder``) of the trained model at ``source`` (any path
    :func:`load_trained` reads), checked against ``model``: every part must exist on both sides with the same
    parameter names and shapes, or a one-line :class:`DataError` says which. ``model.load_state_dict(weights,
    strict=False)`` then copies them."""
    trained, _ = load_trained(source)
    ours, theirs = model.state_dict(), trained.state_dict()
    weights: dict[str, torch.Tensor] = {}
    for part in parts:
        want = sorted(k for k in ours if k.startswith(part + "."))
        have = sorted(k for k in theirs if k.startswith(part + "."))
        if not want or want != have:
            differ = sorted(set(want) ^ set(have)) or [f"{part}.*"]
            raise DataError(f"{source}: cannot warm-start {part!r}: the parameters differ ({', '.join(differ[:3])})")
        for k in want:
            if ours[k].shape != theirs[k].shape:
                raise DataError(
                    f"{source}: cannot warm-start {part!r}: {k} is {list(theirs[k].shape)} there, "
                    f"{list(ours[k].shape)} here"
                )
            weights[k] = theirs[k]
    return weights


def checkpoint_step(path: str | Path) -> int:
    """The training step at which a Lightning ``.ckpt`` was written."""
    return int(read_checkpoint(path)["global_step"])


def _one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (e.g. load_state_dict's list of missing keys), shortened."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
