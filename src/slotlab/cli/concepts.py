"""``slotlab concepts build|show``: the visual concept library of Latent Slot Diffusion (also for the Slot Attention
autoencoder): K-means over slots, and a sheet of each concept's members."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from slotlab.cli.options import (
    add_batch_size,
    add_checkpoint,
    add_data,
    add_out,
    add_progress,
    add_seed,
    load_model,
    number,
    open_data,
)

MODEL_HELP = (
    "model folder (model.safetensors + config.json), run folder or .ckpt: LSD or object discovery (not set prediction)"
)


def add_concepts(sub) -> None:
    p = sub.add_parser(
        "concepts",
        help="visual concept library: K-means over slots (build, show)",
        description="A visual concept library (LSD paper, section 4): encode images into slots, "
        "K-means over all the slots; each cluster is a concept. `build` makes one, `show` draws "
        "its concepts. Then `slotlab compose` makes new scenes from them.",
    )
    actions = p.add_subparsers(dest="concepts_command", required=True, metavar="ACTION")

    b = actions.add_parser(
        "build",
        help="encode images, cluster their slots, save the library",
        description="Encode images with a trained LSD or object discovery model (not set prediction: its slots "
        "draw no images), collect every slot with its mask (LSD: last-iteration attention; autoencoder: the "
        "decoder's alpha masks) and cluster the slots with K-means into --k concepts. Writes one .safetensors "
        "file (tensors + JSON metadata that records the model and data).",
    )
    add_checkpoint(b, help=MODEL_HELP)
    add_data(b, splits=("val", "train", "test"))  # the paper uses train
    number(b, "--k", minimum=1, type=int, default=64, help="number of concepts (K-means clusters; default 64)")
    add_out(b, "library file to write (.safetensors)", required=True)
    b.add_argument(
        "--backend",
        choices=["torch", "sklearn", "sklearn-minibatch"],
        default="torch",
        help="K-means implementation (default torch)",
    )
    number(b, "--iters", minimum=1, type=int, default=50, help="maximum K-means (Lloyd) iterations (default 50)")
    number(b, "--max-images", minimum=1, type=int, help="encode only the first N images (default: all)")
    add_batch_size(b)
    number(b, "--mask-size", minimum=1, type=int, default=32, help="side of the stored slot masks (default 32)")
    add_seed(b, "the slot initialisation noise and of K-means")
    add_progress(b)
    b.set_defaults(func=cmd_concepts_build)

    s = actions.add_parser(
        "show",
        help="PNG: one row per concept, its nearest members' image regions",
        description="Draw a concept library: one row per concept, the image regions (image * "
        "mask on grey) of the slots nearest its centroid. The images are re-opened from the data "
        "recorded in the library (or --data).",
    )
    s.add_argument("--library", required=True, help="a library from `slotlab concepts build`")
    add_out(s, "PNG file to write", required=True, png=True)
    s.add_argument("--concepts", type=int, nargs="+", metavar="C", help="concept ids to draw (default: all)")
    number(s, "--per-concept", minimum=1, type=int, default=8, help="members per concept (default 8)")
    number(s, "--tile-size", minimum=1, maximum=1024, type=int, default=64, help="tile side in pixels (default 64)")
    s.add_argument("--data", help="the images the library was built from, if they moved (default: as recorded)")
    s.set_defaults(func=cmd_concepts_show)


def cmd_concepts_build(args) -> int:
    from slotlab.concepts import build_library

    start = time.monotonic()
    model, config = load_model(args, "concepts")
    dataset = open_data(args, model, config)
    meta = {
        "model": str(Path(args.checkpoint).resolve()),
        "data": str(Path(args.data).resolve()) if args.data else None,
        "split": None if args.data else args.split,
        "data_config": asdict(config.data) if config is not None else None,
    }
    library = build_library(
        model,
        dataset,
        args.k,
        args.backend,
        args.seed,
        args.iters,
        args.batch_size,
        args.max_images,
        args.mask_size,
        not args.no_progress,
        meta,
    )
    path = library.save(args.out)
    m = library.metadata
    print(
        f"{m['num_slots']} slots of {m['num_images']} images -> {args.k} concepts ({args.backend} k-means, "
        f"{m['iterations']} iterations, {time.monotonic() - start:.1f} s); wrote {path}"
    )
    return 0


def cmd_concepts_show(args) -> int:
    from slotlab.concepts import ConceptLibrary, concept_sheet, library_dataset

    library = ConceptLibrary.load(args.library)
    concepts = None if args.concepts is None else [library.check_concept(c) for c in args.concepts]
    dataset = library_dataset(library, args.data)
    path = concept_sheet(library, dataset, args.out, concepts, args.per_concept, args.tile_size)
    print(f"wrote {path}")
    return 0
