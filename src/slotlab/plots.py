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
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a curve.jsonl (not text)") from None
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {i}: not a curve row (a JSON object of metrics)")
        rows.append(row)
    return rows


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    labels = labels or [(p if p.is_dir() else p.parent).name for p in (Path(s).resolve() for s in sources)]
    if len(labels) != len(sources):
        raise DataError(f"{len(labels)} labels for {len(sources)} runs")
    key = "seconds" if x == "minutes" else x  # the rows' key that gives x
    plt, fig, ax = _figure()
    drawn = found = 0
    for source, label in zip(sources, labels):
        rows = read_curve(source)
        for metric in metrics:
            pts = [(r.get(key), r[metric]) for r in rows if r.get(metric) is not None]
            found += len(pts)
            pts = [p for p in pts if p[0] is not None]
            if not pts:
                continue
            if not all(_is_number(v) for p in pts for v in p):
                raise DataError(f"{source}: {key} and {metric} must be numbers in its curve")
            xs, ys = zip(*pts)
            if x == "minutes":
                xs = tuple(v / 60 for v in xs)
            ax.plot(xs, ys, marker="o", markersize=3, label=label if len(metrics) == 1 else f"{label}: {metric}")
            drawn += 1
    if not drawn:
        if found:
            raise DataError(f"no run's rows of {', '.join(metrics)} have {key} (needed for --x {x})")
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
    where = "the table"
    if not isinstance(table, dict):
        where = str(table)
        try:
            table = json.loads(Path(table).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{table}: not a readable table ({e})") from None
    if not isinstance(table, dict) or "x" not in table or "series" not in table:
        raise DataError(f'{where}: a table needs "x" and "series" ({{"name": [values, one per x]}})')
    xs, series = table["x"], table["series"]
    if not isinstance(xs, list) or not all(_is_number(v) or isinstance(v, str) for v in xs):
        raise DataError(f'{where}: "x" must be a list of numbers or names, got {type(xs).__name__}')
    if not isinstance(series, dict) or not series:
        raise DataError(f'{where}: "series" must be {{"name": [values, one per x], ...}}, got {type(series).__name__}')
    for name, ys in series.items():
        if not isinstance(ys, list) or not all(y is None or _is_number(y) for y in ys):
            raise DataError(f"{where}: series {name!r} must be a list of numbers (null for none)")
        if len(ys) != len(xs):
            raise DataError(f"{where}: series {name!r} has {len(ys)} values for {len(xs)} x values")
    plt, fig, ax = _figure()
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", markersize=4, label=name)
    ax.set_xlabel(table.get("xlabel", "x"))
    ax.set_ylabel(table.get("ylabel", "value"))
    if table.get("title"):
        ax.set_title(table["title"])
    if all(_is_number(v) for v in xs):
        ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
