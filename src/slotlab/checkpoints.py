"""Load a trained model from an exported folder (safetensors + config) or a Lightning checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch
import yaml

from slotlab.config import ExperimentConfig, config_from_dict
from slotlab.errors import DataError
from slotlab.models import SlotAutoencoder
from slotlab.models.image_autoencoder import ImageAutoencoder
from slotlab.models.lsd import LatentSlotDiffusion
from slotlab.models.set_prediction import SlotSetPredictor

MODELS = {"object_discovery": SlotAutoencoder, "set_prediction": SlotSetPredictor, "autoencoder": ImageAutoencoder,
          "lsd": LatentSlotDiffusion}
IMAGE_AUTOENCODER_FILE = "image_autoencoder.json"

EXPERIMENT_FILE = "experiment.yaml"  # the full experiment config, saved beside exported weights


def save_trained(model, config: ExperimentConfig, model_dir: str | Path) -> Path:
    """Weights (safetensors) + config.json + experiment.yaml, loadable by :func:`load_trained`."""
    model_dir = Path(model_dir)
    model.to(memory_format=torch.contiguous_format).save_pretrained(model_dir)
    (model_dir / EXPERIMENT_FILE).write_text(config.to_yaml())
    return model_dir


def _task_of_folder(path: Path) -> tuple[str, ExperimentConfig | None]:
    exp = path / EXPERIMENT_FILE
    if exp.is_file():
        config = config_from_dict(yaml.safe_load(exp.read_text()))
        return config.task, config
    if (path / IMAGE_AUTOENCODER_FILE).is_file():
        return "autoencoder", None
    keys = set(json.loads((path / "config.json").read_text()))  # a bare save_pretrained folder
    task = "set_prediction" if "num_outputs" in keys else "lsd" if "cross_attention_dim" in keys else "object_discovery"
    return task, None


def load_trained(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, ExperimentConfig | None]:
    """``path``: a folder written by ``save_pretrained``/``slotlab train`` (model.safetensors + config.json),
    a run folder holding ``model/``, or a Lightning ``.ckpt``. Returns the model in eval mode and, when
    known, the experiment config it was trained with."""
    path = Path(path)
    def is_model(p: Path) -> bool:
        return ((p / "config.json").is_file() and (p / "model.safetensors").is_file()) or (p / IMAGE_AUTOENCODER_FILE).is_file()

    if path.is_dir() and not is_model(path) and is_model(path / "model"):
        path = path / "model"
    if path.is_dir():
        if not is_model(path):
            raise DataError(f"{path}: not a slotlab model folder (needs config.json and model.safetensors)")
        try:
            task, config = _task_of_folder(path)
            with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints where it loads from
                if task == "autoencoder":
                    model = ImageAutoencoder.from_pretrained(path).to(map_location)
                else:
                    model = MODELS[task].from_pretrained(path, map_location=map_location, strict=True)
        except (RuntimeError, TypeError, ValueError) as e:
            raise DataError(f"{path}: cannot load this model ({_one_line(e)})") from None
    elif path.is_file() and path.suffix == ".ckpt":
        from slotlab.training.run import TASKS

        try:
            task = torch.load(path, map_location="cpu", weights_only=False)["hyper_parameters"]["config"]["task"]
            module = TASKS[task][0].load_from_checkpoint(path, map_location=map_location, weights_only=False)
        except (RuntimeError, KeyError, EOFError) as e:
            raise DataError(f"{path}: cannot load this checkpoint ({_one_line(e)})") from None
        model, config = module.model, module.config
    else:
        raise DataError(f"checkpoint not found: {path} (give a model folder or a .ckpt file)")
    return model.eval(), config


def checkpoint_step(path: str | Path) -> int:
    """The training step at which a Lightning ``.ckpt`` was written."""
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _one_line(error: Exception, limit: int = 300) -> str:
    """An exception's message on one line (e.g. load_state_dict's list of missing keys), shortened."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
