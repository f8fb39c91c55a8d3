"""Visual concept library: K-means (both backends), slot collection for both model types, save/load, the concept
sheet, and ``slotlab concepts build|show`` end to end on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from slotlab.cli.main import main
from slotlab.concepts import (
    ConceptLibrary,
    SlotCollection,
    collect_slots,
    concept_sheet,
    kmeans,
)
from slotlab.data.datasets import SceneDataset
from slotlab.errors import ConfigError, DataError
from tiny import tiny_autoencoder, tiny_lsd

pytestmark = pytest.mark.usefixtures("one_thread")






def random_dataset(n: int = 10, r: int = 16, seed: int = 0) -> SceneDataset:
    g = torch.Generator().manual_seed(seed)
    return SceneDataset(torch.randint(0, 256, (n, 3, r, r), dtype=torch.uint8, generator=g))


def blobs(per: int = 100, k: int = 5, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 10
    y = torch.arange(k).repeat_interleave(per)
    return centres[y] + 0.1 * torch.randn(k * per, d, generator=g), y


def run_cli(argv) -> int:
    """The `slotlab` command, with any path-like arguments as strings."""
    return main([str(a) for a in argv])


# ------------------------------------------------------------------------------------------------- k-means


@pytest.mark.parametrize("backend", ["torch", "sklearn", "sklearn-minibatch"])
def test_kmeans_recovers_separated_blobs(backend):
    x, y = blobs()
    r = kmeans(x, 5, seed=0, backend=backend)
    assert r.centroids.shape == (5, 8) and r.labels.shape == (500,) and r.labels.dtype == torch.long
    assert adjusted_rand_score(y.numpy(), r.labels.numpy()) == 1.0
    # every centroid is its blob's mean; labels are the nearest centroids; inertia is their squared distance
    for c in range(5 if backend != "sklearn-minibatch" else 0):  # mini-batch centroids are not exact means
        torch.testing.assert_close(r.centroids[c], x[r.labels == c].mean(0), atol=1e-3, rtol=1e-4)
    assert torch.equal(torch.cdist(x, r.centroids).argmin(1), r.labels)
    assert r.inertia == pytest.approx(float((x - r.centroids[r.labels]).square().sum()), rel=1e-4)


def test_kmeans_reseeds_empty_clusters():
    x, y = blobs(per=50, k=3)
    init = torch.stack([x[0], x[60], torch.full((8,), 1e4)])  # the third centre attracts nothing
    r = kmeans(x, 3, init=init)
    assert torch.bincount(r.labels, minlength=3).min() > 0
    assert adjusted_rand_score(y.numpy(), r.labels.numpy()) == 1.0
    # fewer distinct points than clusters: no crash, zero inertia, valid labels
    few = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]).repeat(4, 1)
    r = kmeans(few, 5)
    assert r.inertia == 0.0 and r.labels.min() >= 0 and r.labels.max() < 5
    assert torch.equal(r.centroids[r.labels], few)


def test_kmeans_is_deterministic_given_the_seed():
    x = torch.randn(600, 6, generator=torch.Generator().manual_seed(3))  # no clear clusters: seeds matter
    for backend in ("torch", "sklearn"):
        a, b = kmeans(x, 8, seed=1, backend=backend), kmeans(x, 8, seed=1, backend=backend)
        assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    assert not torch.equal(kmeans(x, 8, seed=1).centroids, kmeans(x, 8, seed=2).centroids)


def test_kmeans_errors():
    x = torch.randn(4, 2)
    with pytest.raises(DataError, match="cannot make 5 clusters of 4 points"):
        kmeans(x, 5)
    with pytest.raises(ConfigError, match="unknown k-means backend"):
        kmeans(x, 2, backend="faiss")
    with pytest.raises(DataError, match="init must be"):
        kmeans(x, 2, init=torch.zeros(3, 2))


# ------------------------------------------------------------------------------------------------ collect


def test_collect_slots_autoencoder():
    model, data = tiny_autoencoder(), random_dataset(10)
    col = collect_slots(model, data, batch_size=4, seed=5, progress=False, mask_size=8)
    assert isinstance(col, SlotCollection) and len(col) == 30 and col.num_images == 10
    assert col.slots.shape == (30, 16) and col.slots.dtype == torch.float32
    assert col.masks.shape == (30, 8, 8) and col.masks.dtype == torch.uint8 and col.mask_source == "alpha"
    assert torch.equal(col.image_index, torch.arange(10).repeat_interleave(3))
    assert torch.equal(col.slot_index, torch.arange(3).repeat(10))
    per_image = col.masks.view(10, 3, 8, 8).int().sum(1)  # soft masks sum to 1 over the slots (255 +- rounding)
    assert (per_image - 255).abs().max() <= 2
    torch.testing.assert_close(col.area.view(10, 3).sum(1), torch.ones(10))
    # the first batch's slots are those of encoding it with the same seed
    enc = model.encode(data[torch.arange(4)]["image"], generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(col.slots[:12], enc.slots.reshape(12, 16))
    again = collect_slots(model, data, batch_size=4, seed=5, progress=False, mask_size=8)
    assert torch.equal(col.slots, again.slots) and torch.equal(col.masks, again.masks)
    assert len(collect_slots(model, data, max_images=5, progress=False)) == 15
    attn = collect_slots(model, data, max_images=2, progress=False, mask_source="attention")
    assert attn.mask_source == "attention" and attn.masks.shape == (6, 32, 32)
    with pytest.raises(DataError, match="the model takes 16x16"):
        collect_slots(model, random_dataset(2, r=8), progress=False)


def test_collect_slots_lsd(tmp_path):
    model, data = tiny_lsd(tmp_path), random_dataset(5)
    col = collect_slots(model, data, batch_size=2, progress=False, mask_size=16)
    assert col.slots.shape == (15, 16) and col.masks.shape == (15, 16, 16) and col.mask_source == "attention"
    assert (col.masks.view(5, 3, 16, 16).int().sum(1) - 255).abs().max() <= 2
    with pytest.raises(Exception, match="alpha masks need an object discovery model"):
        collect_slots(model, data, progress=False, mask_source="alpha")


# ------------------------------------------------------------------------------------------------ library


def make_library(model=None, data=None, k: int = 4) -> ConceptLibrary:
    model, data = model or tiny_autoencoder(), data or random_dataset(10)
    col = collect_slots(model, data, batch_size=5, progress=False, mask_size=8)
    return ConceptLibrary.build(col, k, seed=0, metadata={"model": "m", "data": None, "resolution": 16})


def test_library_members_save_load(tmp_path):
    lib = make_library()
    assert lib.num_concepts == 4 and int(lib.sizes.sum()) == 30
    assert lib.metadata["k"] == 4 and lib.metadata["backend"] == "torch" and lib.metadata["model"] == "m"
    for c in range(4):
        m = lib.members(c)
        assert (lib.labels[m] == c).all() and len(m) == lib.sizes[c]
        assert (lib.distances[m].diff() >= 0).all()  # nearest first
        torch.testing.assert_close(lib.distances[m], (lib.slots[m] - lib.centroids[c]).square().sum(1))
        assert torch.equal(lib.nearest_members(c, 2), m[:2])
    path = lib.save(tmp_path / "lib.safetensors")
    again = ConceptLibrary.load(path)
    assert again.metadata == lib.metadata
    for name, t in lib.tensors().items():
        assert torch.equal(t, getattr(again, name)), name
    assert torch.equal(again.order, lib.order) and torch.equal(again.offsets, lib.offsets)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="not a slotlab concept library"):
        ConceptLibrary.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(DataError, match="not a readable"):
        ConceptLibrary.load(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="not found"):
        ConceptLibrary.load(tmp_path / "missing.safetensors")
    with pytest.raises(DataError, match="concept 4 does not exist"):
        lib.members(4)


def test_concept_sheet_png(tmp_path):
    data = random_dataset(10)
    lib = make_library(data=data)
    path = concept_sheet(lib, data, tmp_path / "sheet.png", concepts=[0, 2], per_concept=3, tile_size=20)
    im = Image.open(path)
    assert im.size == (76 + 3 * 22 + 2, 2 * 22 + 2)
    px = np.asarray(im)
    assert px[2:22, 76:96].std() > 0  # a member tile was drawn
    with pytest.raises(DataError, match="come from 10 images"):
        concept_sheet(lib, random_dataset(4), tmp_path / "x.png")


# ----------------------------------------------------------------------------------------------------- CLI


def test_cli_concepts_build_and_show(tmp_path, capsys):
    from slotlab.checkpoints import save_trained
    from slotlab.config import DataConfig, ExperimentConfig

    model = tiny_autoencoder()
    exp = ExperimentConfig(task="object_discovery", model=model.config, data=DataConfig(
        dataset="tetrominoes", train_size=8, val_size=6, crop=[1, 1, 32, 32], resolution=16))
    save_trained(model, exp, tmp_path / "model")
    lib = tmp_path / "lib.safetensors"
    assert run_cli(["concepts", "build", "--checkpoint", tmp_path / "model", "--k", 4, "--out", lib,
                    "--no-progress", "--mask-size", 8]) == 0
    assert "18 slots of 6 images -> 4 concepts" in capsys.readouterr().out
    library = ConceptLibrary.load(lib)
    meta = library.metadata
    assert meta["split"] == "val" and meta["data"] is None and meta["data_config"]["dataset"] == "tetrominoes"
    assert meta["model_type"] == "object_discovery" and meta["resolution"] == 16
    # show re-opens the procedural validation images from the recorded data config
    assert run_cli(["concepts", "show", "--library", lib, "--out", tmp_path / "sheet.png", "--per-concept", 2]) == 0
    assert Image.open(tmp_path / "sheet.png").size[1] == 4 * 66 + 2
    assert run_cli(["concepts", "build", "--checkpoint", tmp_path / "model", "--k", 3, "--out",
                    tmp_path / "train.safetensors", "--split", "train", "--backend", "sklearn", "--no-progress"]) == 0
    assert ConceptLibrary.load(tmp_path / "train.safetensors").metadata["num_images"] == 8
    capsys.readouterr()
    # errors: one line, exit code 2
    assert run_cli(["concepts", "show", "--library", lib, "--out", tmp_path / "x.png", "--concepts", 99]) == 2
    assert "concept 99 does not exist" in capsys.readouterr().err
    assert run_cli(["concepts", "build", "--checkpoint", tmp_path / "model", "--k", 100, "--out",
                    tmp_path / "y.safetensors", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot make 100 clusters of 18 points" in err and len(err.strip().splitlines()) == 1
    assert run_cli(["concepts", "show", "--library", tmp_path / "none.safetensors", "--out", tmp_path / "z.png"]) == 2
    assert "concept library not found" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.safetensors").exists()
