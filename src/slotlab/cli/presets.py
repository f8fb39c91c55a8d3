"""``slotlab presets``: list the presets, or print one with its defaults filled in."""

from __future__ import annotations


def add_presets(sub) -> None:
    p = sub.add_parser(
        "presets",
        help="list presets, or print one as YAML",
        description="List the presets (name, model kind, what it trains); with a name, print its full config "
        "(defaults filled in) as YAML, under the preset's own header comment: a file `slotlab train` takes.",
    )
    p.add_argument("name", nargs="?", help="a preset name or YAML path: print its config")
    p.add_argument("--names", action="store_true", help="list the names alone, one per line (for scripts)")
    p.set_defaults(func=cmd_presets)


def cmd_presets(args) -> int:
    from slotlab.config import list_presets, load_config, preset_header, preset_summary

    if args.name:
        print(preset_header(args.name) + load_config(args.name).to_yaml(), end="")
    elif args.names:
        print("\n".join(list_presets()))
    else:
        rows = [(name, load_config(name).task, preset_summary(name)) for name in list_presets()]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        print("\n".join(f"{n:<{widths[0]}}  {t:<{widths[1]}}  {s}".rstrip() for n, t, s in rows))
    return 0
