"""Compositional generation (LSD paper, section 4): new scenes decoded from one member slot of each of several
visual concepts of a :class:`~slotlab.concepts.library.ConceptLibrary`."""

from __future__ import annotations

import torch
from torch import Tensor

from slotlab.concepts.library import ConceptLibrary, check_library_model
from slotlab.editing import decode_slots, slot_model
from slotlab.errors import DataError


def _draw(n: int, g: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=g))


def compose(
    model,
    library: ConceptLibrary,
    concepts: list[int | list[int]] | None = None,
    n: int = 8,
    seed: int = 0,
    *,
    num_concepts: int = 4,
    top: int | None = None,
    steps: int = 25,
    sampler: str = "dpm",
    guidance: float = 1.0,
    autoencoder=None,
) -> tuple[Tensor, dict]:
    """``n`` new scenes, each decoded from one member slot of each of several concepts of ``library``.

    concepts: concept ids (every scene takes one slot of each), where an item may be a list of ids, a group
    (every scene takes one concept of the group at random); None: every scene takes ``num_concepts`` distinct
    non-empty concepts at random. Members are drawn uniformly from the ``top`` nearest to their centroid
    (default: all members). Returns images [n, 3, R, R] in [-1, 1] and the prompt: per scene the concept ids and
    the (image index, slot index) of every member slot used, with the seed and sampling settings.
    """
    check_library_model(library, model)
    if concepts is not None:
        if len(concepts) == 0:
            raise DataError("no concepts given")
        for c in concepts:
            group = c if isinstance(c, (list, tuple)) else [c]
            if not group:
                raise DataError("an empty group of concepts")
            for cid in group:
                library.check_concept(cid, nonempty=True)
    nonempty = (library.sizes > 0).nonzero().flatten()
    if concepts is None and not 1 <= num_concepts <= len(nonempty):
        raise DataError(f"cannot draw {num_concepts} distinct concepts: the library has {len(nonempty)} non-empty")
    if n < 1:
        raise DataError("compose at least one scene")
    if top is not None and top < 1:
        raise DataError(f"top must be at least 1, got {top}")
    g = torch.Generator().manual_seed(seed)
    rows, scenes = [], []
    for _ in range(n):
        if concepts is None:
            picks = nonempty[torch.randperm(len(nonempty), generator=g)[:num_concepts]].tolist()
        else:
            picks = [int(c[_draw(len(c), g)]) if isinstance(c, (list, tuple)) else int(c) for c in concepts]
        members = []
        for c in picks:
            pool = library.nearest_members(c, top)
            members.append(int(pool[_draw(len(pool), g)]))
        rows.append(members)
        scenes.append(
            {"concepts": picks, "members": [[int(library.image_index[r]), int(library.slot_index[r])] for r in members]}
        )
    slots = library.slots[torch.tensor(rows)]  # [n, C', D]
    model = slot_model(model)
    images = decode_slots(model, slots, steps, sampler, seed, autoencoder, guidance)
    prompt = {
        "seed": seed,
        "concepts": concepts,
        "num_concepts": None if concepts else num_concepts,
        "top": top,
        "steps": steps,
        "sampler": sampler,
        "guidance": guidance,
        "scenes": scenes,
        "members_are": "[image index, slot index] in the library's dataset",
    }
    if model.image_autoencoder is None:
        prompt.update(steps=None, sampler=None, guidance=None)  # a decoder that does not sample
    return images, prompt
