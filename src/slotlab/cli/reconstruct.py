"""``slotlab reconstruct``: image -> slots -> image, as a PNG grid."""

from __future__ import annotations

from slotlab.cli.options import add_checkpoint, add_data, add_out, add_sampling, add_seed, number


def add_reconstruct(sub) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="LSD: image -> slots -> image by diffusion, as a PNG grid",
        description="Encode images into slots with a trained Latent Slot Diffusion model (only LSD; "
        "`slotlab visualize` draws the other kinds) and decode them back by reverse diffusion from noise, "
        "and draw the model's picture: input | "
        "the autoencoder's own reconstruction | decoded from the slots | segmentation from attention "
        "| [ground truth] | each slot's attention map.",
    )
    add_checkpoint(p)
    add_data(p)
    add_out(p, "PNG file to write", required=True, png=True)
    number(p, "--num-images", minimum=1, type=int, default=8, help="images to draw, one row each (default 8)")
    add_sampling(p)
    add_seed(p, "the slot initialisation and sampling noise")
    p.set_defaults(func=cmd_reconstruct)


def cmd_reconstruct(args) -> int:
    from slotlab.cli.visualize import draw_picture

    return draw_picture(args, "reconstruct")
