"""``slotlab presets``: list the presets, or print one with its defaults filled in."""

from __future__ import annotations


def add_presets(sub) -> None:
    p = sub.add_parser(
        "presets",
        help="list presets, or print one as YAML",
        description="List the presets; with a name, print its full config (defaults filled in).",
    )
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)


def cmd_presets(args) -> int:
    from slotlab.config import list_presets, load_config

    if args.name:
        print(load_config(args.name).to_yaml(), end="")
    else:
        print("\n".join(list_presets()))
    return 0
