"""Set prediction against Slot Attention iterations at test time: AP at each distance threshold (inf, 1, 0.5,
0.25, 0.125) on held-out procedural CLEVR-like scenes for T = 1..8, of a model trained with T = 3
(``clevr_set_prediction_demo``): the paper reports that more iterations at test time help set prediction too.

    python experiments/set_prediction_iterations.py --checkpoint runs/sp/model     # a few minutes
    python experiments/set_prediction_iterations.py --out experiments/out/sp_iterations   # trains first (~25 min)

Writes ``OUT/sp_iterations.json`` / ``.md`` / ``.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import model_of, parser, write_result

from slotlab.data.registry import build_dataset
from slotlab.evaluation import evaluate_set_prediction

THRESHOLDS = ("inf", "1", "0.5", "0.25", "0.125")


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, "sp_iterations", "clevr_set_prediction_demo", 20000)
    p.add_argument("--iterations", type=int, nargs="+", default=list(range(1, 9)))
    args = p.parse_args(argv)

    model, config = model_of(args, "clevr_set_prediction_demo")
    test = build_dataset(config.data, "test")
    series: dict[str, list[float]] = {f"AP {t}": [] for t in THRESHOLDS}
    for t in args.iterations:
        scores = evaluate_set_prediction(model, test, seed=args.seed, num_iterations=t)
        for threshold in THRESHOLDS:
            series[f"AP {threshold}"].append(scores[f"ap_{threshold}"])
        print(f"T = {t}: " + ", ".join(f"AP {x} {scores[f'ap_{x}']:.3f}" for x in THRESHOLDS), flush=True)
    table = {
        "title": f"CLEVR-like set prediction, trained with T = {model.config.num_iterations}",
        "x": args.iterations,
        "xlabel": "iterations at test time",
        "ylabel": f"AP on {len(test)} test scenes",
        "series": series,
    }
    print(write_result(args.out, "sp_iterations", table, f"{len(test)} held-out scenes."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
