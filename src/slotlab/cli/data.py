"""``slotlab data``: list, download, convert, inspect and generate datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slotlab.cli.options import add_out, add_progress, add_seed, number, write_json


def add_data(sub) -> None:
    p = sub.add_parser(
        "data",
        help="datasets: list, download, convert, info, generate, references",
        description="Datasets in their published formats and their procedural twins. Typical use:\n"
        "  slotlab data download clevr6 --root ~/data\n"
        "  slotlab data convert clevr6 ~/data/clevr_with_masks_train.tfrecords ~/data/clevr6-128\n"
        "  slotlab train clevr6 --out runs/clevr6 data.path=~/data/clevr6-128",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    q = dsub.add_parser(
        "list",
        help="the dataset registry: size, entities, source, twin",
        description="Every dataset a preset can name, with its native size, entities, the papers' "
        "crop and model resolution, whether it has a procedural twin, and where it is published.",
    )
    q.set_defaults(func=cmd_list)

    q = dsub.add_parser(
        "download",
        help="fetch a dataset's published files",
        description="Download a dataset's published files into ROOT. Offline, says which URL to fetch "
        "and where to put it.",
    )
    q.add_argument("name")
    q.add_argument("--root", default=".", help="folder to download into (default: .)")
    q.add_argument(
        "--mirror", help="replace the scheme and host of the URLs (a local mirror, e.g. file:///data/mirror)"
    )
    q.add_argument("--split", action="append", help="MOVi: splits to fetch (repeatable; default all)")
    add_progress(q)
    q.set_defaults(func=cmd_download)

    q = dsub.add_parser(
        "convert",
        help="convert a downloaded dataset once into a fast memory-mapped store",
        description="Read SRC in its published format, crop and resize as the papers do, and write "
        "a store to DST (a folder). Interrupted conversions resume when run again.",
    )
    q.add_argument("name", help="dataset name (see `slotlab data list`)")
    q.add_argument("src", help="the downloaded file or folder")
    q.add_argument("dst", help="store folder to write")
    q.add_argument("--split", default="train", help="split to convert, for datasets with several (default: train)")
    number(q, "--resolution", minimum=1, type=int, help="model resolution (default: the papers')")
    number(q, "--limit", minimum=1, type=int, help="stop after this many source records")
    add_progress(q)
    q.set_defaults(func=cmd_convert)

    q = dsub.add_parser(
        "info",
        help="describe a store, a .npz, a TFRecord file or a dataset name",
        description="Print JSON about PATH: a converted store (items, fields, source), a bring-your-own .npz "
        "(its images and label maps as --data reads them), a TFRecord file (records, features of the first), "
        "or a registered dataset name.",
    )
    q.add_argument("path")
    q.set_defaults(func=cmd_info)

    q = dsub.add_parser(
        "cache-latents",
        help="LSD: encode a store's images once with a frozen autoencoder",
        description="Encode every image of the store SRC with an image autoencoder (a slotlab "
        "autoencoder folder, a diffusers folder or a hub id) and write a store DST holding latents "
        "(posterior mode; with --posterior also its standard deviation), images and labels. LSD training on "
        "data.path=DST skips the encoder.",
    )
    q.add_argument("autoencoder", help="autoencoder folder (e.g. runs/ae/model) or hub id")
    q.add_argument("src", help="a store from `slotlab data convert` or `generate --store`")
    q.add_argument("dst")
    number(q, "--batch-size", minimum=1, type=int, default=64)
    q.add_argument(
        "--posterior",
        action="store_true",
        help="store the posterior's mean and standard deviation: LSD training then draws a fresh latent sample each "
        "step, as when it encodes on the fly (default: the mode only)",
    )
    add_progress(q)
    q.set_defaults(func=cmd_cache_latents)

    q = dsub.add_parser(
        "generate",
        help="write a procedural twin in the dataset's published format",
        description="Generate N scenes of a dataset's procedural twin and write them in the published "
        "format (TFRecord for DeepMind datasets, a CLEVR v1.0 folder for clevr), ready for "
        "`slotlab data convert`.",
    )
    q.add_argument("name")
    q.add_argument("out", help="output folder")
    number(q, "-n", "--num", minimum=1, type=int, default=1000, help="number of scenes (default 1000)")
    add_seed(q, "the scenes")
    q.add_argument(
        "--store",
        action="store_true",
        help="write a store at model resolution instead (train with "
        "data.path=OUT), generated in chunks so memory stays bounded; resumable",
    )
    number(q, "--resolution", minimum=1, type=int, help="--store: model resolution (default: the papers')")
    add_progress(q)
    q.set_defaults(func=cmd_generate)

    q = dsub.add_parser(
        "references",
        help="segmentation scores of reference segmentations made from a store's masks",
        description="Score segmentations built from the ground truth of a store, to read a model's "
        "FG-ARI, mBO and mIoU against: 'voronoi' (every object whole in its own segment, the ground "
        "given to the nearest object: perfect binding, ground split between the objects' slots) "
        "and 'pooled_G' (the ground truth on a G x G grid, upsampled bilinearly: the best that "
        "attention masks on a G x G feature map can give). Prints JSON.",
    )
    q.add_argument("store", help="a store with label maps (from `slotlab data convert` or `generate --store`)")
    number(q, "--grid", minimum=1, type=int, action="append", default=[], help="pooled_G references (repeatable)")
    number(q, "--last", minimum=1, type=int, help="only the store's last N scenes (e.g. the LSD demo's test split)")
    add_out(q, "also write the JSON to this file")
    add_progress(q)
    q.set_defaults(func=cmd_references)


def cmd_list(args) -> int:
    from slotlab.data.registry import DATASETS

    rows = [("name", "size", "entities", "crop", "res", "twin", "source")]
    for d in DATASETS.values():
        size = f"{d.size[0]}x{d.size[1]}" if d.size[0] else "any"
        rows.append(
            (
                d.name,
                size,
                str(d.num_entities or "-"),
                str(d.crop or "-"),
                str(d.resolution),
                "yes" if d.generate else "-",
                d.source,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[6])
    return 0


def cmd_download(args) -> int:
    from slotlab.data.download import download

    paths = download(
        args.name, args.root, args.mirror, tuple(args.split) if args.split else None, progress=not args.no_progress
    )
    for p in paths:
        print(p)
    return 0


def cmd_convert(args) -> int:
    from slotlab.data.convert import convert_dataset

    store = convert_dataset(
        args.name, args.src, args.dst, args.split, args.resolution, args.limit, progress=not args.no_progress
    )
    print(json.dumps(store.describe(), indent=2))
    return 0


def cmd_info(args) -> int:
    from slotlab.data.registry import DATASETS
    from slotlab.data.store import Store, is_store

    path = Path(args.path)
    if is_store(path):
        info = Store(path, allow_incomplete=True).describe()
    elif path.is_file() and path.suffix.lower() == ".npz":  # a bring-your-own file: its arrays, as --data reads them
        from slotlab.data.formats.npz import load_npz

        images, labels = load_npz(path)
        info = {"path": str(path), "images": f"{images.dtype} {list(images.shape)}"}
        info["labels"] = f"{labels.dtype} {list(labels.shape)}" if labels is not None else None
    elif path.is_file():  # a TFRecord file of a published dataset
        from slotlab.data.formats.tfrecord import parse_example, read_records

        count, first = 0, None
        for record in read_records(path):
            first = first or record
            count += 1
        feats = parse_example(first) if first else {}
        info = {
            "path": str(path),
            "records": count,
            "features": {
                k: (f"{len(v)} byte strings" if isinstance(v, list) else f"{v.dtype} x {v.size}")
                for k, v in feats.items()
            },
        }
    elif args.path in DATASETS:
        d = DATASETS[args.path]
        info = {
            "name": d.name,
            "size": list(d.size),
            "entities": d.num_entities,
            "crop": d.crop,
            "resolution": d.resolution,
            "splits": list(d.splits),
            "procedural_twin": d.generate is not None,
            "source": d.source,
            "downloads": list(d.downloads),
            "manual_download": d.manual_download,
        }
    else:
        from slotlab.errors import DataError

        raise DataError(f"{path}: neither a store, a file nor a dataset name")
    print(json.dumps(info, indent=2))
    return 0


def cmd_generate(args) -> int:
    from slotlab.data.registry import dataset_info
    from slotlab.errors import DataError

    info = dataset_info(args.name)
    if info.generate is None:
        raise DataError(f"dataset {args.name!r} has no procedural twin")
    if args.num < 1:
        raise DataError("--num must be at least 1")
    if args.store:
        from slotlab.data.convert import write_procedural_store

        store = write_procedural_store(
            args.name, args.out, args.num, args.seed, args.resolution, progress=not args.no_progress
        )
        print(json.dumps(store.describe(), indent=2))
        return 0
    if info.write_twin is None:
        raise DataError(f"dataset {args.name!r} is procedural only, with no published format to write: use --store")
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):  # the twin's files bear the published names: a download's, perhaps
        raise DataError(f"{out} already holds files; the twin is written into a new or empty folder")
    print(info.write_twin(out, args.num, args.seed))
    return 0


def cmd_cache_latents(args) -> int:
    from slotlab.data.latents import cache_store_latents
    from slotlab.data.store import Store
    from slotlab.models.image_autoencoder import load_image_autoencoder

    source = Store(args.src)
    autoencoder = load_image_autoencoder(args.autoencoder).eval()
    store = cache_store_latents(
        autoencoder,
        str(args.autoencoder),
        source,
        args.dst,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        posterior=args.posterior,
    )
    print(json.dumps(store.describe(), indent=2))
    return 0


def cmd_references(args) -> int:
    from slotlab.data.references import score_references

    write_json(score_references(args.store, args.grid, args.last, progress=not args.no_progress), args.out)
    return 0
