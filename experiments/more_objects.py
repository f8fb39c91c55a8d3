"""More objects at test time than in training (the paper's CLEVR6 -> CLEVR10 result, in CPU minutes): a model
trained on procedural Tetrominoes with 3 pieces and 4 slots (``tetrominoes_demo``) segments scenes with 3 to 6
pieces, once with the 4 slots it was trained with and once with one slot per piece plus one for the background
(Slot Attention's slots are samples of one distribution, so K can change at test time).

    python experiments/more_objects.py --checkpoint slotlab-demo/model      # a few minutes
    python experiments/more_objects.py --out experiments/out/more_objects   # trains first (about 7 minutes)

Writes ``OUT/more_objects.json`` / ``.md`` / ``.png``: FG-ARI on 320 scenes per number of pieces, from seeds that
neither training nor validation used.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import model_of, parser, write_result

from slotlab.data import generate_tetrominoes
from slotlab.data.registry import to_scene_dataset
from slotlab.evaluation import evaluate_object_discovery


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, "more_objects", "tetrominoes_demo", 8000)
    p.add_argument("--pieces", type=int, nargs="+", default=[3, 4, 5, 6])
    p.add_argument("--scenes", type=int, default=320)
    args = p.parse_args(argv)

    model, config = model_of(args, "tetrominoes_demo")
    trained_k = model.config.num_slots
    series: dict[str, list[float]] = {f"K = {trained_k} (as trained)": [], "K = pieces + 1": []}
    for pieces in args.pieces:
        scenes = generate_tetrominoes(args.scenes, seed=1_000_003 + pieces, num_pieces=pieces)
        test = to_scene_dataset(scenes["image"], scenes["mask"][..., 0], config.data.crop, config.model.resolution)
        for name, k in zip(series, (trained_k, pieces + 1)):
            scores = evaluate_object_discovery(model, test, seed=args.seed, num_slots=k)
            series[name].append(scores["fg_ari"])
            print(f"{pieces} pieces, K = {k}: FG-ARI {scores['fg_ari']:.4f}", flush=True)
    table = {
        "title": f"Tetrominoes: trained on 3 pieces with K = {trained_k}",
        "x": args.pieces,
        "xlabel": "pieces in the test scenes",
        "ylabel": f"FG-ARI ({args.scenes} scenes each)",
        "series": series,
    }
    print(write_result(args.out, "more_objects", table, f"Trained on 3 pieces; {args.scenes} test scenes per row."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
