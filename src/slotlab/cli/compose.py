"""``slotlab compose``: new scenes from one slot of each of several concepts of a library."""

from __future__ import annotations

import sys

from slotlab.cli.concepts import MODEL_HELP
from slotlab.cli.options import add_checkpoint, add_out, add_sampling, add_seed, concept_groups, number
from slotlab.io import write_json


def add_compose(sub) -> None:
    p = sub.add_parser(
        "compose",
        help="new scenes from one slot of each of several concepts",
        description="Compositional generation with a concept library: every scene takes one member "
        "slot (drawn at random) of each chosen concept, and the model decodes the set (LSD: by "
        "reverse diffusion from noise). Writes the PNG grid (each scene, then the image regions of "
        "the slots it was made from) and its prompt beside it (OUT with .json: concept ids and the image and slot "
        "of every member used).",
    )
    add_checkpoint(p, required=False, help=MODEL_HELP + " (default: the library's model)")
    p.add_argument("--library", required=True, help="a library from `slotlab concepts build`")
    add_out(p, "PNG file to write; its prompt goes beside it (.json)", required=True, png=True)
    p.add_argument(
        "--concepts",
        nargs="+",
        metavar="C",
        help="concept ids, one slot of each per scene; an item like 3,8,9 is a group: each scene takes "
        "one of them at random (default: --num-concepts random concepts per scene)",
    )
    number(
        p, "--num-concepts", minimum=1, type=int, default=4, help="without --concepts: concepts per scene (default 4)"
    )
    number(p, "--top", minimum=1, type=int, help="draw members among the N nearest to their centroid (default: all)")
    number(p, "--num", minimum=1, type=int, default=8, help="scenes to make (default 8)")
    add_seed(p, "the draws and of the sampling noise")
    p.add_argument("--data", help="the library's images, if they moved (only for drawing the members)")
    add_sampling(p, "the scenes")
    p.set_defaults(func=cmd_compose)


def cmd_compose(args) -> int:
    import torch

    from slotlab.checkpoints import load_trained
    from slotlab.concepts import ConceptLibrary, compose, library_dataset
    from slotlab.concepts.library import member_tiles
    from slotlab.data.transforms import to_uint8
    from slotlab.errors import DataError, SlotlabError
    from slotlab.visualize import column_sheet, save_png

    library = ConceptLibrary.load(args.library)
    concepts = concept_groups(args.concepts)
    checkpoint = args.checkpoint or library.metadata.get("model")
    if checkpoint is None:
        raise DataError("the library does not record its model; pass --checkpoint")
    model, _ = load_trained(checkpoint, command="compose")
    images, prompt = compose(
        model,
        library,
        concepts,
        args.num,
        args.seed,
        num_concepts=args.num_concepts,
        top=args.top,
        steps=args.steps,
        sampler=args.sampler,
        guidance=args.guidance,
    )
    columns = [("composed", to_uint8(images.cpu()))]
    try:  # the member slots' image regions, when the library's images can be opened
        dataset = library_dataset(library, args.data)
        rows = [[library.row_of(img, slot) for img, slot in scene["members"]] for scene in prompt["scenes"]]
        for j in range(len(rows[0])):
            column = torch.tensor([r[j] for r in rows], dtype=torch.long)
            columns.append((f"member {j}", member_tiles(library, dataset, column)))
    except SlotlabError as e:
        print(f"slotlab: note: the member slots are not drawn ({e})", file=sys.stderr)
    path = save_png(column_sheet(columns, max(1, 256 // images.shape[-1])), args.out)
    prompt.update(checkpoint=str(checkpoint), library=str(args.library))
    prompt_path = write_json(path.with_suffix(".json"), prompt)
    print(f"wrote {path} and {prompt_path}")
    return 0
