"""``slotlab train``: train a preset into a run folder."""

from __future__ import annotations

import argparse
import shlex

from slotlab.cli.options import add_progress, quiet_lightning


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a preset",
        description="Train a preset (name or YAML path) with dotted overrides, e.g.\n"
        "  slotlab train tetrominoes --out runs/tetro optim.lr=2e-4 trainer.precision=bf16-mixed\n"
        "or go on with a run from its last checkpoint, its settings read from it:\n"
        "  slotlab train --out runs/tetro --resume optim.max_steps=600000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "preset",
        nargs="?",
        default=None,
        help="preset name (see `slotlab presets`) or a YAML file; with --resume it may be left out (the run's own)",
    )
    p.add_argument("overrides", nargs="*", default=[], help="key.sub=value overrides (values parsed as YAML)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, logs/ (TensorBoard), curve.jsonl, model/")
    p.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        help="resume from a .ckpt, or (no value) from OUT/checkpoints/last.ckpt, with the run's own settings (read "
        "from the checkpoint); overrides change what may change (e.g. the steps, the time limit, the hardware)",
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
    from slotlab.errors import ConfigError
    from slotlab.experiment import config_to_resume, resume_checkpoint, train

    quiet_lightning()
    if args.resume is None:
        if args.preset is None:
            raise ConfigError(f"train: give a preset (see `slotlab presets`), or --resume to go on with {args.out}")
        config = load_config(args.preset, args.overrides)
    else:  # the run's own settings, and what the overrides change
        config = config_to_resume(args.preset, args.out, args.resume, args.overrides)
        print(f"resuming {config.name} ({config.task}) from {resume_checkpoint(args.out, args.resume)}")
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if result.trainer.is_global_zero:
        step = result.trainer.global_step
        print(f"trained {step} steps in {result.seconds:.0f} s; model saved to {result.model_dir}")
        limit, steps = result.module.config.trainer.max_time_minutes, result.module.config.optim.max_steps
        if limit and step < steps:  # stopped by the time limit, which counts the minutes trained before a resume
            print(f"stopped by trainer.max_time_minutes={limit:g} at step {step} of {steps}; to train on:")
            print(f"  {go_on(args, result)}")
    return 0


def go_on(args, result) -> str:
    """The command that resumes a time-limited run for as many minutes again (the run's settings are in its
    checkpoint: no preset)."""
    from slotlab.experiment import resume_checkpoint
    from slotlab.training.base import run_timer

    timer = run_timer(result.trainer)
    assert timer is not None  # a time limit was set
    minutes = timer.time_elapsed("train") / 60 + result.module.config.trainer.max_time_minutes
    resume = ["--resume"]
    if not resume_checkpoint(
        args.out, "last"
    ).is_file():  # resumed into a new --out from elsewhere and saved nothing there
        resume.append(str(args.resume))
    return shlex.join(["slotlab", "train", "--out", str(args.out), *resume, f"trainer.max_time_minutes={minutes:.3g}"])
