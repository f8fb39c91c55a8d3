"""Generation protocols for FID: batch shift, shuffled slots, and `slotlab fid` end to end on a tiny LSD model."""

import json

import pytest
import torch

from slotlab.generation import (
    AutoencoderFeatures,
    batch_shift,
    protocol_images,
    shuffle_slots,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batch_shift_takes_slot_i_from_image_b_plus_i():
    b, k = 4, 3
    slots = torch.arange(b)[:, None, None].float().expand(b, k, 2) * 10 + torch.arange(k)[None, :, None]
    shifted = batch_shift(slots)
    for i in range(b):
        for j in range(k):
            assert shifted[i, j, 0].item() == ((i + j) % b) * 10 + j
    assert torch.equal(batch_shift(slots)[:, 0], slots[:, 0])  # slot 0 stays with its own image


def test_shuffle_slots_draws_existing_slots():
    slots = torch.randn(5, 4, 3)
    out = shuffle_slots(slots, torch.Generator().manual_seed(0))
    flat = slots.reshape(-1, 3)
    assert out.shape == slots.shape
    assert all((flat == v).all(1).any() for v in out.reshape(-1, 3))


def test_protocols_and_cli_fid_on_a_tiny_lsd_model(tmp_path, capsys):
    from slotlab.cli.main import main
    from slotlab.data.datasets import SceneDataset
    from slotlab.models.image_autoencoder import (
        ImageAutoencoder,
        ImageAutoencoderConfig,
    )
    from slotlab.models.lsd import LatentSlotDiffusion, LatentSlotDiffusionConfig

    ae = ImageAutoencoder(ImageAutoencoderConfig(resolution=16, block_out_channels=[8, 16], norm_num_groups=4))
    ae.save_pretrained(tmp_path / "ae")
    cfg = LatentSlotDiffusionConfig(resolution=16, latent_size=8, backbone="cnn", backbone_channels=[8, 8],
                                    backbone_strides=[1, 2], num_slots=3, slot_dim=16, mlp_hidden=16,
                                    decoder_channels=[16, 16], decoder_layers_per_block=1, decoder_attention_levels=1,
                                    decoder_heads=2, decoder_norm_groups=8, cross_attention_dim=16,
                                    autoencoder=str(tmp_path / "ae"))
    model = LatentSlotDiffusion(cfg).eval()
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    ds = SceneDataset(images, torch.randint(0, 3, (6, 16, 16), dtype=torch.uint8))
    for protocol in ("reconstruct", "shift", "shuffle"):
        out = protocol_images(model, ds, protocol, 5, batch_size=4, steps=2, autoencoder=ae)
        assert out.shape == (5, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="needs a concept library"):
        protocol_images(model, ds, "compose", 2, steps=2, autoencoder=ae)
    feats = AutoencoderFeatures(ae)(torch.rand(2, 3, 16, 16))
    assert feats.shape == (2, 4 * 4 * 4)

    model.save_pretrained(tmp_path / "lsd")
    from slotlab.data import save_npz

    save_npz(tmp_path / "d.npz", images.permute(0, 2, 3, 1).numpy(), ds.labels.numpy())
    assert main(["fid", "--checkpoint", str(tmp_path / "lsd"), "--data", str(tmp_path / "d.npz"), "--features",
                 "autoencoder", "--num", "6", "--steps", "2", "--out", str(tmp_path / "fid.json")]) == 0
    result = json.loads((tmp_path / "fid.json").read_text())
    assert set(result) >= {"shift", "shuffle", "features"} and result["shift"]["fid"] >= 0
    capsys.readouterr()
    missing = tmp_path / "nope.pth"
    assert main(["fid", "--checkpoint", str(tmp_path / "lsd"), "--data", str(tmp_path / "d.npz"), "--inception",
                 str(missing), "--num", "2", "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slotlab: error:") and "nope.pth" in err and len(err.splitlines()) == 1


def test_compose_protocol_with_concept_groups(tmp_path):
    from slotlab.concepts import build_library
    from slotlab.data.datasets import SceneDataset
    from slotlab.models.image_autoencoder import load_image_autoencoder
    from tiny import tiny_lsd

    model = tiny_lsd(tmp_path)
    ds = SceneDataset(torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8))
    library = build_library(model, ds, k=3, seed=0)
    ae = load_image_autoencoder(model.config.autoencoder)
    out = protocol_images(model, ds, "compose", 4, batch_size=2, steps=2, library=library, autoencoder=ae,
                          concepts=[[0, 1], 2])
    assert out.shape == (4, 3, 16, 16)


def test_recompose_keeps_every_slots_concept(tmp_path):
    from slotlab.concepts import build_library
    from slotlab.data.datasets import SceneDataset
    from slotlab.editing import encode_slots
    from tiny import tiny_lsd

    model = tiny_lsd(tmp_path)
    ds = SceneDataset(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8))
    library = build_library(model, ds, k=3, seed=0, progress=False)
    slots = encode_slots(model, ds[torch.arange(4)]["image"], torch.Generator().manual_seed(0)).slots
    concepts = library.nearest_concepts(slots)
    assert concepts.shape == (4, 3)
    # a library slot's nearest concept is its own (k-means has converged to a fixed point or stopped near one)
    own = library.nearest_concepts(library.slots)
    assert (own == library.labels).float().mean() > 0.9
    rows = library.draw_members(concepts, torch.Generator().manual_seed(1))
    assert rows.shape == (4, 3)
    assert torch.equal(library.labels[rows], concepts)  # every drawn member belongs to the slot's concept
    top = library.draw_members(concepts, torch.Generator().manual_seed(1), top=1)
    nearest = torch.stack([library.nearest_members(int(c), 1)[0] for c in concepts.flatten()]).view(4, 3)
    assert torch.equal(top, nearest)

    from slotlab.models.image_autoencoder import load_image_autoencoder

    ae = load_image_autoencoder(model.config.autoencoder)
    out = protocol_images(model, ds, "recompose", 5, batch_size=4, steps=2, library=library, autoencoder=ae)
    assert out.shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="needs a concept library"):
        protocol_images(model, ds, "recompose", 2, steps=2, autoencoder=ae)


def test_cli_fid_protocol_errors(tmp_path, capsys):
    from slotlab.cli.main import main
    from slotlab.data import save_npz
    from tiny import tiny_lsd

    model = tiny_lsd(tmp_path)
    model.save_pretrained(tmp_path / "lsd")
    save_npz(tmp_path / "d.npz", torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8).numpy())
    base = ["fid", "--checkpoint", str(tmp_path / "lsd"), "--data", str(tmp_path / "d.npz"), "--features",
            "autoencoder", "--num", "2", "--steps", "2"]
    for protocols, message in ((["recompose"], "needs --library"), (["bogus"], "unknown protocol 'bogus'")):
        assert main([*base, "--protocols", *protocols]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("slotlab: error:") and message in err and len(err.splitlines()) == 1
