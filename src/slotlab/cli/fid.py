"""``slotlab fid``: FID and KID of generation protocols (compositions, batch shift, shuffled slots)."""

from __future__ import annotations

from typing import Any

from slotlab.cli.options import (
    add_checkpoint,
    add_data,
    add_out,
    add_sampling,
    add_seed,
    concept_groups,
    data_name,
    load_model,
    number,
    open_data,
    write_json,
)


def add_fid(sub) -> None:
    p = sub.add_parser(
        "fid",
        help="FID and KID of generation protocols (compositions, batch shift, shuffled slots)",
        description="Decode slot sets by each protocol and compare the images with real ones by FID "
        "and KID: reconstruct (own slots), compose (concept library), recompose (each slot of a real scene "
        "replaced by a member of its own concept from another image), shift (slot i of scene b from "
        "image b + i), shuffle (slots drawn at random: the baseline). Features: the standard FID "
        "Inception-v3 (weights from --inception or downloaded with a checksum check), or the model's "
        "image autoencoder (offline proxy, not comparable with published FIDs).",
    )
    add_checkpoint(p, help="LSD (or object discovery) model folder, run folder or .ckpt")
    add_data(p)
    p.add_argument(
        "--library", help="concept library (.safetensors from `slotlab concepts build`): enables compose and recompose"
    )
    p.add_argument(
        "--protocols",
        nargs="+",
        default=None,
        metavar="P",
        help="of reconstruct, compose, recompose, shift, shuffle; default: compose and recompose (with "
        "--library), shift, shuffle",
    )
    p.add_argument(
        "--concepts",
        nargs="+",
        help="compose: concept ids, one slot from each; 'a,b,c' draws one of a "
        "group per scene (e.g. the ground concepts); default: random distinct concepts",
    )
    number(p, "--num", minimum=1, type=int, default=256, help="images per protocol (default 256)")
    p.add_argument(
        "--features",
        choices=["inception", "autoencoder"],
        default="inception",
        help="inception: FID's Inception-v3 (default); autoencoder: LSD's image autoencoder latents (a proxy)",
    )
    p.add_argument("--inception", help="path of pt_inception-2015-12-05-6726825d.pth (else the cache or a download)")
    add_sampling(p)
    add_seed(p, "the slot noise, the draws and the sampling noise")
    add_out(p, "write the JSON here (also printed)")
    p.set_defaults(func=cmd_fid)


def cmd_fid(args) -> int:
    from slotlab.errors import DataError
    from slotlab.generation import NEEDS_LIBRARY, PROTOCOLS, AutoencoderFeatures, score_protocols

    unknown = [p for p in args.protocols or [] if p not in PROTOCOLS]
    if unknown:
        raise DataError(f"unknown protocol {unknown[0]!r}; protocols: {', '.join(PROTOCOLS)}")
    concepts = concept_groups(args.concepts)  # checked before the model, the data and the features are loaded
    model, config = load_model(args, "fid")
    dataset = open_data(args, model, config)
    library = None
    if args.library:
        from slotlab.concepts import ConceptLibrary

        library = ConceptLibrary.load(args.library)
    protocols = args.protocols or (list(NEEDS_LIBRARY) if library else []) + ["shift", "shuffle"]
    if library is None and set(protocols) & set(NEEDS_LIBRARY):
        raise DataError(f"the {' and '.join(p for p in protocols if p in NEEDS_LIBRARY)} protocol needs --library")
    if library is not None:
        from slotlab.concepts import check_library_model

        check_library_model(library, model)
    if library is not None and library.slots.shape[1] != model.slot_width:
        raise DataError(
            f"{args.library} holds slots of width {library.slots.shape[1]}; the model's are "
            f"{model.slot_width}: build the library with this model"
        )
    autoencoder = model.image_autoencoder
    extractor: Any
    if args.features == "autoencoder":
        if autoencoder is None:
            raise DataError("--features autoencoder needs an LSD model (it has an image autoencoder)")
        extractor, features = AutoencoderFeatures(autoencoder), "image autoencoder latents, pooled 4x4 (proxy)"
    else:
        from slotlab.metrics.fid import InceptionFeatures

        extractor, features = InceptionFeatures(path=args.inception), "FID Inception-v3 pool3"
    results = score_protocols(
        model,
        dataset,
        extractor,
        protocols,
        args.num,
        library,
        args.seed,
        args.steps,
        args.sampler,
        autoencoder,
        concepts=concepts,
    )
    write_json(
        {
            "features": features,
            "num_images": min(args.num, len(dataset)),
            **results,
            "checkpoint": str(args.checkpoint),
            "data": data_name(args),
        },
        args.out,
    )
    return 0
