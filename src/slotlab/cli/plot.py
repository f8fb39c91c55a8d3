"""``slotlab plot``: training curves of runs, or an experiment's table, as a PNG."""

from __future__ import annotations

from slotlab.cli.options import add_out


def add_plot(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="PNG plots of training curves (curve.jsonl) or of an experiment's table",
        description="Draw validation curves of one or several runs (run folders or curve.jsonl files) "
        "against steps, seconds or minutes, e.g.\n  slotlab plot runs/a runs/b --metric fg_ari "
        "--x minutes --out fg_ari.png\nor, with --table, an experiment's results JSON "
        '({"x": [...], "series": {name: [...]}}).',
    )
    p.add_argument("runs", nargs="*", help="run folders or curve.jsonl files")
    p.add_argument("--metric", nargs="+", default=["fg_ari"], help="validation metrics to draw (default fg_ari)")
    p.add_argument("--x", choices=["step", "seconds", "minutes"], default="step")
    p.add_argument("--labels", nargs="+", help="names of the runs in the legend (default: their folders)")
    p.add_argument("--title")
    p.add_argument("--table", help="an experiment's table JSON to draw instead of curves")
    add_out(p, "PNG file to write", required=True, png=True)
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    from slotlab.errors import ConfigError
    from slotlab.plots import plot_curves, plot_table

    if args.table:
        path = plot_table(args.table, args.out)
    elif args.runs:
        path = plot_curves(args.runs, args.out, args.metric, args.x, args.labels, args.title)
    else:
        raise ConfigError("give run folders (or curve.jsonl files) to plot, or --table")
    print(f"wrote {path}")
    return 0
