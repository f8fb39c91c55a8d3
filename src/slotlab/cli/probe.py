"""``slotlab probe``: how well each object's factors can be read out of its slot (see :mod:`slotlab.probing`)."""

from __future__ import annotations

from slotlab.cli.options import (
    add_batch_size,
    add_checkpoint,
    add_data,
    add_out,
    add_progress,
    add_seed,
    data_name,
    load_model,
    open_data,
    write_json,
)


def add_probe(sub) -> None:
    p = sub.add_parser(
        "probe",
        help="property probing: predict object factors from matched slots, as JSON",
        description="Match slots to ground-truth objects (Hungarian matching on the IoU of the last "
        "Slot Attention iteration's masks), then train a probe per object factor on 83 % of the "
        "matched objects and score it on the other 17 %: softmax regression for categorical "
        "factors (color, material, shape, size: accuracy against the test split's majority class "
        "rate), a small MLP for continuous ones (x, y, z, rotation, scale, orientation, RGB colour: "
        "MSE against predicting the training mean). Needs data with masks and per-object factor "
        "arrays: a store converted from a DeepMind multi-object dataset or a procedural twin "
        "(`slotlab data generate NAME OUT --store`).",
    )
    add_checkpoint(p)
    add_data(p)
    add_batch_size(p)
    add_seed(p, "the slot initialisation noise, the split and the probes")
    p.add_argument("--properties", help="comma-separated factors to probe (default: all the data has)")
    add_out(p, "write the JSON here (also printed)")
    add_progress(p)
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    from slotlab.errors import DataError
    from slotlab.probing import collect_probe_data, train_probes

    model, config = load_model(args, "probe")
    dataset = open_data(args, model, config)
    where = args.data or f"the {data_name(args)}"
    properties = [p.strip() for p in args.properties.split(",") if p.strip()] if args.properties else None
    progress = not args.no_progress
    try:
        data = collect_probe_data(
            model, dataset, batch_size=args.batch_size, seed=args.seed, properties=properties, progress=progress
        )
        probes = train_probes(data, seed=args.seed)
    except DataError as e:
        hint = "" if args.data else " (pass --data STORE, e.g. from `slotlab data generate NAME OUT --store`)"
        raise DataError(f"{where}: {e}{hint}") from None
    result = {
        **probes,
        "matched_objects": data["num_matched"],
        "objects": data["num_objects"],
        "num_images": data["num_images"],
        "checkpoint": str(args.checkpoint),
        "data": data_name(args),
    }
    write_json(result, args.out)
    return 0
