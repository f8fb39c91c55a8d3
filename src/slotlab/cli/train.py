"""``slotlab train``: train a preset into a run folder."""

from __future__ import annotations

import argparse

from slotlab.cli.options import add_progress, quiet_lightning


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a preset",
        description="Train a preset (name or YAML path) with dotted overrides, e.g.\n"
        "  slotlab train tetrominoes --out runs/tetro optim.lr=2e-4 trainer.precision=bf16-mixed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("preset", help="preset name (see `slotlab presets`) or a YAML file")
    p.add_argument("overrides", nargs="*", default=[], help="key.sub=value overrides (values parsed as YAML)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, logs/ (TensorBoard), curve.jsonl, model/")
    p.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        help="resume from a .ckpt, or (no value) from OUT/checkpoints/last.ckpt",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="OUT already holds a run: remove its checkpoints, logs, curve and model, and start again",
    )
    add_progress(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from slotlab.config import load_config
    from slotlab.experiment import train

    quiet_lightning()
    config = load_config(args.preset, args.overrides)
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if result.trainer.is_global_zero:
        print(
            f"trained {result.trainer.global_step} steps in {result.seconds:.0f} s; model saved to {result.model_dir}"
        )
    return 0
