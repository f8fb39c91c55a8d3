"""Train variants of a preset side by side and compare their validation curves (time-to-accuracy studies).

    python benchmarks/sweep.py benchmarks/sweeps/tetrominoes_demo.yaml --minutes 6.5 --out sweep --mps

The sweep file maps a variant's name to its overrides (a string of ``key=value`` words), or to
``{preset: NAME, overrides: "..."}`` to train another preset; ``preset`` and ``common`` at the top level give the
default preset and the overrides every variant shares. Every variant runs as its own ``slotlab train`` process,
all at once (``--jobs`` at a time), each for ``--minutes`` (or ``--steps``), with one CPU thread each; a sweep run again into the
same ``--out`` starts its runs again. On one GPU, ``--mps`` starts NVIDIA's Multi-Process Service first, so the
small models' kernels from all processes run concurrently instead of taking turns. Each run writes ``OUT/NAME/curve.jsonl``; the script prints the metrics at every
validation and the first step at which each ``--thresholds`` value is reached, and writes ``OUT/curves.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml


def load_sweep(path: Path) -> tuple[dict[str, tuple[str, list[str]]], list[str]]:
    """{name: (preset, overrides)} and the common overrides, from a sweep file (overrides split as a shell would:
    quote one that holds spaces)."""
    spec = yaml.safe_load(path.read_text())
    default, common = spec.pop("preset"), shlex.split(str(spec.pop("common", "")))
    variants = {}
    for name, v in spec.pop("variants").items():
        if isinstance(v, dict):
            variants[name] = (v.get("preset", default), shlex.split(str(v.get("overrides") or "")))
        else:
            variants[name] = (default, shlex.split(str(v or "")))
    if spec:
        raise SystemExit(f"{path}: unknown keys {sorted(spec)} (use preset, common, variants)")
    return variants, common


def start_mps() -> bool:
    if shutil.which("nvidia-cuda-mps-control") is None:
        print("no nvidia-cuda-mps-control here: the runs share the GPU by taking turns", flush=True)
        return False
    subprocess.run(["nvidia-cuda-mps-control", "-d"], check=False)
    return True


def stop_mps() -> None:
    subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n", check=False)


def first_step(rows: list[dict], metric: str, threshold: float) -> int | None:
    return next((r["step"] for r in rows if r.get(metric, float("-inf")) >= threshold), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="YAML: preset, common, variants")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="training time of every variant (per-minute comparisons)")
    budget.add_argument(
        "--steps", type=int, help="training steps of every variant instead (per-step comparisons, on any load)"
    )
    p.add_argument("--out", type=Path, default=Path("sweep"))
    p.add_argument("--jobs", type=int, default=0, help="variants at a time (0: all)")
    p.add_argument("--metric", nargs="+", default=["fg_ari"], help="validation metrics to print (default fg_ari)")
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.9, 0.95])
    p.add_argument("--mps", action="store_true", help="start NVIDIA MPS for the sweep (one GPU, many processes)")
    p.add_argument("--only", nargs="*", help="run only these variants")
    args = p.parse_args(argv)

    variants, common = load_sweep(args.sweep)
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only}
    budget_overrides = (
        [f"trainer.max_time_minutes={args.minutes}"]
        if args.minutes
        else ["trainer.max_time_minutes=null", f"optim.max_steps={args.steps}"]
    )
    base = ["--no-progress", "--overwrite", "trainer.num_threads=1", *budget_overrides, *common]
    args.out.mkdir(parents=True, exist_ok=True)
    mps = args.mps and start_mps()
    try:
        pending, running = list(variants.items()), []
        while pending or running:
            while pending and (args.jobs <= 0 or len(running) < args.jobs):
                name, (preset, overrides) = pending.pop(0)
                log = open(args.out / f"{name}.log", "w")
                cmd = [sys.executable, "-m", "slotlab", "train", preset, "--out", str(args.out / name), *base, *overrides]
                running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            time.sleep(2)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                item[2].close()
                if item[1].returncode:
                    print(f"{item[0]}: exit {item[1].returncode}, see {args.out / (item[0] + '.log')}", flush=True)
    finally:
        if mps:
            stop_mps()

    curves = {}
    for name in variants:
        f = args.out / name / "curve.jsonl"
        curves[name] = [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []
    (args.out / "curves.json").write_text(json.dumps(curves))
    for metric in args.metric:
        print(f"--- {metric}", flush=True)
        for name, rows in curves.items():
            reached = "  ".join(f">={t}: {first_step(rows, metric, t)}" for t in args.thresholds)
            points = " ".join(f"{r['step']}:{r[metric]:.3f}" for r in rows if metric in r)
            print(f"{name}  [{reached}]  {points}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
