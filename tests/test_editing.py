"""Slot editing: pick/remove/replace/insert, decoding any set of slots with both model types, compose from a
concept library, and ``slotlab compose`` / ``slotlab edit`` end to end on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from slotlab.cli.main import main
from slotlab.concepts import ConceptLibrary, collect_slots, compose
from slotlab.data.datasets import SceneDataset
from slotlab.editing import (
    decode_slots,
    edit_image,
    encode_slots,
    grow_region,
    insert_slot,
    load_autoencoder_of,
    pick_slot,
    remove_slot,
    replace_slot,
    slot_segment,
)
from slotlab.errors import DataError
from slotlab.models import Sampling
from slotlab.models.image_autoencoder import ImageAutoencoder, ImageAutoencoderConfig
from tiny import tiny_autoencoder, tiny_lsd

pytestmark = pytest.mark.usefixtures("one_thread")


def random_images(n: int = 6, r: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 [n, r, r, 3]"""
    return np.random.default_rng(seed).integers(0, 256, (n, r, r, 3), dtype=np.uint8)


def dataset_of(images: np.ndarray) -> SceneDataset:
    return SceneDataset(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())


def run_cli(argv) -> int:
    """The `slotlab` command, with any path-like arguments as strings."""
    return main([str(a) for a in argv])


# ------------------------------------------------------------------------------------------------- slot ops


def test_remove_replace_insert():
    s = torch.arange(12.0).view(4, 3)  # K = 4 slots of width 3
    o = -torch.arange(6.0).view(2, 3) - 1
    assert torch.equal(remove_slot(s, 1), s[[0, 2, 3]])
    assert torch.equal(remove_slot(s, -1), s[:3])
    r = replace_slot(s, 2, o, 1)
    assert torch.equal(r[2], o[1]) and torch.equal(r[[0, 1, 3]], s[[0, 1, 3]])
    assert torch.equal(s[2], torch.arange(6.0, 9))  # the input is left alone
    ins = insert_slot(s, o[0])
    assert ins.shape == (5, 3) and torch.equal(ins[:4], s) and torch.equal(ins[4], o[0])
    assert torch.equal(insert_slot(s, o[0], position=0)[0], o[0])
    # batched: [B, K, D]
    b = torch.randn(2, 4, 3)
    ob = torch.randn(2, 5, 3)
    assert remove_slot(b, 0).shape == (2, 3, 3) and torch.equal(remove_slot(b, 0), b[:, 1:])
    rb = replace_slot(b, 3, ob, 4)
    assert torch.equal(rb[:, 3], ob[:, 4]) and torch.equal(rb[:, :3], b[:, :3])
    assert torch.equal(replace_slot(b, 0, o, 0)[:, 0], o[0].expand(2, 3))  # a single source broadcasts
    ib = insert_slot(b, ob[:, 2])
    assert ib.shape == (2, 5, 3) and torch.equal(ib[:, 4], ob[:, 2])
    assert torch.equal(insert_slot(b, o[1])[:, 4], o[1].expand(2, 3))
    with pytest.raises(DataError, match="slot 4 does not exist"):
        remove_slot(s, 4)
    with pytest.raises(DataError, match="only slot"):
        remove_slot(s[:1], 0)
    with pytest.raises(DataError, match="widths differ"):
        insert_slot(s, torch.zeros(5))
    with pytest.raises(DataError, match="source slot 2 does not exist"):
        replace_slot(s, 0, o, 2)


def test_pick_slot_by_index_and_pixel():
    masks = torch.zeros(3, 4, 4)
    masks[0] = 1
    masks[0, :2, :2], masks[1, :2, :2] = 0, 1  # slot 1: top-left quarter
    masks[0, 3, 3], masks[2, 3, 3] = 0, 1  # slot 2: bottom-right pixel
    assert pick_slot(masks, pixel=(0, 1)) == 1 and pick_slot(masks, pixel=(3, 3)) == 2
    assert pick_slot(masks, pixel=(2, 0)) == 0
    assert pick_slot(masks[:, None], pixel=(1, 1)) == 1  # alpha masks [K, 1, H, W]
    assert pick_slot(masks, pixel=(7, 7), size=8) == 2 and pick_slot(masks, pixel=(3, 3), size=8) == 1
    attn = masks.flatten(1).T  # attention [N, K]
    assert pick_slot(attn, pixel=(0, 0)) == 1 and pick_slot(attn, pixel=(15, 15), size=16) == 2
    assert pick_slot(masks, index=2) == 2 and pick_slot(masks, index=-1) == 2
    with pytest.raises(DataError, match="outside the 4x4 image"):
        pick_slot(masks, pixel=(4, 0))
    with pytest.raises(DataError, match="slot 3 does not exist"):
        pick_slot(masks, index=3)
    with pytest.raises(ValueError, match="exactly one"):
        pick_slot(masks)


# --------------------------------------------------------------------------------------------------- decode


def test_decode_slots_autoencoder_any_number_of_slots():
    model = tiny_autoencoder()
    images = dataset_of(random_images(2))[torch.arange(2)]["image"]
    enc = encode_slots(model, images, torch.Generator().manual_seed(0))
    assert enc.masks.shape == (2, 3, 16, 16) and enc.source == "alpha"
    out = decode_slots(model, enc.slots)
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(out, model.decode(enc.slots).reconstruction.clamp(-1, 1))
    assert decode_slots(model, remove_slot(enc.slots, 0)).shape == (2, 3, 16, 16)
    assert decode_slots(model, torch.randn(5, 16)).shape == (1, 3, 16, 16)  # [K, D]: one image of 5 slots
    assert load_autoencoder_of(model) is None
    with pytest.raises(DataError, match="width 8"):
        decode_slots(model, torch.randn(1, 2, 8))


def test_decode_slots_lsd(tmp_path):
    model = tiny_lsd(tmp_path)
    slots = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(0))  # 4 slots: the model was built for 3
    out = decode_slots(model, slots, steps=2, seed=3)
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    ae = load_autoencoder_of(model)
    torch.testing.assert_close(decode_slots(model, slots, steps=2, seed=3, autoencoder=ae), out)  # seeded
    assert not torch.allclose(decode_slots(model, slots, steps=2, seed=4, autoencoder=ae), out)
    assert decode_slots(model, slots[0, :1], steps=2, sampler="ddim", autoencoder=ae).shape == (1, 3, 16, 16)


def test_a_slot_index_names_the_same_slot_in_every_edit(tmp_path):
    """Each image is encoded alone with the edit's seed: slot j of the source image in a swap or an insertion is the
    slot j of that image encoded by itself (what a remove on it, or `slotlab app`, shows), whichever image it is
    paired with."""
    model = tiny_lsd(tmp_path)
    a, b, c = (torch.from_numpy(im).permute(2, 0, 1).float() / 127.5 - 1 for im in random_images(3))
    alone = {name: encode_slots(model, im[None], torch.Generator().manual_seed(5)) for name, im in zip("abc", (a, b, c))}
    sampling = Sampling(steps=1)
    swap = edit_image(model, a, "replace", slot=0, source=b, source_slot=1, sampling=sampling, seed=5)
    torch.testing.assert_close(swap.slots, alone["a"].slots[0])
    torch.testing.assert_close(swap.edited[0], alone["b"].slots[0, 1])
    torch.testing.assert_close(swap.masks[1], alone["b"].masks[0])
    insert = edit_image(model, c, "insert", source=b, source_slot=1, sampling=sampling, seed=5)
    torch.testing.assert_close(insert.edited[-1], alone["b"].slots[0, 1])  # the same slot of b, paired with c
    remove = edit_image(model, b, "remove", slot=1, sampling=sampling, seed=5)
    torch.testing.assert_close(remove.slots, alone["b"].slots[0])


def test_compose_from_library(tmp_path):
    model = tiny_lsd(tmp_path)
    col = collect_slots(model, dataset_of(random_images(6)), progress=False, mask_size=8)
    lib = ConceptLibrary.build(col, 4)
    ae = load_autoencoder_of(model)
    images, prompt = compose(model, lib, [0, [1, 2]], n=3, seed=1, steps=2, autoencoder=ae)
    assert images.shape == (3, 3, 16, 16) and len(prompt["scenes"]) == 3
    for scene in prompt["scenes"]:
        assert scene["concepts"][0] == 0 and scene["concepts"][1] in (1, 2) and len(scene["members"]) == 2
        for c, (img, slot) in zip(scene["concepts"], scene["members"]):
            row = ((lib.image_index == img) & (lib.slot_index == slot)).nonzero()[0, 0]
            assert lib.labels[row] == c  # the member belongs to its concept
    again, prompt2 = compose(model, lib, [0, [1, 2]], n=3, seed=1, steps=2, autoencoder=ae)
    assert prompt2 == prompt and torch.allclose(again, images)
    _, p = compose(model, lib, None, n=2, seed=0, num_concepts=3, top=1, steps=1, autoencoder=ae)
    for scene in p["scenes"]:
        assert len(set(scene["concepts"])) == 3
        for c, (img, slot) in zip(scene["concepts"], scene["members"]):  # top=1: the nearest member
            row = int(lib.nearest_members(c, 1)[0])
            assert (int(lib.image_index[row]), int(lib.slot_index[row])) == (img, slot)
    with pytest.raises(DataError, match="concept 9 does not exist"):
        compose(model, lib, [9], n=1, autoencoder=ae)
    with pytest.raises(DataError, match="cannot draw 5 distinct concepts"):
        compose(model, lib, None, n=1, num_concepts=5, autoencoder=ae)


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_compose_and_edit_lsd(tmp_path, capsys):
    from slotlab.data import save_npz

    tiny_lsd(tmp_path).save_pretrained(tmp_path / "lsd")
    save_npz(tmp_path / "data.npz", random_images(6))
    common = ["--checkpoint", tmp_path / "lsd", "--data", tmp_path / "data.npz"]
    lib = tmp_path / "lib.safetensors"
    assert run_cli(["concepts", "build", *common, "--k", 3, "--out", lib, "--no-progress", "--mask-size", 8]) == 0
    assert ConceptLibrary.load(lib).metadata["model_type"] == "lsd"
    out = tmp_path / "gen" / "grid.png"
    assert run_cli(["compose", "--checkpoint", tmp_path / "lsd", "--library", lib, "--out", out, "--concepts", "0",
                    "1,2", "--num", 2, "--steps", 2]) == 0
    prompt = json.loads((tmp_path / "gen" / "grid.json").read_text())
    assert prompt["concepts"] == [0, [1, 2]] and len(prompt["scenes"]) == 2 and prompt["steps"] == 2
    # composed | slot 0 | slot 1 columns, two rows, scale 16
    assert Image.open(out).size == (2 + 3 * (256 + 2), 14 + 2 + 2 * (256 + 2))
    # the model defaults to the library's; random concepts
    assert run_cli(["compose", "--library", lib, "--out", tmp_path / "g2.png", "--num-concepts", 2, "--num", 1,
                    "--steps", 1]) == 0
    for op in (["--remove-slot", 1], ["--remove-at", 3, 4], ["--replace-slot", 0, "--from-image", 2, "--from-slot", 1],
               ["--insert-from-image", 3, "--insert-slot", 0]):
        png = tmp_path / "edit.png"
        assert run_cli(["edit", *common, "--image", 1, "--out", png, "--steps", 2, *op]) == 0, op
        assert png.is_file()
        png.unlink()
    assert "inserted slot 0 of image 3" in capsys.readouterr().out
    # errors: one line, exit code 2
    assert run_cli(["edit", *common, "--image", 1, "--out", tmp_path / "e.png", "--replace-slot", 0]) == 2
    assert "--replace-slot needs --from-image and --from-slot" in capsys.readouterr().err
    assert run_cli(["edit", *common, "--image", 6, "--out", tmp_path / "e.png", "--remove-slot", 0]) == 2
    assert "image 6 does not exist" in capsys.readouterr().err
    assert run_cli(["edit", *common, "--image", 0, "--out", tmp_path / "e.png", "--remove-slot", 3]) == 2
    assert "slot 3 does not exist" in capsys.readouterr().err
    assert run_cli(["compose", "--library", lib, "--out", tmp_path / "e.png", "--concepts", "x"]) == 2
    assert "'x' is not a concept id" in capsys.readouterr().err
    assert run_cli(["edit", "--checkpoint", tmp_path / "lsd", "--image", 0, "--out", tmp_path / "e.png",
                    "--remove-slot", 0]) == 2
    assert "pass --data" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # two operations at once
        run_cli(["edit", *common, "--image", 0, "--out", tmp_path / "e.png", "--remove-slot", 0, "--remove-at", 1, 1])
    assert not (tmp_path / "e.png").exists()


def test_cli_edit_autoencoder(tmp_path, capsys):
    from slotlab.data import save_npz

    tiny_autoencoder().save_pretrained(tmp_path / "m")
    save_npz(tmp_path / "data.npz", random_images(4))
    out = tmp_path / "ba.png"
    assert run_cli(["edit", "--checkpoint", tmp_path / "m", "--data", tmp_path / "data.npz", "--image", 0, "--out", out,
                    "--replace-slot", 1, "--from-image", 3, "--from-slot", 2]) == 0
    # input | slot 1 | reconstruction | edited | image 3 | its slot 2, at scale 16
    assert Image.open(out).size == (2 + 6 * (256 + 2), 14 + 2 + 256 + 2)
    ae = ImageAutoencoder(ImageAutoencoderConfig(resolution=16, block_out_channels=[8, 16], norm_num_groups=4))
    ae.save_pretrained(tmp_path / "ae")
    assert run_cli(["edit", "--checkpoint", tmp_path / "ae", "--data", tmp_path / "data.npz", "--image", 0, "--out",
                    out, "--remove-slot", 0]) == 2
    assert "only with a Latent Slot Diffusion or an object discovery" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ keep the rest


def test_slot_segment_and_grow_region():
    masks = torch.zeros(3, 6, 6)
    masks[0] = 1
    masks[0, 2:4, 2:4], masks[1, 2:4, 2:4] = 0, 1  # slot 1: the 2x2 centre
    seg = slot_segment(masks, 1)
    assert seg.dtype == torch.bool and int(seg.sum()) == 4 and seg[2:4, 2:4].all()
    assert torch.equal(slot_segment(masks[None], -2)[0], seg)  # batched, negative index
    assert not slot_segment(masks, 2).any()
    grown = grow_region(seg[None], 1)
    assert int(grown.sum()) == 16 and grown[0, 1:5, 1:5].all()  # a square dilation: 2x2 -> 4x4
    assert torch.equal(grow_region(seg[None], 0), seg[None])
    assert grow_region(seg[None], 3).all()


def test_decode_slots_keep_rest_autoencoder():
    model = tiny_autoencoder()
    images = dataset_of(random_images(2))[torch.arange(2)]["image"]
    enc = encode_slots(model, images, torch.Generator().manual_seed(0))
    edited = remove_slot(enc.slots, 0)
    region = torch.zeros(2, 16, 16, dtype=torch.bool)
    region[:, 4:10, 3:12] = True
    kept = decode_slots(model, edited, keep_from=images, region=region)
    free = decode_slots(model, edited)
    assert torch.equal(kept[:, :, ~region[0]], images[:, :, ~region[0]])  # the rest is the input, exactly
    assert torch.equal(kept[:, :, region[0]], free[:, :, region[0]])  # the region is the decoder's
    with pytest.raises(ValueError, match="both"):
        decode_slots(model, edited, keep_from=images)
    with pytest.raises(DataError, match="must be"):
        decode_slots(model, edited, keep_from=images[:1], region=region[:1])


def test_decode_slots_keep_rest_lsd(tmp_path):
    model = tiny_lsd(tmp_path)
    ae = load_autoencoder_of(model)
    images = dataset_of(random_images(2))[torch.arange(2)]["image"]
    slots = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    common = dict(steps=3, seed=1, autoencoder=ae)
    nothing = torch.zeros(2, 16, 16, dtype=torch.bool)
    # nothing to decode: the input comes back, pixel for pixel, whatever the slots
    assert torch.equal(decode_slots(model, slots, keep_from=images, region=nothing, **common), images)
    # everything to decode: the same as free sampling
    torch.testing.assert_close(decode_slots(model, slots, keep_from=images, region=~nothing, **common),
                               decode_slots(model, slots, **common))
    # part of it: the kept latent cells are the input's, the others are generated
    region = nothing.clone()
    region[:, :6, :6] = True  # touches latent cells [:3, :3] of the 8x8 latents
    g = torch.Generator().manual_seed(1)
    known = ae.encode(images, sample=False)
    keep = 1 - F.adaptive_max_pool2d(region[:, None].float(), known.shape[-2:])
    assert int((keep == 0).sum()) == 2 * 9
    latents = model.generate(slots, steps=3, generator=g, known=known, keep=keep)
    assert torch.equal(latents[:, :, 3:], known[:, :, 3:]) and torch.equal(latents[:, :, :, 3:], known[:, :, :, 3:])
    assert not torch.allclose(latents[:, :, :3, :3], known[:, :, :3, :3])
    # and the image: decoded inside the generated cells (pixels [:6, :6]), the input's pixels outside them
    image = decode_slots(model, slots, keep_from=images, region=region, **common)
    torch.testing.assert_close(image[:, :, :6, :6], ae.decode(latents, clamp=True)[:, :, :6, :6])
    assert torch.equal(image[:, :, 6:], images[:, :, 6:]) and torch.equal(image[:, :, :, 6:], images[:, :, :, 6:])
    with pytest.raises(ValueError, match="both"):
        model.generate(slots, steps=1, known=known)


def test_cli_edit_keep_rest(tmp_path, capsys):
    from slotlab.data import save_npz

    tiny_autoencoder().save_pretrained(tmp_path / "m")
    save_npz(tmp_path / "data.npz", random_images(4))
    out = tmp_path / "kept.png"
    common = ["--checkpoint", tmp_path / "m", "--data", tmp_path / "data.npz", "--image", 0, "--out", out]
    assert run_cli(["edit", *common, "--remove-slot", 1, "--keep-rest", "--grow", 1]) == 0
    printed = capsys.readouterr().out
    assert "PSNR to the input outside the edited region" in printed
    kept_db = float(printed.split("rest kept ")[1].split(" dB")[0])
    assert kept_db > 100  # the autoencoder pastes its region into the input: the rest is exact (clamped PSNR)
    # input | slot 1 | reconstruction | edited | rest kept, at scale 16
    assert Image.open(out).size == (2 + 5 * (256 + 2), 14 + 2 + 256 + 2)
    assert run_cli(["edit", *common, "--remove-slot", 1, "--keep-rest", "--grow", -1]) == 2
    assert "--grow must be >= 0" in capsys.readouterr().err
