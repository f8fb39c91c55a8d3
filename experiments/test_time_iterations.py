"""Slot Attention iterations at test time (the paper: a model trained with T = 3 segments better with more
iterations at test time). FG-ARI on the 320 held-out test scenes of procedural Tetrominoes for T = 1..8, of a model
trained with T = 3 (``tetrominoes_demo``): the one ``slotlab demo`` wrote, or one trained here.

    python experiments/test_time_iterations.py --checkpoint slotlab-demo/model      # a minute
    python experiments/test_time_iterations.py --out experiments/out/iterations     # trains first (about 7 minutes)

Writes ``OUT/iterations.json`` / ``.md`` / ``.png``. The slot noise is the same for every T (seeded per batch).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import model_of, parser, write_result

from slotlab.data.registry import build_dataset
from slotlab.evaluation import evaluate_object_discovery


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, "iterations", "tetrominoes_demo", 8000)
    p.add_argument("--iterations", type=int, nargs="+", default=list(range(1, 9)))
    args = p.parse_args(argv)

    model, config = model_of(args, "tetrominoes_demo")
    test = build_dataset(config.data, "test")
    trained_t = model.config.num_iterations
    series: dict[str, list[float]] = {"FG-ARI (alpha masks)": [], "FG-ARI (attention)": []}
    for t in args.iterations:
        scores = evaluate_object_discovery(model, test, seed=args.seed, num_iterations=t)
        series["FG-ARI (alpha masks)"].append(scores["fg_ari"])
        series["FG-ARI (attention)"].append(scores["fg_ari_attention"])
        print(f"T = {t}: FG-ARI {scores['fg_ari']:.4f} (attention {scores['fg_ari_attention']:.4f})", flush=True)
    table = {
        "title": f"Tetrominoes, trained with T = {trained_t}: iterations at test time",
        "x": args.iterations,
        "xlabel": "iterations at test time",
        "ylabel": f"FG-ARI on {len(test)} test scenes",
        "series": series,
    }
    print(write_result(args.out, "iterations", table, f"Model trained with T = {trained_t}; {len(test)} test scenes."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
