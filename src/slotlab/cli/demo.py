"""``slotlab demo``: a complete run on a laptop CPU (see :mod:`slotlab.recipes`)."""

from __future__ import annotations

from slotlab.cli.options import add_seed, quiet_lightning


def add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="generate data, train, evaluate and draw, on a CPU in minutes",
        description="--task object_discovery (default): procedural Tetrominoes end to end with the "
        "tetrominoes_demo preset: generate data, train, evaluate on 320 held-out scenes, write "
        "metrics.json, the model and PNG grids. --task lsd: procedural textured scenes, the image "
        "autoencoder (autoencoder_demo, 22 min), the Slot Attention autoencoder (clevrtex_sa_demo, 6 min) whose "
        "encoder and Slot Attention start LSD, then Latent Slot Diffusion on the latents (lsd_demo), then "
        "FG-ARI/mBO/mIoU on held-out scenes and reconstructions from slots.",
    )
    p.add_argument(
        "--task",
        choices=["object_discovery", "lsd"],
        default="object_discovery",
        help="object_discovery: a Slot Attention autoencoder on Tetrominoes (default); lsd: Latent Slot Diffusion",
    )
    p.add_argument(
        "--autoencoder-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--task lsd: an override of the autoencoder stage (autoencoder_demo), repeatable",
    )
    p.add_argument(
        "--slot-attention-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--task lsd: an override of the Slot Attention stage (clevrtex_sa_demo), repeatable",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="--task lsd: no Slot Attention stage; LSD's encoder and Slot Attention start from random weights",
    )
    p.add_argument("--out", default="slotlab-demo", help="output folder (default: slotlab-demo)")
    p.add_argument(
        "--minutes",
        type=float,
        help="training time budget in minutes (default: the preset's: 8.5 for object discovery, 20 for the LSD stage)",
    )
    add_seed(p, "the data, the weights and the slot noise")
    p.add_argument("overrides", nargs="*", default=[], help="key.sub=value overrides of the demo preset")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from slotlab.errors import ConfigError
    from slotlab.recipes import lsd_demo, object_discovery_demo

    quiet_lightning()
    if args.minutes is not None and not args.minutes > 0:
        raise ConfigError(f"--minutes must be positive, got {args.minutes}")
    if args.task == "lsd":
        if args.cold and args.slot_attention_set:
            raise ConfigError("--slot-attention-set sets the Slot Attention stage, which --cold leaves out")
        lsd_demo(
            args.out,
            args.seed,
            args.minutes,
            args.overrides,
            args.autoencoder_set,
            args.slot_attention_set,
            warm_start=not args.cold,
        )
    else:
        for given, flag in [
            (args.autoencoder_set, "--autoencoder-set"),
            (args.slot_attention_set, "--slot-attention-set"),
            (args.cold, "--cold"),
        ]:
            if given:
                raise ConfigError(f"{flag} goes with --task lsd")
        object_discovery_demo(args.out, args.seed, args.minutes, args.overrides)
    return 0
