"""``slotlab probe``: how well each object's factors can be read out of its slot (see :mod:`slotlab.probing`)."""

from __future__ import annotations


def add_probe(sub) -> None:
    p = sub.add_parser("probe", help="property probing: predict object factors from matched slots, as JSON",
                       description="Match slots to ground-truth objects (Hungarian matching on the IoU of the last "
                       "Slot Attention iteration's masks), then train a probe per object factor on 83 % of the "
                       "matched objects and score it on the other 17 %: softmax regression for categorical "
                       "factors (color, material, shape, size: accuracy against the test split's majority class "
                       "rate), a small MLP for continuous ones (x, y, z, rotation, scale, orientation, RGB colour: "
                       "MSE against predicting the training mean). Needs data with masks and per-object factor "
                       "arrays: a store converted from a DeepMind multi-object dataset or a procedural twin "
                       "(`slotlab data generate NAME OUT --store`).")
    p.add_argument("--checkpoint", required=True,
                   help="model folder (model.safetensors + config.json), run folder or .ckpt")
    p.add_argument("--data", help="a store with masks and factor arrays (default: the validation split of the model's "
                   "training dataset, when that is a store)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the slot initialisation noise, the split and the probes")
    p.add_argument("--properties", help="comma-separated factors to probe (default: all the data has)")
    p.add_argument("--out", help="write the JSON here (also printed)")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    from slotlab.checkpoints import load_trained
    from slotlab.cli.main import _eval_dataset, _write_json
    from slotlab.errors import DataError
    from slotlab.probing import collect_probe_data, train_probes

    model, config = load_trained(args.checkpoint)
    if not hasattr(model, "slot_attention"):
        raise DataError(f"{args.checkpoint}: a {type(model).__name__} has no slots to probe")
    dataset = _eval_dataset(config, args.data, model.config.resolution)
    where = args.data or "the validation split"
    properties = [p.strip() for p in args.properties.split(",") if p.strip()] if args.properties else None
    try:
        data = collect_probe_data(model, dataset, batch_size=args.batch_size, seed=args.seed, properties=properties,
                                  progress=True)
        probes = train_probes(data, seed=args.seed)
    except DataError as e:
        hint = "" if args.data else " (pass --data STORE, e.g. from `slotlab data generate NAME OUT --store`)"
        raise DataError(f"{where}: {e}{hint}") from None
    result = {**probes, "matched_objects": data["num_matched"], "objects": data["num_objects"],
              "num_images": data["num_images"], "checkpoint": str(args.checkpoint),
              "data": args.data or "validation split"}
    _write_json(result, args.out)
    return 0
