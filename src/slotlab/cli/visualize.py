"""``slotlab visualize``: a trained model's picture (its kind's, from the registry) as a PNG."""

from __future__ import annotations

from slotlab.cli.options import add_checkpoint, add_data, add_out, add_sampling, add_seed, load_model, number, open_data


def add_visualize(sub) -> None:
    p = sub.add_parser(
        "visualize",
        help="PNG grid: input, reconstruction, segmentation, per-slot masks",
        description="Draw a PNG grid, one row per image. Object discovery: input, reconstruction, "
        "predicted segmentation, ground truth (when the data has masks), each slot's alpha mask and "
        "contents. Set prediction: the image with each confident slot marked where it attends, the "
        "predicted objects (confidence, attributes, position) beside the true ones, and every slot's "
        "attention map. Latent Slot Diffusion: input, autoencoder reconstruction, decoded from the "
        "slots, segmentation, ground truth, attention maps. Image autoencoder: input, "
        "reconstruction, error.",
    )
    add_checkpoint(p)
    add_data(p)
    add_seed(p)
    add_out(p, "PNG file to write", required=True, png=True)
    number(p, "--num-images", minimum=1, type=int, default=8, help="images to draw, one row each (default 8)")
    add_sampling(p)
    p.set_defaults(func=cmd_visualize)


def cmd_visualize(args) -> int:
    return draw_picture(args, "visualize")


def draw_picture(args, command: str) -> int:
    """Draw the model's picture (its kind's, from the registry); ``command`` names what the kind must serve."""
    from slotlab.cli.options import sampling_of
    from slotlab.kinds import kind_of

    model, config = load_model(args, command)
    dataset = open_data(args, model, config)
    picture = kind_of(model).picture
    assert picture is not None  # load_model refused kinds without one
    path = picture(model, dataset, args.out, args.num_images, args.seed, sampling=sampling_of(args))
    print(f"wrote {path}")
    return 0
