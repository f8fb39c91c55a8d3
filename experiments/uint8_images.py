"""Does storing resized images as uint8 matter? slotlab crops and resizes every image once (bilinear, as the
papers' tf.image.resize) and keeps the result as uint8, where the official pipelines resize in float at every read;
the two differ by up to half a grey level (0.0039 in [-1, 1]). This scores one trained model on the same held-out
scenes both ways: the uint8 images slotlab stores, and the float images before rounding.

    python experiments/uint8_images.py --checkpoint DIR/model     # a model whose data is resized (e.g. 192 -> 64)
    python experiments/uint8_images.py --checkpoint DIR/model --crop 40 80 160 160   # a fractional factor (2.5x)

Writes ``OUT/uint8_images.json`` and prints the table. Use a model trained on a procedural twin (the scenes are
generated again at their native size from a seed neither training nor validation used).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from slotlab.checkpoints import load_trained
from slotlab.data import SceneDataset
from slotlab.data.registry import dataset_info, to_scene_dataset
from slotlab.data.transforms import masks_to_labels
from slotlab.errors import DataError
from slotlab.io import write_json
from slotlab.kinds import evaluate


def float_images(images: np.ndarray, crop: list[int] | None, resolution: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, R, R] in 0..255: the same crop and resize, not rounded."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    if crop is not None:
        top, left, h, w = crop
        x = x[:, :, top : top + h, left : left + w]
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("experiments/out/uint8_images"))
    p.add_argument("--scenes", type=int, default=320)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--crop",
        type=int,
        nargs=4,
        metavar=("TOP", "LEFT", "H", "W"),
        help="crop instead of the model's (e.g. one whose resize is not a whole factor: a whole factor such as "
        "192 -> 64 samples source pixels exactly, so uint8 and float agree there)",
    )
    args = p.parse_args(argv)

    model, config = load_trained(args.checkpoint)
    if config is None:
        raise SystemExit(f"{args.checkpoint}: needs the experiment.yaml beside the model (its data settings)")
    info = dataset_info(config.data.dataset)
    if info.generate is None:
        raise DataError(f"{info.name} has no procedural twin to generate scenes from")
    scenes = info.generate(args.scenes, 2_000_003 + args.seed)
    crop = args.crop or (config.data.crop if config.data.crop is not None else info.crop)
    labels = masks_to_labels(scenes.get("mask", scenes.get("labels"))).numpy()
    stored = to_scene_dataset(scenes["image"], labels, crop, config.model.resolution)
    floats = SceneDataset(float_images(scenes["image"], crop, config.model.resolution), stored.labels)
    difference = float((stored.images.float() - floats.images).abs().max() / 127.5)
    results = {
        "uint8": evaluate(model, stored, seed=args.seed),
        "float": evaluate(model, floats, seed=args.seed),
        "max_abs_difference_in_model_range": round(difference, 5),
        "scenes": args.scenes,
        "crop": crop,
        "checkpoint": str(args.checkpoint),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "uint8_images.json", results)
    keys = [k for k in ("fg_ari", "mbo_objects", "miou_objects", "mse") if k in results["uint8"]]
    print(f"| images | {' | '.join(keys)} |\n|---|" + "---|" * len(keys))
    for name in ("uint8", "float"):
        print(f"| {name} | " + " | ".join(f"{results[name][k]:.4f}" for k in keys) + " |")
    print(f"largest difference between the two: {difference:.5f} in [-1, 1] ({args.scenes} scenes, crop {crop})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
