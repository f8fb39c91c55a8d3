"""What the experiments share: train a preset (or open a trained model), and write a result as JSON, a Markdown
table and a PNG plot (``slotlab plot --table`` draws the JSON again)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slotlab.checkpoints import load_trained
from slotlab.config import ExperimentConfig, load_config
from slotlab.experiment import BEST_CHECKPOINT, train
from slotlab.io import atomic_write_text, write_json
from slotlab.plots import plot_table


def trained(
    preset: str, out: Path, steps: int, overrides: list[str] | None = None, seed: int = 0
) -> tuple[object, ExperimentConfig]:
    """A model of ``preset`` trained for ``steps`` steps into ``out`` (no time limit: runs compare per step), with
    the weights of its best validation checkpoint, as ``slotlab demo`` keeps. A finished run in ``out`` is reused."""
    config = load_config(
        preset,
        [
            f"optim.max_steps={steps}",
            "trainer.max_time_minutes=null",
            f"trainer.seed={seed}",
            f"data.seed={seed}",
            *(overrides or []),
        ],
    )
    model_dir, best = out / "model", out / "checkpoints" / BEST_CHECKPOINT
    done = out / "finished.json"
    if not (done.is_file() and json.loads(done.read_text()).get("config") == config.to_dict()):
        result = train(config, out, overwrite=True, progress=False)
        write_json(done, {"config": config.to_dict(), "steps": result.trainer.global_step})
    model, _ = load_trained(best if best.is_file() else model_dir)
    return model, config


def parser(doc: str, name: str, preset: str, steps: int) -> argparse.ArgumentParser:
    """The options every experiment on one trained model takes: ``--checkpoint`` (else a ``preset`` model is
    trained), ``--out`` (default ``experiments/out/NAME``), ``--steps`` of that training, ``--seed`` and ``--set``
    (overrides of the preset for that training)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help=f"a model trained with {preset} (default: train one)")
    p.add_argument("--out", type=Path, default=Path("experiments/out") / name)
    p.add_argument("--steps", type=int, default=steps, help=f"training steps when no --checkpoint (default {steps})")
    p.add_argument("--seed", type=int, default=0)
    add_set(p)
    return p


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the preset for training")


def model_of(args: argparse.Namespace, preset: str) -> tuple[object, ExperimentConfig]:
    """The model of ``--checkpoint`` and its config, or one of ``preset`` trained into ``OUT/run``."""
    if args.checkpoint:
        model, config = load_trained(args.checkpoint)
        if config is None:
            raise SystemExit(f"{args.checkpoint}: needs the experiment.yaml beside the model (its data settings)")
        return model, config
    return trained(preset, args.out / "run", args.steps, args.set, seed=args.seed)


def write_result(out: Path, name: str, table: dict, notes: str = "") -> str:
    """``table`` ({"title", "x", "xlabel", "ylabel", "series": {name: [y per x]}}) -> ``out/name.json``, ``.md``,
    ``.png``; returns the Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", table)
    names = list(table["series"])
    lines = [
        f"| {table.get('xlabel', 'x')} | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *(
            f"| {x} | " + " | ".join(f"{table['series'][n][i]:.3f}" for n in names) + " |"
            for i, x in enumerate(table["x"])
        ),
    ]
    markdown = "\n".join(lines) + "\n" + (f"\n{notes}\n" if notes else "")
    atomic_write_text(out / f"{name}.md", markdown)
    plot_table(table, out / f"{name}.png")
    return markdown
