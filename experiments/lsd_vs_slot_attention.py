"""The LSD paper's claim in miniature: on the same textured scenes, for the same training minutes, Latent Slot
Diffusion's slots bind objects better than the Slot Attention autoencoder's.

    slotlab demo --task lsd --out lsd-demo                        # LSD: data, autoencoder, SA and LSD stages
    python experiments/lsd_vs_slot_attention.py --demo lsd-demo   # SA on the same store for the same minutes

It trains the Slot Attention autoencoder (preset ``clevrtex_sa_demo``) on the demo's store from scratch for as long
as the demo trained its slots (the Slot Attention stage that LSD starts from, plus the LSD stage; or ``--minutes``),
then scores both models on the same held-out test scenes (the store's last
``val_size`` scenes, neither trained nor validated on) with the same segmentation metric (FG-ARI, mBO and mIoU over
objects and over images, binding diagnostics). LSD segments with its last-iteration attention (the paper's
protocol); the autoencoder with its decoder's alpha masks (its paper's) and, for reference, with its attention.
Writes ``DEMO/comparison.json``, ``DEMO/comparison.md`` (the table) and ``DEMO/sa_same_minutes/grid.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slotlab.checkpoints import load_trained
from slotlab.config import load_config
from slotlab.data.registry import build_dataset
from slotlab.evaluation import attention_labels, evaluate_lsd, evaluate_object_discovery
from slotlab.experiment import BEST_CHECKPOINT, train
from slotlab.io import write_json
from slotlab.metrics import SegmentationMetric
from slotlab.visualize import draw_model_grid

ROWS = [
    ("fg_ari", "FG-ARI"),
    ("mbo_objects", "mBO (objects)"),
    ("miou_objects", "mIoU (objects)"),
    ("mbo_images", "mBO (images)"),
    ("miou_images", "mIoU (images)"),
    ("owner_ground", "owner_ground"),
    ("split_objects", "split objects"),
    ("merged_objects", "merged objects"),
    ("attention_peak", "attention peak (1/K: no competition)"),
    ("slot_similarity", "slot similarity (1: copies)"),
]
MATCHING = "lsd"  # mIoU's object-to-slot matching, the same for every column: the LSD paper's


def sa_attention_scores(model, dataset, seed: int) -> dict:
    """The autoencoder's segmentation from its last-iteration attention (as LSD is scored), for reference."""
    import torch

    from slotlab.data.datasets import SequentialBatchSampler

    metric = SegmentationMetric(matching=MATCHING)
    with torch.no_grad():
        for i, idx in enumerate(SequentialBatchSampler(len(dataset), 64)):
            batch = dataset[idx]
            enc = model.encode(batch["image"], generator=torch.Generator().manual_seed(seed + i))
            metric.update(batch["labels"], attention_labels(enc.attn[:, -1], batch["labels"].shape[-1]))
    return metric.compute()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", type=Path, required=True, help="the folder `slotlab demo --task lsd` wrote")
    p.add_argument("--minutes", type=float, help="SA training minutes (default: the demo's SA and LSD stages')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the clevrtex_sa_demo preset")
    args = p.parse_args(argv)

    demo = json.loads((args.demo / "metrics.json").read_text())
    minutes = args.minutes or round((demo["lsd_train_seconds"] + demo.get("slot_attention_train_seconds", 0)) / 60, 2)
    lsd, lsd_config = load_trained(args.demo / "lsd" / "model")
    store = demo.get("data", lsd_config.data.path)  # the scenes (LSD trains on their cached latents)
    sa_config = load_config(
        "clevrtex_sa_demo",
        [
            f"data.path={store}",
            f"data.dataset={lsd_config.data.dataset}",
            f"data.val_size={lsd_config.data.val_size}",
            f"trainer.max_time_minutes={minutes}",
            f"trainer.seed={args.seed}",
            *args.overrides,
        ],
    )
    out = args.demo / "sa_same_minutes"
    print(f"Slot Attention autoencoder on {store} for {minutes} min (the demo's slot training)", flush=True)
    run = train(sa_config, out, overwrite=True)
    sa = run.module.model.float()
    if (out / "checkpoints" / BEST_CHECKPOINT).is_file():  # as the LSD demo: the best validation FG-ARI
        sa, _ = load_trained(out / "checkpoints" / BEST_CHECKPOINT)
    test = build_dataset(lsd_config.data, "test")
    scores = {
        "lsd": evaluate_lsd(lsd, test, seed=args.seed, matching=MATCHING),
        "slot_attention": evaluate_object_discovery(sa, test, seed=args.seed, matching=MATCHING),
        "slot_attention_attention_masks": sa_attention_scores(sa, test, args.seed),
    }
    for key in ("attention_peak", "slot_similarity"):  # of the attention and slots: the same for both SA columns
        scores["slot_attention_attention_masks"][key] = scores["slot_attention"][key]
    result = {
        "test": f"the store's last {len(test)} scenes ({store})",
        "miou_matching": MATCHING,
        "minutes": minutes,
        "steps": {"lsd": demo["steps"], "slot_attention": run.trainer.global_step},
        **scores,
    }
    write_json(args.demo / "comparison.json", result)
    header = (
        "| metric | LSD (attention) | Slot Attention (alpha masks) | Slot Attention (attention) |\n|---|---|---|---|\n"
    )
    lines = [
        f"| {label} | " + " | ".join(f"{scores[m].get(key, float('nan')):.3f}" for m in scores) + " |"
        for key, label in ROWS
    ]
    steps = f"| steps in {minutes} min | {demo['steps']} | {run.trainer.global_step} | {run.trainer.global_step} |"
    table = header + "\n".join([*lines, steps]) + "\n"
    (args.demo / "comparison.md").write_text(table)
    draw_model_grid(sa, test, out / "grid.png", 8, args.seed)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
