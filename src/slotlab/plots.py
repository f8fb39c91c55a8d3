"""Plots as PNG (matplotlib, no display needed): training curves of one or several runs, and experiment tables.

- :func:`plot_curves`: validation metrics over steps, seconds or minutes, from run folders or ``curve.jsonl`` files.
- :func:`plot_table`: an experiment's series over its x values, from the JSON the experiments write::

      {"title": "...", "x": [1, 2, 3], "xlabel": "...", "ylabel": "...", "series": {"name": [y1, y2, y3], ...}}
"""

from __future__ import annotations

import json
from pathlib import Path

from slotlab.errors import DataError
from slotlab.io import atomic_path

X_AXES = ("step", "seconds", "minutes")


def _figure(width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=120)
    return plt, fig, ax


def _save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def read_curve(source: str | Path) -> list[dict]:
    """The rows of a ``curve.jsonl`` (or of the one in a run folder); rows cut off mid-write are skipped."""
    path = Path(source)
    if path.is_dir():
        path = path / "curve.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"no curve at {path} (give a run folder or a curve.jsonl)") from None
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_curves(
    sources: list[str | Path],
    path: str | Path,
    metrics: list[str],
    x: str = "step",
    labels: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """One line per (run, metric): ``metrics`` of each run's validations against ``x`` ("step", "seconds" or
    "minutes"). ``labels`` name the runs (default: their folder names)."""
    if x not in X_AXES:
        raise DataError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    labels = labels or [Path(s).name if Path(s).is_dir() else Path(s).parent.name for s in sources]
    if len(labels) != len(sources):
        raise DataError(f"{len(labels)} labels for {len(sources)} runs")
    plt, fig, ax = _figure()
    drawn = 0
    for source, label in zip(sources, labels):
        rows = read_curve(source)
        for metric in metrics:
            pts = [
                (r["seconds"] / 60 if x == "minutes" else r[x], r[metric])
                for r in rows
                if metric in r and (r.get("seconds") if x == "minutes" else r.get(x)) is not None
            ]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3, label=label if len(metrics) == 1 else f"{label}: {metric}")
            drawn += 1
    if not drawn:
        raise DataError(f"none of the runs has {', '.join(metrics)} in its curve")
    ax.set_xlabel({"step": "training step", "seconds": "training seconds", "minutes": "training minutes"}[x])
    ax.set_ylabel(metrics[0] if len(metrics) == 1 else "value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(plt, fig, path)


def plot_table(table: dict | str | Path, path: str | Path) -> Path:
    """An experiment's table (the dict, or its JSON file) as a line plot of each series over ``x``."""
    if not isinstance(table, dict):
        try:
            table = json.loads(Path(table).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{table}: not a readable table ({e})") from None
    if not isinstance(table, dict) or "x" not in table or "series" not in table:
        raise DataError('a table needs "x" and "series" ({"name": [values, one per x]})')
    plt, fig, ax = _figure()
    for name, ys in table["series"].items():
        if len(ys) != len(table["x"]):
            raise DataError(f"series {name!r} has {len(ys)} values for {len(table['x'])} x values")
        ax.plot(table["x"], ys, marker="o", markersize=4, label=name)
    ax.set_xlabel(table.get("xlabel", "x"))
    ax.set_ylabel(table.get("ylabel", "value"))
    if table.get("title"):
        ax.set_title(table["title"])
    if all(isinstance(v, (int, float)) for v in table["x"]):
        ax.set_xticks(table["x"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
