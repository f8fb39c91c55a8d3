"""``slotlab eval``: a trained model's metrics on some data, as JSON (the metric path validation uses too)."""

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
    number,
    open_data,
    write_json,
)


def add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained model: metrics as JSON",
        description="Score a trained model with its kind's evaluator, the one validation uses. Object "
        "discovery: segment images and score them against ground-truth masks (FG-ARI and ARI averaged "
        "over images, mBO, mIoU, binding diagnostics; without masks, the reconstruction MSE and the collapse "
        "diagnostics only, and the output says so). Set prediction: AP at distance thresholds inf, "
        "1, 0.5, 0.25, 0.125 (all images ranked together) and the Hungarian loss. LSD: the "
        "segmentation from the attention. Image autoencoder: MSE and PSNR. With the training batch "
        "size and seed (trainer.seed) on the validation split it gives what validation logged.",
    )
    add_checkpoint(p)
    add_data(p)
    add_seed(p)
    add_out(p, "write the metrics JSON here (also printed)")
    add_batch_size(p)
    number(
        p,
        "--num-iterations",
        minimum=1,
        type=int,
        help="Slot Attention iterations at test time (default: the model's eval_iterations, else as trained)",
    )
    number(
        p,
        "--num-slots",
        minimum=1,
        type=int,
        help="slots at test time, e.g. more than trained for scenes with more objects (default: as trained; "
        "not for learned slot queries or the Slot MLP)",
    )
    p.add_argument(
        "--miou-matching",
        choices=["oclf", "lsd"],
        help="how mIoU matches objects to slots: oclf (maximise IoU, unmatched objects score 0) or lsd "
        "(the official LSD evaluation: minimise cosine distance, unmatched objects dropped); default: the "
        "model's paper's (lsd for LSD, oclf otherwise). The output names the one used",
    )
    add_progress(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from slotlab.kinds import kind_of

    model, config = load_model(args, "eval")
    dataset = open_data(args, model, config)
    where = data_name(args)
    k = kind_of(model)
    k.evaluator.check(dataset, where)
    metrics = k.evaluate(
        model,
        dataset,
        batch_size=args.batch_size,
        seed=args.seed,
        num_iterations=args.num_iterations,
        num_slots=args.num_slots,
        progress=not args.no_progress,
        matching=args.miou_matching,
    )
    metrics.update(checkpoint=str(args.checkpoint), data=where)
    eval_iterations = getattr(getattr(model, "slot_attention", None), "eval_iterations", None)  # the model's own T
    if args.num_slots or args.num_iterations or eval_iterations:
        metrics.update(num_slots=args.num_slots, num_iterations=args.num_iterations or eval_iterations)
    write_json(metrics, args.out)
    return 0
