"""Option groups that several commands share, declared once, and the helpers commands use to act on them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slotlab.errors import DataError

CHECKPOINT_HELP = "model folder (model.safetensors + config.json), run folder, model.safetensors or .ckpt"
DATA_HELP = (
    "a store from `slotlab data convert` (all of it), a .npz with image uint8 [N,H,W,3] and optional "
    "mask (one-hot [N,K,H,W] or labels [N,H,W]), or image files (a folder, a quoted glob such as 'shots/*.jpg', "
    "or one file; each image's centred square, no masks); default: a split of the model's training dataset"
)


def number(
    p: argparse.ArgumentParser, *flags: str, minimum: int | float, maximum: int | float | None = None, **kwargs
) -> None:
    """An option (or positional) that takes a number of at least ``minimum`` (and at most ``maximum``): checked by
    :func:`check_numbers` after parsing (argparse checks types and choices, not ranges)."""
    parser = kwargs.pop("parser", p)  # the parser, when ``p`` is a group of its options
    action = p.add_argument(*flags, **kwargs)
    bounds = {**(parser.get_default("_bounds") or {}), action.dest: (flags[-1], minimum, maximum)}
    parser.set_defaults(_bounds=bounds)


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse, in one line, a number outside its range (see :func:`number`)."""
    from slotlab.errors import ConfigError

    for dest, (flag, minimum, maximum) in (getattr(args, "_bounds", None) or {}).items():
        value = getattr(args, dest, None)
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v < minimum:
                raise ConfigError(f"{flag} must be >= {minimum}, got {v}")
            if v is not None and maximum is not None and v > maximum:
                raise ConfigError(f"{flag} must be <= {maximum}, got {v}")


def add_checkpoint(p: argparse.ArgumentParser, required: bool = True, help: str = CHECKPOINT_HELP) -> None:
    p.add_argument("--checkpoint", required=required, help=help)


def add_data(p: argparse.ArgumentParser, splits: tuple[str, ...] = ("val", "test")) -> None:
    """``--data`` and ``--split``: the images to run a model on."""
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument(
        "--split",
        choices=list(splits),
        default="val",
        help=f"without --data: the split of the training dataset ({', '.join(splits)}; default val)",
    )


def add_seed(p: argparse.ArgumentParser, what: str = "the slot initialisation noise") -> None:
    from slotlab.fields import SEED_MAX

    number(p, "--seed", minimum=0, maximum=SEED_MAX, type=int, default=0, help=f"seed of {what} (default 0)")


def add_batch_size(p: argparse.ArgumentParser, default: int = 64) -> None:
    number(p, "--batch-size", minimum=1, type=int, default=default, help=f"images per batch (default {default})")


def add_out(p: argparse.ArgumentParser, help: str, required: bool = False, png: bool = False) -> None:
    """``--out FILE``, checked by :func:`check_outputs` before the command works (a wrong name, a folder, an
    unwritable place fail at once, not after minutes of sampling); ``png``: the file must end in .png."""
    p.add_argument("--out", required=required, help=help)
    p.set_defaults(_out_check=(".png", "a picture") if png else (None, "the output"))


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, in one line, an ``--out`` file (see :func:`add_out`) that could not be written at the end."""
    from slotlab.io import check_output

    if hasattr(args, "_out_check") and args.out is not None:
        check_output(args.out, *args._out_check)


def add_sampling(p: argparse.ArgumentParser, what: str = "the images") -> None:
    """How a diffusion decoder (LSD) samples; models that decode directly ignore it."""
    number(p, "--steps", minimum=1, type=int, default=25, help=f"LSD: sampling steps to decode {what} (default 25)")
    p.add_argument("--sampler", choices=["dpm", "ddim"], default="dpm", help="LSD: DPM-Solver++ (default) or DDIM")
    p.add_argument("--guidance", type=float, default=1.0, help="LSD: classifier-free guidance scale (1: none)")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def sampling_of(args):
    from slotlab.models import Sampling

    return Sampling(args.steps, args.sampler, args.guidance)


def load_model(args, command: str):
    """The model of ``--checkpoint`` and its experiment config; a kind that cannot serve ``command`` is refused."""
    from slotlab.checkpoints import load_trained

    return load_trained(args.checkpoint, command=command)


def open_data(args, model, config, split: str | None = None):
    """The dataset of ``--data`` (cropped and resized as the model was trained) or of ``--split``."""
    from slotlab.data.registry import open_dataset

    return open_dataset(
        config.data if config is not None else None,
        args.data,
        model.resolution,
        split or getattr(args, "split", None) or "val",
    )


def data_name(args, split: str | None = None) -> str:
    """How the output names the data: the --data path, or "validation split" / "test split"."""
    if args.data:
        return str(args.data)
    return {"val": "validation split", "test": "test split", "train": "training split"}[split or args.split]


def write_json(value: dict, path: str | Path | None) -> None:
    """Print ``value`` as JSON and, with ``path``, also write it there (atomically)."""
    from slotlab.io import write_json as write

    if path:
        write(path, value)
    print(json.dumps(value, indent=2))


def check_index(i: int, n: int, what: str = "image") -> int:
    if not 0 <= i < n:
        raise DataError(f"{what} {i} does not exist: the data has {n} images (0 to {n - 1})")
    return i


def concept_groups(items: list[str] | None) -> list[int | list[int]] | None:
    """``--concepts 3 7 8,9`` -> [3, 7, [8, 9]]: ids, and comma-separated groups (one of them drawn per scene)."""
    from slotlab.errors import ConfigError

    if items is None:
        return None
    out: list[int | list[int]] = []
    for item in items:
        try:
            ids = [int(x) for x in item.split(",") if x != ""]
        except ValueError:
            raise ConfigError(f"--concepts: {item!r} is not a concept id or a comma-separated group") from None
        if not ids:
            raise ConfigError(f"--concepts: {item!r} is not a concept id or a comma-separated group")
        out.append(ids if "," in item else ids[0])
    return out


def quiet_lightning() -> None:
    """Lightning's notices (devices found, tips, "attempting graceful shutdown") are not the command's output: only
    its warnings and errors are shown. Call after Lightning is imported (it sets its level on import)."""
    import logging

    import lightning  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
