"""The visual concept library of Latent Slot Diffusion (section 4 of the paper): encode many images, collect
every slot, cluster the slots with K-means; each cluster is a concept, its members the slots nearest its centroid.

- :func:`collect_slots`: slots, which image and slot each came from, and its soft mask (small, uint8).
- :func:`kmeans`: batched PyTorch K-means (greedy k-means++ init, chunked distances, empty clusters re-seeded
  with the farthest points) or scikit-learn's.
- :class:`ConceptLibrary`: centroids, the concept of every slot, members sorted by distance to their centroid;
  saved as one ``.safetensors`` file (tensors + JSON metadata, no pickle).
- :func:`concept_sheet`: a PNG, one row per concept: the masked image regions of its nearest members.

Shapes: S slots collected, D slot width, C concepts, K slots per image, m mask side, R image side.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor
from tqdm.auto import tqdm

from slotlab.data.datasets import SceneDataset, SequentialBatchSampler
from slotlab.data.transforms import to_uint8
from slotlab.editing import encode_slots, slot_model
from slotlab.errors import ConfigError, DataError
from slotlab.io import atomic_path
from slotlab.kinds import kind_of

BACKENDS = ("torch", "sklearn", "sklearn-minibatch")
FORMAT = "slotlab-concepts"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------- collection


@dataclass
class SlotCollection:
    """Every slot of some images, with where it came from."""

    slots: Tensor  # [S, D] float32
    image_index: Tensor  # [S] int64: the slot's image (row of the dataset)
    slot_index: Tensor  # [S] int64: the slot's position among its image's K slots
    masks: Tensor  # [S, m, m] uint8: the slot's soft mask * 255 (see mask_source)
    area: Tensor  # [S] float32: mean of the soft mask = the fraction of the image the slot holds
    num_images: int
    mask_source: str  # "alpha" (autoencoder decoder masks) or "attention" (last-iteration Slot Attention)

    def __len__(self) -> int:
        return self.slots.shape[0]


@torch.no_grad()
def collect_slots(
    model,
    dataset: SceneDataset,
    batch_size: int = 64,
    seed: int = 0,
    max_images: int | None = None,
    progress: bool = True,
    mask_size: int = 32,
    mask_source: str = "auto",
) -> SlotCollection:
    """Encode the first ``max_images`` images of ``dataset`` (default all) and gather every slot.

    Works with Latent Slot Diffusion (masks: last-iteration attention, upsampled bilinearly) and the Slot
    Attention autoencoder (masks: the decoder's alpha masks, or its attention with ``mask_source="attention"``),
    see :func:`slotlab.editing.encode_slots`. Slot initialisation noise comes from a generator seeded with
    ``seed``, so the collection repeats exactly.
    """
    model = slot_model(model)
    r = model.resolution
    if dataset.resolution != r:
        raise DataError(f"the images are {dataset.resolution}x{dataset.resolution}; the model takes {r}x{r}")
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    if n < 1:
        raise DataError("no images to collect slots from")
    parts: dict[str, list[Tensor]] = {k: [] for k in ("slots", "image_index", "slot_index", "masks", "area")}
    source = "attention"
    for idx in tqdm(SequentialBatchSampler(n, batch_size), desc="collect slots", disable=not progress, leave=False):
        enc = encode_slots(model, dataset[idx]["image"].to(device), g, mask_size, mask_source)
        b, k, d = enc.slots.shape
        masks = enc.masks.float().cpu()
        parts["slots"].append(enc.slots.float().cpu().reshape(b * k, d))
        parts["image_index"].append(idx.repeat_interleave(k))
        parts["slot_index"].append(torch.arange(k).repeat(b))
        parts["masks"].append((masks.clamp(0, 1) * 255).round().to(torch.uint8).reshape(b * k, mask_size, mask_size))
        parts["area"].append(masks.mean(dim=(-2, -1)).reshape(b * k))
        source = enc.source
    return SlotCollection(**{k: torch.cat(v) for k, v in parts.items()}, num_images=n, mask_source=source)


# ------------------------------------------------------------------------------------------------- k-means


@dataclass
class KMeansResult:
    centroids: Tensor  # [C, D] float32
    labels: Tensor  # [S] int64: the nearest centroid of every point
    inertia: float  # sum of squared distances of the points to their centroids
    iterations: int  # Lloyd iterations run


def _sq_dists(x: Tensor, x2: Tensor, c: Tensor) -> Tensor:
    """||x - c||^2 [n, C] from x [n, D] (x2 = ||x||^2 [n]) and c [C, D], by the matmul identity."""
    return (x2[:, None] - 2 * x @ c.T + c.square().sum(1)[None]).clamp_min_(0)


def _assign(x: Tensor, x2: Tensor, c: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Nearest centroid [S] and the squared distance to it [S], ``chunk`` points at a time."""
    labels, d2 = [], []
    for xs, x2s in zip(x.split(chunk), x2.split(chunk)):
        d, i = _sq_dists(xs, x2s, c).min(dim=1)
        labels.append(i)
        d2.append(d)
    return torch.cat(labels), torch.cat(d2)


def kmeans_plus_plus(x: Tensor, k: int, g: torch.Generator, local_trials: int | None = None) -> Tensor:
    """Greedy k-means++ seeding: each new centre is the best (lowest potential) of ``local_trials`` candidates
    drawn with probability proportional to the squared distance to the centres chosen so far. -> [k, D]."""
    s = x.shape[0]
    trials = local_trials or 2 + int(math.log(k))
    x2 = x.square().sum(1)
    first = int(torch.randint(s, (1,), generator=g, device=g.device))
    chosen = [first]
    d2 = _sq_dists(x, x2, x[first : first + 1])[:, 0]  # [S] squared distance to the nearest centre so far
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than clusters: any point will do
            cand = torch.randint(s, (trials,), generator=g, device=g.device)
        else:
            cand = torch.multinomial(d2 / total, trials, replacement=True, generator=g)
        d2_cand = torch.minimum(d2[:, None], _sq_dists(x, x2, x[cand]))  # [S, trials]
        best = int(d2_cand.sum(0).argmin())
        chosen.append(int(cand[best]))
        d2 = d2_cand[:, best].contiguous()
    return x[torch.tensor(chosen, device=x.device)]


def _kmeans_torch(x: Tensor, k: int, iters: int, seed: int, init: Tensor | None, chunk: int) -> KMeansResult:
    x = x.float()
    mean = x.mean(0)
    x = x - mean  # centred: less cancellation in the matmul identity
    x2 = x.square().sum(1)
    g = torch.Generator(device=x.device).manual_seed(seed)
    c = kmeans_plus_plus(x, k, g) if init is None else init.to(x.device, torch.float32) - mean
    prev = None
    it = 0
    for it in range(1, iters + 1):  # noqa: B007  (the count is returned)
        labels, d2 = _assign(x, x2, c, chunk)
        if prev is not None and torch.equal(labels, prev):
            break
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):  # re-seed empty clusters with the points farthest from their centroids
            c[empty] = x[d2.topk(len(empty)).indices]
        prev = labels
    else:
        labels, d2 = _assign(x, x2, c, chunk)  # labels of the final centroids
    inertia = sum(float((xs - c[ls]).double().square().sum()) for xs, ls in zip(x.split(chunk), labels.split(chunk)))
    return KMeansResult(c + mean, labels, inertia, it)  # inertia exactly, not by the matmul identity


def _kmeans_sklearn(x: Tensor, k: int, iters: int, seed: int, init: Tensor | None, minibatch: bool) -> KMeansResult:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    data = x.detach().cpu().float().numpy()
    start = "k-means++" if init is None else init.detach().cpu().float().numpy()
    if minibatch:
        km = MiniBatchKMeans(
            n_clusters=k, init=start, n_init=1, max_iter=iters, random_state=seed, batch_size=min(4096, len(data))
        )
    else:
        km = KMeans(n_clusters=k, init=start, n_init=1, max_iter=iters, random_state=seed, algorithm="lloyd")
    labels = km.fit_predict(data)
    centroids = torch.from_numpy(np.asarray(km.cluster_centers_, dtype=np.float32))
    c = centroids.to(x.device)
    d2 = (x.float() - c[torch.from_numpy(labels).to(x.device).long()]).square().sum(1)
    return KMeansResult(c, torch.from_numpy(labels).long().to(x.device), float(d2.double().sum()), int(km.n_iter_))


def kmeans(
    x: Tensor,
    k: int,
    iters: int = 50,
    seed: int = 0,
    backend: str = "torch",
    init: Tensor | None = None,
    chunk_size: int = 65536,
) -> KMeansResult:
    """K-means of points x [S, D] into ``k`` clusters: centroids [k, D], labels [S], inertia.

    backend "torch": Lloyd iterations on x's device from greedy k-means++ seeds (or ``init`` [k, D]), distances
    by the matmul identity ``chunk_size`` points at a time, clusters that empty re-seeded with the points
    farthest from their centroids; stops when no label changes or after ``iters`` iterations. "sklearn":
    ``sklearn.cluster.KMeans(n_init=1)``; "sklearn-minibatch": ``MiniBatchKMeans`` (for millions of slots).
    The same seed gives the same result (on the same device and thread count).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown k-means backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if x.ndim != 2:
        raise DataError(f"expected points [S, D], got {list(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise DataError(f"cannot make {k} clusters of {x.shape[0]} points")
    if init is not None and tuple(init.shape) != (k, x.shape[1]):
        raise DataError(f"init must be [{k}, {x.shape[1]}], got {list(init.shape)}")
    if backend == "torch":
        return _kmeans_torch(x, k, iters, seed, init, chunk_size)
    return _kmeans_sklearn(x, k, iters, seed, init, minibatch=backend == "sklearn-minibatch")


# ------------------------------------------------------------------------------------------------- library


@dataclass
class ConceptLibrary:
    """Concepts = K-means clusters of slots. ``metadata`` records how it was made (model, data, seed, k, backend,
    ...), enough for ``slotlab concepts show`` to re-open the images."""

    centroids: Tensor  # [C, D]
    labels: Tensor  # [S] int64: the concept of every slot
    distances: Tensor  # [S] float32: squared distance of every slot to its concept's centroid
    slots: Tensor  # [S, D] float32
    image_index: Tensor  # [S] int64
    slot_index: Tensor  # [S] int64
    masks: Tensor  # [S, m, m] uint8
    area: Tensor  # [S] float32
    metadata: dict = field(default_factory=dict)
    order: Tensor = field(init=False, repr=False)  # [S] slot rows grouped by concept, nearest first
    offsets: Tensor = field(init=False, repr=False)  # [C + 1] concept c's members are order[offsets[c]:offsets[c+1]]

    def __post_init__(self):
        by_distance = torch.sort(self.distances, stable=True).indices
        self.order = by_distance[torch.sort(self.labels[by_distance], stable=True).indices]
        counts = torch.bincount(self.labels, minlength=self.num_concepts)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    @classmethod
    def build(
        cls,
        collection: SlotCollection,
        k: int,
        backend: str = "torch",
        seed: int = 0,
        iters: int = 50,
        metadata: dict | None = None,
    ) -> ConceptLibrary:
        """K-means of the collection's slots into ``k`` concepts."""
        result = kmeans(collection.slots, k, iters, seed, backend)
        distances = (collection.slots - result.centroids[result.labels]).square().sum(1)
        meta = {
            "k": k,
            "backend": backend,
            "seed": seed,
            "iterations": result.iterations,
            "max_iterations": iters,
            "inertia": result.inertia,
            "num_slots": len(collection),
            "num_images": collection.num_images,
            "mask_source": collection.mask_source,
            "mask_size": int(collection.masks.shape[-1]),
            "slot_dim": int(collection.slots.shape[1]),
            **(metadata or {}),
        }
        return cls(
            result.centroids.cpu(),
            result.labels.cpu(),
            distances.cpu(),
            collection.slots,
            collection.image_index,
            collection.slot_index,
            collection.masks,
            collection.area,
            meta,
        )

    @property
    def num_concepts(self) -> int:
        return self.centroids.shape[0]

    @property
    def sizes(self) -> Tensor:
        """[C] number of members of every concept."""
        return self.offsets.diff()

    def check_concept(self, concept: int, nonempty: bool = False) -> int:
        """``concept`` if it is a concept id (and, if ``nonempty``, has members), else a DataError."""
        c = int(concept)
        if not 0 <= c < self.num_concepts:
            raise DataError(
                f"concept {c} does not exist: the library has {self.num_concepts} (0 to {self.num_concepts - 1})"
            )
        if nonempty and self.sizes[c] == 0:
            raise DataError(f"concept {c} has no members")
        return c

    def members(self, concept: int) -> Tensor:
        """Slot rows of ``concept``, nearest to its centroid first. [size]"""
        c = self.check_concept(concept)
        return self.order[self.offsets[c] : self.offsets[c + 1]]

    def nearest_members(self, concept: int, n: int | None = None) -> Tensor:
        """The (up to) ``n`` slot rows nearest the centroid of ``concept`` (all if None). [min(n, size)]"""
        return self.members(concept)[:n]

    def row_of(self, image: int, slot: int) -> int:
        """The library row of the slot ``slot`` of image ``image``."""
        rows = ((self.image_index == image) & (self.slot_index == slot)).nonzero()
        if not len(rows):
            raise DataError(f"the library holds no slot {slot} of image {image}")
        return int(rows[0, 0])

    def nearest_concepts(self, slots: Tensor) -> Tensor:
        """Slots [..., D] -> [...] int64: the non-empty concept whose centroid is nearest to each slot."""
        flat = slots.reshape(-1, slots.shape[-1]).float().cpu()
        nonempty = (self.sizes > 0).nonzero().flatten()
        labels, _ = _assign(flat, flat.square().sum(1), self.centroids[nonempty].float(), chunk=65536)
        return nonempty[labels].reshape(slots.shape[:-1])

    def draw_members(
        self, concepts: Tensor, generator: torch.Generator | None = None, top: int | None = None
    ) -> Tensor:
        """Concept ids [...] -> [...] slot rows, one member of each drawn uniformly (among its ``top`` nearest to
        the centroid when given), all at once."""
        flat = concepts.reshape(-1).long()
        sizes = self.sizes[flat]
        if (sizes == 0).any():
            raise DataError(f"concept {int(flat[sizes == 0][0])} has no members")
        if top is not None:
            sizes = sizes.clamp(max=top)
        pick = (torch.rand(flat.shape, generator=generator) * sizes).long().clamp(max=sizes - 1)
        return self.order[self.offsets[flat] + pick].reshape(concepts.shape)

    def tensors(self) -> dict[str, Tensor]:
        return {
            "centroids": self.centroids,
            "labels": self.labels,
            "distances": self.distances,
            "slots": self.slots,
            "image_index": self.image_index,
            "slot_index": self.slot_index,
            "masks": self.masks,
            "area": self.area,
        }

    def save(self, path: str | Path) -> Path:
        """One ``.safetensors`` file: the tensors, and the metadata as JSON in the file's header."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}
        with atomic_path(path) as tmp:
            save_file(
                tensors,
                str(tmp),
                metadata={"format": FORMAT, "version": str(FORMAT_VERSION), "metadata": json.dumps(self.metadata)},
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConceptLibrary:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"concept library not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                if header.get("format") != FORMAT:
                    raise DataError(f"{path}: not a slotlab concept library (build one with `slotlab concepts build`)")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (a safetensors file, not a dict)
        except DataError:
            raise
        except Exception as e:  # safetensors raises its own error type for files that are not safetensors
            raise DataError(
                f"{path}: not a readable .safetensors concept library ({' '.join(str(e).split())[:200]})"
            ) from None
        if int(header.get("version", 0)) > FORMAT_VERSION:
            raise DataError(f"{path}: concept library format {header['version']} is newer than this slotlab's")
        missing = set(cls.__dataclass_fields__) - {"metadata", "order", "offsets"} - set(tensors)
        if missing:
            raise DataError(f"{path}: the library lacks {', '.join(sorted(missing))}")
        return cls(**tensors, metadata=json.loads(header.get("metadata", "{}")))


def check_library_model(library: ConceptLibrary, model) -> None:
    """A one-line DataError when ``library`` was built with another model than ``model`` (its slots would mean
    nothing to this decoder). Libraries from before the fingerprint was recorded are taken as they are."""
    recorded = library.metadata.get("model_fingerprint")
    if recorded is not None and recorded != model.fingerprint():
        raise DataError(
            f"the concept library was built with another model (weights {recorded}, this model's "
            f"{model.fingerprint()}): build a library with this model, or pass the library's model "
            f"({library.metadata.get('model', 'unknown')})"
        )


def library_dataset(library: ConceptLibrary, data: str | Path | None = None) -> SceneDataset:
    """The images a library was built from: as recorded in its metadata, or ``data`` (a store or .npz)."""
    from slotlab.data.config import DataConfig
    from slotlab.data.registry import open_dataset
    from slotlab.fields import build

    meta = library.metadata
    config = build(DataConfig, meta["data_config"], "the library's data_config") if meta.get("data_config") else None
    data = data or meta.get("data")
    if data is None and config is None:
        raise DataError("the library does not record its data; pass --data")
    return open_dataset(config, data, int(meta["resolution"]), meta.get("split") or "val")


def build_library(
    model,
    dataset: SceneDataset,
    k: int,
    backend: str = "torch",
    seed: int = 0,
    iters: int = 50,
    batch_size: int = 64,
    max_images: int | None = None,
    mask_size: int = 32,
    progress: bool = True,
    metadata: dict | None = None,
) -> ConceptLibrary:
    """:func:`collect_slots` then :meth:`ConceptLibrary.build`."""
    collection = collect_slots(model, dataset, batch_size, seed, max_images, progress, mask_size)
    meta = {
        "model_type": kind_of(model).name,
        "resolution": int(model.resolution),
        "model_fingerprint": model.fingerprint(),
        **(metadata or {}),
    }
    return ConceptLibrary.build(collection, k, backend, seed, iters, meta)


# ---------------------------------------------------------------------------------------------------- sheet


def member_tiles(library: ConceptLibrary, dataset: SceneDataset, rows: Tensor) -> Tensor:
    """Slot rows [n] -> uint8 [n, 3, R, R]: each slot's image times its mask (upsampled), on grey."""
    if len(rows) == 0:
        return torch.zeros(0, 3, dataset.resolution, dataset.resolution, dtype=torch.uint8)
    check_dataset(library, dataset)
    images = dataset[library.image_index[rows]]["image"]
    r = images.shape[-1]
    masks = F.interpolate(library.masks[rows, None].float() / 255, size=(r, r), mode="bilinear", align_corners=False)
    return to_uint8(images * masks)  # 0 in [-1, 1] is mid grey


def check_dataset(library: ConceptLibrary, dataset: SceneDataset) -> None:
    """DataError unless ``dataset`` can be the one the library was collected from (enough images, same size)."""
    need = int(library.image_index.max()) + 1 if len(library.image_index) else 0
    if len(dataset) < need:
        raise DataError(f"the library's slots come from {need} images but this data has {len(dataset)}")
    res = library.metadata.get("resolution")
    if res is not None and dataset.resolution != res:
        raise DataError(
            f"the library was built on {res}x{res} images, this data is {dataset.resolution}x{dataset.resolution}"
        )


def concept_sheet(
    library: ConceptLibrary,
    dataset: SceneDataset,
    path: str | Path,
    concepts: list[int] | None = None,
    per_concept: int = 8,
    tile_size: int | None = 64,
) -> Path:
    """A PNG with one row per concept (default: all): its id and size, then the masked image regions of its
    ``per_concept`` nearest members (image * mask on grey), nearest first. Tiles are resized to ``tile_size``
    (None: the image resolution)."""
    from slotlab.visualize import save_png

    concepts = list(range(library.num_concepts)) if concepts is None else [library.check_concept(c) for c in concepts]
    if not concepts:
        raise DataError("no concepts to draw")
    check_dataset(library, dataset)
    side = tile_size or dataset.resolution
    pad, label_w = 2, 76
    sheet = Image.new(
        "RGB", (label_w + per_concept * (side + pad) + pad, len(concepts) * (side + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    sizes = library.sizes
    for row, c in enumerate(concepts):
        y = pad + row * (side + pad)
        draw.text((4, y + 2), f"concept {c}\n{int(sizes[c])} slots", fill=(0, 0, 0))
        tiles = member_tiles(library, dataset, library.nearest_members(c, per_concept))
        for j, tile in enumerate(tiles):
            im = Image.fromarray(tile.permute(1, 2, 0).numpy())
            if im.size != (side, side):
                im = im.resize(
                    (side, side), Image.Resampling.NEAREST if side > im.size[0] else Image.Resampling.BILINEAR
                )
            sheet.paste(im, (label_w + j * (side + pad), y))
    return save_png(sheet, path)
