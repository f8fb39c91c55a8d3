"""``slotlab concepts build|show``, ``slotlab compose`` and ``slotlab edit``: the visual concept library and slot
editing of Latent Slot Diffusion (also for the Slot Attention autoencoder, whose broadcast decoder decodes any
set of slots)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

_MODEL_HELP = "model folder (model.safetensors + config.json), run folder or .ckpt: LSD or object discovery"
_DATA_HELP = ("a store from `slotlab data convert`, or a .npz with image uint8 [N,H,W,3]; default: the validation "
              "split of the model's training dataset")


def _add_sampling(p, what: str) -> None:
    p.add_argument("--steps", type=int, default=25, help=f"LSD: sampling steps to decode {what} (default 25)")
    p.add_argument("--sampler", choices=["dpm", "ddim"], default="dpm", help="LSD: DPM-Solver++ (default) or DDIM")
    p.add_argument("--guidance", type=float, default=1.0, help="LSD: classifier-free guidance scale (1: none)")


def add_concepts(sub) -> None:
    p = sub.add_parser("concepts", help="visual concept library: K-means over slots (build, show)",
                       description="A visual concept library (LSD paper, section 4): encode images into slots, "
                       "K-means over all the slots; each cluster is a concept. `build` makes one, `show` draws "
                       "its concepts. Then `slotlab compose` makes new scenes from them.")
    actions = p.add_subparsers(dest="concepts_command", required=True, metavar="ACTION")

    b = actions.add_parser("build", help="encode images, cluster their slots, save the library",
                           description="Encode images with a trained LSD or object discovery model, collect every "
                           "slot with its mask (LSD: last-iteration attention; autoencoder: the decoder's alpha "
                           "masks) and cluster the slots with K-means into --k concepts. Writes one .safetensors "
                           "file (tensors + JSON metadata that records the model and data).")
    b.add_argument("--checkpoint", required=True, help=_MODEL_HELP)
    b.add_argument("--data", help=_DATA_HELP)
    b.add_argument("--split", choices=["val", "train"], default="val",
                   help="without --data: the split of the training dataset (default val; the paper uses train)")
    b.add_argument("--k", type=int, default=64, help="number of concepts (K-means clusters; default 64)")
    b.add_argument("--out", required=True, help="library file to write (.safetensors)")
    b.add_argument("--backend", choices=["torch", "sklearn", "sklearn-minibatch"], default="torch",
                   help="K-means implementation (default torch)")
    b.add_argument("--iters", type=int, default=50, help="maximum K-means (Lloyd) iterations (default 50)")
    b.add_argument("--max-images", type=int, help="encode only the first N images (default: all)")
    b.add_argument("--batch-size", type=int, default=64, help="images encoded at once (default 64)")
    b.add_argument("--mask-size", type=int, default=32, help="side of the stored slot masks (default 32)")
    b.add_argument("--seed", type=int, default=0, help="seed of the slot initialisation noise and of K-means")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_concepts_build)

    s = actions.add_parser("show", help="PNG: one row per concept, its nearest members' image regions",
                           description="Draw a concept library: one row per concept, the image regions (image * "
                           "mask on grey) of the slots nearest its centroid. The images are re-opened from the data "
                           "recorded in the library (or --data).")
    s.add_argument("--library", required=True, help="a library from `slotlab concepts build`")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--concepts", type=int, nargs="+", metavar="C", help="concept ids to draw (default: all)")
    s.add_argument("--per-concept", type=int, default=8, help="members per concept (default 8)")
    s.add_argument("--tile-size", type=int, default=64, help="side of each tile in pixels (default 64)")
    s.add_argument("--data", help="the images the library was built from, if they moved (default: as recorded)")
    s.set_defaults(func=cmd_concepts_show)


def add_compose(sub) -> None:
    p = sub.add_parser("compose", help="new scenes from one slot of each of several concepts",
                       description="Compositional generation with a concept library: every scene takes one member "
                       "slot (drawn at random) of each chosen concept, and the model decodes the set (LSD: by "
                       "reverse diffusion from noise). Writes the PNG grid (each scene, then the image regions of "
                       "the slots it was made from) and prompt.json beside it (concept ids and the image and slot "
                       "of every member used).")
    p.add_argument("--checkpoint", help=_MODEL_HELP + " (default: the library's model)")
    p.add_argument("--library", required=True, help="a library from `slotlab concepts build`")
    p.add_argument("--out", required=True, help="PNG file to write; prompt.json goes beside it")
    p.add_argument("--concepts", nargs="+", metavar="C",
                   help="concept ids, one slot of each per scene; an item like 3,8,9 is a group: each scene takes "
                   "one of them at random (default: --num-concepts random concepts per scene)")
    p.add_argument("--num-concepts", type=int, default=4, help="without --concepts: concepts per scene (default 4)")
    p.add_argument("--top", type=int, help="draw members among the N nearest to their centroid (default: all)")
    p.add_argument("--num", type=int, default=8, help="scenes to make (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws and of the sampling noise")
    p.add_argument("--data", help="the library's images, if they moved (only for drawing the members)")
    _add_sampling(p, "the scenes")
    p.set_defaults(func=cmd_compose)


def add_edit(sub) -> None:
    p = sub.add_parser("edit", help="remove, replace or insert a slot of an image, decode, before/after PNG",
                       description="Edit an image in slot space: encode it, remove a slot (by index or by a pixel "
                       "of the object), replace one with a slot of another image, or insert another image's slot; "
                       "decode the original and the edited slots with the same noise and draw: input | the edited "
                       "slot's region | reconstruction | edited [| source image | source slot's region].")
    p.add_argument("--checkpoint", required=True, help=_MODEL_HELP)
    p.add_argument("--data", help=_DATA_HELP)
    p.add_argument("--image", type=int, required=True, help="index of the image to edit")
    p.add_argument("--out", required=True, help="PNG file to write")
    op = p.add_mutually_exclusive_group(required=True)
    op.add_argument("--remove-slot", type=int, metavar="K", help="remove slot K")
    op.add_argument("--remove-at", type=int, nargs=2, metavar=("Y", "X"),
                    help="remove the slot that holds pixel (row Y, column X) of the model-resolution image")
    op.add_argument("--replace-slot", type=int, metavar="K",
                    help="replace slot K by slot --from-slot of image --from-image")
    op.add_argument("--insert-from-image", type=int, metavar="J", help="insert slot --insert-slot of image J")
    p.add_argument("--from-image", type=int, metavar="J", help="with --replace-slot: the source image")
    p.add_argument("--from-slot", type=int, metavar="L", help="with --replace-slot: the source image's slot")
    p.add_argument("--insert-slot", type=int, metavar="L", help="with --insert-from-image: the slot to insert")
    p.add_argument("--keep-rest", action="store_true",
                   help="also decode only the edited slots' region (grown by --grow pixels) and keep the input "
                   "elsewhere: LSD samples with the input's latents blended in, the autoencoder pastes its "
                   "decoded region into the input; adds the column 'rest kept'")
    p.add_argument("--grow", type=int, default=2, metavar="PX",
                   help="with --keep-rest: pixels by which the edited slots' region is grown (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the slot initialisation and sampling noise")
    _add_sampling(p, "the images")
    p.set_defaults(func=cmd_edit)


# ----------------------------------------------------------------------------------------------- commands


def _load_model(checkpoint: str | Path):
    from slotlab.checkpoints import load_trained
    from slotlab.editing import model_kind

    model, config = load_trained(checkpoint)
    model_kind(model)  # a DataError for other models
    return model, config


def _open_dataset(config, data: str | None, resolution: int, split: str = "val"):
    from slotlab.cli.main import _eval_dataset
    from slotlab.data.registry import build_dataset
    from slotlab.errors import DataError

    if data is None and split == "train":
        if config is None:
            raise DataError("this model folder has no experiment.yaml; pass --data")
        return build_dataset(config.data, "train")
    return _eval_dataset(config, data, resolution)


def _library_dataset(library, data: str | None = None):
    """The images a library was built from: as recorded in its metadata, or ``data`` (a store or .npz)."""
    from slotlab.config import DataConfig, ExperimentConfig
    from slotlab.errors import DataError

    meta = library.metadata
    data_config = meta.get("data_config")
    config = ExperimentConfig(data=DataConfig(**data_config)) if data_config else None
    data = data or meta.get("data")
    if data is None and config is None:
        raise DataError("the library does not record its data; pass --data")
    return _open_dataset(config, data, meta.get("resolution"), meta.get("split") or "val")


def _parse_concepts(items: list[str] | None) -> list[int | list[int]] | None:
    from slotlab.errors import ConfigError

    if items is None:
        return None
    out: list[int | list[int]] = []
    for item in items:
        try:
            ids = [int(x) for x in item.split(",") if x != ""]
        except ValueError:
            raise ConfigError(f"--concepts: {item!r} is not a concept id or a comma-separated group") from None
        if not ids:
            raise ConfigError(f"--concepts: {item!r} is not a concept id or a comma-separated group")
        out.append(ids if "," in item else ids[0])
    return out


def cmd_concepts_build(args) -> int:
    from slotlab.concepts import build_library
    from slotlab.errors import ConfigError

    if args.k < 1:
        raise ConfigError("--k must be at least 1")
    start = time.monotonic()
    model, config = _load_model(args.checkpoint)
    dataset = _open_dataset(config, args.data, model.config.resolution, args.split)
    meta = {"model": str(Path(args.checkpoint).resolve()),
            "data": str(Path(args.data).resolve()) if args.data else None,
            "split": None if args.data else args.split,
            "data_config": asdict(config.data) if config is not None else None}
    library = build_library(model, dataset, args.k, args.backend, args.seed, args.iters, args.batch_size,
                            args.max_images, args.mask_size, not args.no_progress, meta)
    path = library.save(args.out)
    m = library.metadata
    print(f"{m['num_slots']} slots of {m['num_images']} images -> {args.k} concepts ({args.backend} k-means, "
          f"{m['iterations']} iterations, {time.monotonic() - start:.1f} s); wrote {path}")
    return 0


def cmd_concepts_show(args) -> int:
    from slotlab.concepts import ConceptLibrary, concept_sheet

    library = ConceptLibrary.load(args.library)
    concepts = None if args.concepts is None else [library.check_concept(c) for c in args.concepts]
    dataset = _library_dataset(library, args.data)
    path = concept_sheet(library, dataset, args.out, concepts, args.per_concept, args.tile_size)
    print(f"wrote {path}")
    return 0


def _scale(resolution: int) -> int:
    return max(1, 256 // resolution)


def cmd_compose(args) -> int:
    import sys

    from slotlab.concepts import ConceptLibrary
    from slotlab.concepts.library import member_tiles
    from slotlab.data.transforms import to_uint8
    from slotlab.editing import compose, load_autoencoder_of
    from slotlab.errors import DataError, SlotlabError
    from slotlab.visualize import column_sheet, save_png

    library = ConceptLibrary.load(args.library)
    concepts = _parse_concepts(args.concepts)
    checkpoint = args.checkpoint or library.metadata.get("model")
    if checkpoint is None:
        raise DataError("the library does not record its model; pass --checkpoint")
    model, _ = _load_model(checkpoint)
    images, prompt = compose(model, library, concepts, args.num, args.seed, num_concepts=args.num_concepts,
                             top=args.top, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                             autoencoder=load_autoencoder_of(model))
    columns = [("composed", to_uint8(images.cpu()))]
    try:  # the member slots' image regions, when the library's images can be opened
        dataset = _library_dataset(library, args.data)
        rows = [[_row_of(library, img, slot) for img, slot in scene["members"]] for scene in prompt["scenes"]]
        for j in range(len(rows[0])):
            columns.append((f"member {j}", member_tiles(library, dataset, _tensor([r[j] for r in rows]))))
    except SlotlabError as e:
        print(f"slotlab: note: the member slots are not drawn ({e})", file=sys.stderr)
    path = save_png(column_sheet(columns, _scale(images.shape[-1])), args.out)
    prompt.update(checkpoint=str(checkpoint), library=str(args.library))
    prompt_path = path.with_name("prompt.json")
    prompt_path.write_text(json.dumps(prompt, indent=2) + "\n")
    print(f"wrote {path} and {prompt_path}")
    return 0


def _tensor(values):
    import torch

    return torch.tensor(values, dtype=torch.long)


def _row_of(library, image: int, slot: int) -> int:
    """The library row of (image index, slot index)."""
    return int(((library.image_index == image) & (library.slot_index == slot)).nonzero()[0, 0])


def cmd_edit(args) -> int:
    import torch

    from slotlab.data.transforms import to_uint8
    from slotlab.editing import (
        decode_slots,
        encode_slots,
        insert_slot,
        load_autoencoder_of,
        grow_region,
        pick_slot,
        remove_slot,
        replace_slot,
        slot_segment,
    )
    from slotlab.metrics import psnr
    from slotlab.errors import ConfigError, DataError
    from slotlab.visualize import column_sheet, save_png

    if args.replace_slot is not None and (args.from_image is None or args.from_slot is None):
        raise ConfigError("--replace-slot needs --from-image and --from-slot")
    if args.replace_slot is None and (args.from_image is not None or args.from_slot is not None):
        raise ConfigError("--from-image and --from-slot go with --replace-slot")
    if args.insert_from_image is not None and args.insert_slot is None:
        raise ConfigError("--insert-from-image needs --insert-slot")
    if args.insert_from_image is None and args.insert_slot is not None:
        raise ConfigError("--insert-slot goes with --insert-from-image")
    if args.grow < 0:
        raise ConfigError(f"--grow must be >= 0, got {args.grow}")
    model, config = _load_model(args.checkpoint)
    r = model.config.resolution
    dataset = _open_dataset(config, args.data, r)
    source = args.from_image if args.replace_slot is not None else args.insert_from_image
    index = [args.image] + ([source] if source is not None else [])
    for i in index:
        if not 0 <= i < len(dataset):
            raise DataError(f"image {i} does not exist: the data has {len(dataset)} images (0 to {len(dataset) - 1})")
    images = dataset[torch.tensor(index)]["image"].to(next(model.parameters()).device)
    g = torch.Generator(device=images.device).manual_seed(args.seed)
    enc = encode_slots(model, images, g)
    slots, masks = enc.slots[0], enc.masks[0]
    j = None
    if args.remove_slot is not None or args.remove_at is not None:
        i = pick_slot(masks, index=args.remove_slot, pixel=tuple(args.remove_at) if args.remove_at else None)
        edited, what = remove_slot(slots, i), f"removed slot {i}"
        changed = slot_segment(masks, i)
    elif args.replace_slot is not None:
        i, j = pick_slot(masks, index=args.replace_slot), pick_slot(enc.masks[1], index=args.from_slot)
        edited, what = replace_slot(slots, i, enc.slots[1], j), f"replaced slot {i} by slot {j} of image {source}"
        changed = slot_segment(masks, i) | slot_segment(enc.masks[1], j)  # where the old and the new object were
    else:
        i, j = None, pick_slot(enc.masks[1], index=args.insert_slot)
        edited, what = insert_slot(slots, enc.slots[1, j]), f"inserted slot {j} of image {source}"
        changed = slot_segment(enc.masks[1], j)
    autoencoder = load_autoencoder_of(model)
    decode = dict(steps=args.steps, sampler=args.sampler, seed=args.seed, autoencoder=autoencoder,
                  guidance=args.guidance)
    recon = decode_slots(model, slots[None], **decode)  # the same seed: the same noise for both
    after = decode_slots(model, edited[None], **decode)
    region = (images[:, None] * enc.masks[:, :, None]).cpu()  # [B, K, 3, R, R] each slot's region on grey
    columns = [("input", to_uint8(images[:1].cpu()))]
    if i is not None:
        columns.append((f"slot {i}", to_uint8(region[:1, i])))
    columns += [("reconstruction", to_uint8(recon.cpu())), ("edited", to_uint8(after.cpu()))]
    report = ""
    if args.keep_rest:
        grown = grow_region(changed[None], args.grow)
        kept = decode_slots(model, edited[None], **decode, keep_from=images[:1], region=grown)
        columns.append(("rest kept", to_uint8(kept.cpu())))
        outside = ~grown
        report = (f"; PSNR to the input outside the edited region ({int(outside.sum())} of {r * r} pixels): "
                  f"edited {float(psnr(after, images[:1], outside)):.1f} dB, "
                  f"rest kept {float(psnr(kept, images[:1], outside)):.1f} dB")
    if source is not None:
        columns += [(f"image {source}", to_uint8(images[1:].cpu())), (f"its slot {j}", to_uint8(region[1:, j]))]
    path = save_png(column_sheet(columns, _scale(r)), args.out)
    print(f"image {args.image}: {what}; wrote {path}{report}")
    return 0
