"""``slotlab edit``: remove, replace, insert or keep slots of an image, decode before and after, as a PNG."""

from __future__ import annotations

from slotlab.cli.concepts import MODEL_HELP
from slotlab.cli.options import (
    add_checkpoint,
    add_data,
    add_out,
    add_sampling,
    add_seed,
    check_index,
    load_model,
    number,
    open_data,
    sampling_of,
)


def add_edit(sub) -> None:
    p = sub.add_parser(
        "edit",
        help="remove, replace or insert a slot of an image, decode, before/after PNG",
        description="Edit an image in slot space: encode it, remove a slot (by index or by a pixel "
        "of the object), replace one with a slot of another image, or insert another image's slot; "
        "decode the original and the edited slots with the same noise and draw: input | the edited "
        "slot's region | reconstruction | edited [| source image | source slot's region].",
    )
    add_checkpoint(p, help=MODEL_HELP)
    add_data(p)
    number(p, "--image", minimum=0, type=int, required=True, help="index of the image to edit")
    add_out(p, "PNG file to write", required=True, png=True)
    op = p.add_mutually_exclusive_group(required=True)
    number(op, "--remove-slot", minimum=0, type=int, parser=p, metavar="K", help="remove slot K")
    op.add_argument(
        "--remove-at",
        type=int,
        nargs=2,
        metavar=("Y", "X"),
        help="remove the slot that holds pixel (row Y, column X) of the model-resolution image",
    )
    number(
        op,
        "--replace-slot",
        minimum=0,
        type=int,
        parser=p,
        metavar="K",
        help="replace slot K by slot --from-slot of image --from-image",
    )
    number(
        op,
        "--insert-from-image",
        minimum=0,
        type=int,
        parser=p,
        metavar="J",
        help="insert slot --insert-slot of image J",
    )
    number(
        op,
        "--keep-slots",
        minimum=0,
        type=int,
        parser=p,
        nargs="+",
        metavar="K",
        help="keep only these slots (drop the others)",
    )
    number(p, "--from-image", minimum=0, type=int, metavar="J", help="with --replace-slot: the source image")
    number(p, "--from-slot", minimum=0, type=int, metavar="L", help="with --replace-slot: the source image's slot")
    number(p, "--insert-slot", minimum=0, type=int, metavar="L", help="with --insert-from-image: the slot to insert")
    p.add_argument(
        "--keep-rest",
        action="store_true",
        help="also decode only the edited slots' region (grown by --grow pixels) and keep the input "
        "elsewhere: LSD samples with the input's latents blended in, the autoencoder pastes its "
        "decoded region into the input; adds the column 'rest kept'",
    )
    number(
        p,
        "--grow",
        minimum=0,
        type=int,
        default=2,
        metavar="PX",
        help="with --keep-rest: pixels by which the edited slots' region is grown (default 2)",
    )
    add_seed(p, "the slot initialisation and sampling noise")
    add_sampling(p, "the images")
    p.set_defaults(func=cmd_edit)


def cmd_edit(args) -> int:
    from slotlab.editing import edit_image, edit_sheet
    from slotlab.errors import ConfigError
    from slotlab.metrics import psnr
    from slotlab.visualize import save_png

    if args.replace_slot is not None and (args.from_image is None or args.from_slot is None):
        raise ConfigError("--replace-slot needs --from-image and --from-slot")
    if args.replace_slot is None and (args.from_image is not None or args.from_slot is not None):
        raise ConfigError("--from-image and --from-slot go with --replace-slot")
    if args.insert_from_image is not None and args.insert_slot is None:
        raise ConfigError("--insert-from-image needs --insert-slot")
    if args.insert_from_image is None and args.insert_slot is not None:
        raise ConfigError("--insert-slot goes with --insert-from-image")
    model, config = load_model(args, "edit")
    dataset = open_data(args, model, config)
    source = args.from_image if args.replace_slot is not None else args.insert_from_image
    for i in [args.image] + ([source] if source is not None else []):
        check_index(i, len(dataset))
    image = dataset[torch_index(args.image)]["image"][0]
    src = dataset[torch_index(source)]["image"][0] if source is not None else None
    if args.remove_slot is not None or args.remove_at is not None:
        op, slot, source_slot = "remove", args.remove_slot, None
    elif args.replace_slot is not None:
        op, slot, source_slot = "replace", args.replace_slot, args.from_slot
    elif args.keep_slots is not None:
        op, slot, source_slot = "keep", None, None
    else:
        op, slot, source_slot = "insert", None, args.insert_slot
    result = edit_image(
        model,
        image,
        op,
        slot=slot,
        pixel=tuple(args.remove_at) if args.remove_at else None,
        source=src,
        source_slot=source_slot,
        keep=args.keep_slots,
        keep_rest=args.keep_rest,
        grow=args.grow,
        sampling=sampling_of(args),
        seed=args.seed,
        source_name=f"image {source}",
    )
    report = ""
    if result.kept is not None and result.region is not None:
        outside, first = ~result.region, result.images[:1]
        r = model.resolution
        report = (
            f"; PSNR to the input outside the edited region ({int(outside.sum())} of {r * r} pixels): "
            f"edited {float(psnr(result.after, first, outside)):.1f} dB, "
            f"rest kept {float(psnr(result.kept, first, outside)):.1f} dB"
        )
    path = save_png(edit_sheet(result, max(1, 256 // model.resolution), f"image {source}"), args.out)
    print(f"image {args.image}: {result.what}; wrote {path}{report}")
    return 0


def torch_index(i: int):
    import torch

    return torch.tensor([i])
