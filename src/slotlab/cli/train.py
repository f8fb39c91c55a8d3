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
        help="resume from a .ckpt, or (no value) from OUT/checkpoints/last.ckpt, with the run's own settings (read "
        "from the checkpoint); overrides change what may change: the steps, the time limit, the hardware",
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
    from slotlab.experiment import config_to_resume, train

    quiet_lightning()
    if args.resume is None:
        config = load_config(args.preset, args.overrides)
    else:  # the run's own settings, and what the overrides change
        config = config_to_resume(args.preset, args.out, args.resume, args.overrides)
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if result.trainer.is_global_zero:
        step = result.trainer.global_step
        print(f"trained {step} steps in {result.seconds:.0f} s; model saved to {result.model_dir}")
        t, steps = result.module.config.trainer, result.module.config.optim.max_steps
        if t.max_time_minutes and step < steps:  # stopped by the time limit, which counts the minutes trained before
            more = f"trainer.max_time_minutes={2 * t.max_time_minutes:g}"
            print(
                f"stopped by trainer.max_time_minutes={t.max_time_minutes:g} at step {step} of {steps}; to train on: "
                f"slotlab train {args.preset} --out {args.out} --resume {more}"
            )
    return 0
