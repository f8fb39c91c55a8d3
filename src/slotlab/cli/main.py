"""The ``slotlab`` command: train, eval, demo, visualize, reconstruct, concepts, compose, edit, probe, presets, data."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from slotlab.cli.concepts import add_compose, add_concepts, add_edit
from slotlab.cli.data import add_data
from slotlab.cli.lsd import add_fid, add_reconstruct, demo_lsd
from slotlab.cli.probe import add_probe
from slotlab.errors import SlotlabError


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a preset", description="Train a preset (name or YAML path) with dotted overrides, e.g.\n"
                       "  slotlab train tetrominoes --out runs/tetro optim.lr=2e-4 trainer.precision=bf16-mixed",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", help="preset name (see `slotlab presets`) or a YAML file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (values parsed as YAML)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, logs/ (TensorBoard), curve.jsonl, model/")
    p.add_argument("--resume", nargs="?", const="last", default=None,
                   help="resume from a .ckpt, or (no value) from OUT/checkpoints/last.ckpt")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT already holds a run: remove its checkpoints, logs, curve and model, and start again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_model_and_data(p) -> None:
    """The options of commands that run a trained model on data."""
    p.add_argument("--checkpoint", required=True, help="model folder (model.safetensors + config.json), run folder or .ckpt")
    p.add_argument("--data", help="a store from `slotlab data convert` (all of it), or a .npz with image uint8 "
                   "[N,H,W,3] and optional mask (one-hot [N,K,H,W] or labels [N,H,W]); default: the validation split "
                   "of the model's training dataset")
    p.add_argument("--split", choices=["val", "test"], default="val",
                   help="without --data: the training dataset's validation split (default) or its held-out test split")
    p.add_argument("--seed", type=int, default=0, help="seed of the slot initialisation noise")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model: metrics as JSON",
                       description="Object discovery: segment images and score them against ground-truth masks "
                       "(FG-ARI and ARI, averaged over images). Set prediction: AP at distance thresholds inf, 1, "
                       "0.5, 0.25, 0.125 (all images ranked together) and the Hungarian loss.")
    _add_model_and_data(p)
    p.add_argument("--out", help="write the metrics JSON here (also printed)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-iterations", type=int, help="Slot Attention iterations at test time (default: as trained)")
    p.set_defaults(func=cmd_eval)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="generate data, train, evaluate and draw, on a CPU in minutes",
                       description="--task object_discovery (default): procedural Tetrominoes end to end with the "
                       "tetrominoes_demo preset: generate data, train, evaluate on 320 held-out scenes, write "
                       "metrics.json, the model and PNG grids. --task lsd: procedural CLEVR-like scenes, the image "
                       "autoencoder (autoencoder_demo), then Latent Slot Diffusion on its latents (lsd_demo), then "
                       "FG-ARI/mBO/mIoU on held-out scenes and reconstructions from slots.")
    p.add_argument("--task", choices=["object_discovery", "lsd"], default="object_discovery")
    p.add_argument("--autoencoder-set", action="append", default=[], metavar="KEY=VALUE",
                   help="--task lsd: an override of the autoencoder stage (autoencoder_demo), repeatable")
    p.add_argument("--out", default="slotlab-demo", help="output folder (default: slotlab-demo)")
    p.add_argument("--minutes", type=float, help="training time budget in minutes (default: the preset's: 8.5 for "
                   "object discovery, 40 for the LSD stage)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the demo preset")
    p.set_defaults(func=cmd_demo)


def _add_visualize(sub) -> None:
    p = sub.add_parser("visualize", help="PNG grid: input, reconstruction, segmentation, per-slot masks",
                       description="Draw a PNG grid, one row per image. Object discovery: input, reconstruction, "
                       "predicted segmentation, ground truth (when the data has masks), each slot's alpha mask and "
                       "contents. Set prediction: the image with each confident slot marked where it attends, the "
                       "predicted objects (confidence, attributes, position) beside the true ones, and every slot's "
                       "attention map. Latent Slot Diffusion: as `slotlab reconstruct` with its defaults (input, "
                       "autoencoder reconstruction, decoded from the slots, segmentation, ground truth, attention maps).")
    _add_model_and_data(p)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--num-images", type=int, default=8)
    p.set_defaults(func=cmd_visualize)


def _add_presets(sub) -> None:
    p = sub.add_parser("presets", help="list presets, or print one as YAML",
                       description="List the presets; with a name, print its full config (defaults filled in).")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slotlab", description="Object-centric learning with Slot Attention.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_eval, _add_demo, _add_visualize, add_reconstruct, add_concepts, add_compose, add_edit,
                add_fid, add_probe, _add_presets, add_data):
        add(sub)
    return parser


def _version() -> str:
    from slotlab import __version__

    return f"slotlab {__version__}"


# ----------------------------------------------------------------------------------------------- commands


def cmd_train(args) -> int:
    from slotlab.config import load_config
    from slotlab.training.run import train

    config = load_config(args.preset, args.overrides)
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if result.trainer.is_global_zero:
        print(f"trained {result.trainer.global_step} steps in {result.seconds:.0f} s; model saved to {result.model_dir}")
    return 0


def _eval_dataset(config, data: str | None, resolution: int, split: str = "val"):
    """The dataset to evaluate on: a store, a .npz (cropped/resized as the model was trained) or a split ("val" or
    "test") of the training dataset."""
    from slotlab.data.formats.npz import load_npz
    from slotlab.data.registry import build_dataset, store_dataset, to_scene_dataset
    from slotlab.data.store import Store, is_store
    from slotlab.data.transforms import centre_crop
    from slotlab.errors import DataError

    if data is None:
        if config is None:
            raise DataError("this model folder has no experiment.yaml; pass --data FILE.npz")
        return build_dataset(config.data, split)
    if is_store(data):
        store = Store(data)
        if store.attrs.get("resolution") != resolution:
            raise DataError(f"{data} was converted at resolution {store.attrs.get('resolution')}; the model takes "
                            f"{resolution}: convert again with --resolution {resolution}")
        return store_dataset(store)
    images, labels = load_npz(data)
    h, w = images.shape[1:3]
    crop = None
    if (h, w) != (resolution, resolution):
        crop = config.data.crop if config is not None else None
        if crop is None or crop[0] + crop[2] > h or crop[1] + crop[3] > w:
            crop = centre_crop(h, w, min(h, w))  # the training crop does not apply: largest centred square
    return to_scene_dataset(images, labels, crop, resolution)


def cmd_eval(args) -> int:
    from slotlab.checkpoints import load_trained
    from slotlab.errors import DataError
    from slotlab.evaluation import evaluate
    from slotlab.models.set_prediction import SlotSetPredictor

    model, config = load_trained(args.checkpoint)
    dataset = _eval_dataset(config, args.data, model.config.resolution, args.split)
    where = args.data or {"val": "validation split", "test": "test split"}[args.split]
    if isinstance(model, SlotSetPredictor):
        if "targets" not in dataset.extra:
            raise DataError(f"{where}: has no set-prediction targets to score against")
    elif args.data and dataset.labels is None and model.__class__.__name__ != "ImageAutoencoder":
        raise DataError(f"{args.data}: has no 'mask' array, so there is nothing to score against")
    metrics = evaluate(model, dataset, batch_size=args.batch_size, seed=args.seed, num_iterations=args.num_iterations,
                       progress=True)
    metrics.update(checkpoint=str(args.checkpoint), data=where)
    _write_json(metrics, args.out)
    return 0


def cmd_visualize(args) -> int:
    from slotlab.checkpoints import load_trained
    from slotlab.errors import DataError
    from slotlab.models.image_autoencoder import load_image_autoencoder
    from slotlab.models.lsd import LatentSlotDiffusion
    from slotlab.models.object_discovery import SlotAutoencoder
    from slotlab.models.set_prediction import SlotSetPredictor
    from slotlab.visualize import draw_lsd_grid, draw_model_grid, draw_set_prediction_grid

    model, config = load_trained(args.checkpoint)
    if not isinstance(model, (SlotAutoencoder, SlotSetPredictor, LatentSlotDiffusion)):
        raise DataError(f"{args.checkpoint} holds a {type(model).__name__} model; visualize draws object "
                        "discovery, set prediction and Latent Slot Diffusion models")
    dataset = _eval_dataset(config, args.data, model.config.resolution, args.split)
    if isinstance(model, LatentSlotDiffusion):  # `slotlab reconstruct` draws the same with sampler options
        autoencoder = load_image_autoencoder(model.config.autoencoder).eval()
        path = draw_lsd_grid(model, autoencoder, dataset, args.out, args.num_images, args.seed)
    else:
        draw = draw_set_prediction_grid if isinstance(model, SlotSetPredictor) else draw_model_grid
        path = draw(model, dataset, args.out, args.num_images, args.seed)
    print(f"wrote {path}")
    return 0


def cmd_demo(args) -> int:
    from slotlab.checkpoints import checkpoint_step, load_trained, save_trained
    from slotlab.config import load_config
    from slotlab.data.registry import build_dataset
    from slotlab.evaluation import evaluate_object_discovery
    from slotlab.training.run import BEST_CHECKPOINT, train
    from slotlab.visualize import draw_model_grid

    if args.task == "lsd":
        return demo_lsd(args)
    start = time.monotonic()
    overrides = [f"trainer.seed={args.seed}", f"data.seed={args.seed}", *args.overrides]
    if args.minutes is not None:
        overrides.append(f"trainer.max_time_minutes={args.minutes}")
    config = load_config("tetrominoes_demo", overrides)
    out = Path(args.out)
    print(f"slotlab demo: procedural Tetrominoes, {config.data.train_size} training scenes, "
          f"training for up to {config.trainer.max_time_minutes} min, output in {out}", flush=True)
    result = train(config, out, overwrite=True)  # a demo run again into the same folder starts over
    test = build_dataset(config.data, "test")  # 320 scenes from a seed used by neither training nor validation
    final = evaluate_object_discovery(result.module.model.float(), test, seed=args.seed)
    best_path = out / "checkpoints" / BEST_CHECKPOINT
    model, best_step = result.module.model, result.trainer.global_step
    if best_path.is_file():  # the weights with the best validation FG-ARI (early stopping on the validation split)
        model, _ = load_trained(best_path)
        best_step = checkpoint_step(best_path)
        save_trained(model, config, result.model_dir)
    metrics = evaluate_object_discovery(model, test, seed=args.seed)
    metrics.update(step=best_step, steps=result.trainer.global_step, fg_ari_final_weights=final["fg_ari"],
                   train_seconds=round(result.seconds, 1), seconds=round(time.monotonic() - start, 1),
                   model=str(result.model_dir), selection="checkpoint with the best validation FG-ARI",
                   test="320 procedural scenes from a seed disjoint from training and validation")
    draw_model_grid(model, test, out / "grid.png", 8, args.seed)
    _write_json(metrics, out / "metrics.json")
    print(f"FG-ARI {metrics['fg_ari']:.3f} on {metrics['num_images']} test scenes (weights of step {best_step} of "
          f"{metrics['steps']}), {metrics['seconds']:.0f} s in all; wrote {out}/metrics.json, {out}/grid.png, "
          f"{result.model_dir}/")
    return 0


def cmd_presets(args) -> int:
    from slotlab.config import list_presets, load_config

    if args.name:
        print(load_config(args.name).to_yaml(), end="")
    else:
        print("\n".join(list_presets()))
    return 0


def _write_json(metrics: dict, path: str | Path | None) -> None:
    text = json.dumps(metrics, indent=2)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; key=value overrides may also come after options (``train P --out D a.b=1``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    resume = getattr(args, "resume", None)
    if resume and "=" in resume and not resume.endswith(".ckpt"):  # `--resume a.b=1`: a bare --resume, then an override
        args.overrides.insert(0, resume)
        args.resume = "last"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args)
    except SlotlabError as e:
        print(f"slotlab: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"slotlab: error: file not found: {e.filename or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slotlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
