"""Tests for the Slot Attention autoencoder and its parts (encoder, broadcast decoder, position grid)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from slotlab.models import SlotAutoencoder
from slotlab.models.object_discovery import SlotAutoencoderConfig
from slotlab.modules import (
    CNNEncoder,
    SoftPositionEmbedding,
    SpatialBroadcastDecoder,
    build_grid,
)
from slotlab.modules.decoders import UpsamplingConv

R, B, K, D = 16, 2, 3, 16


def full_res_config(**kw) -> SlotAutoencoderConfig:
    """The Tetrominoes / Multi-dSprites form: broadcast at full resolution, stride-1 convs."""
    base = dict(resolution=R, num_slots=K, num_iterations=2, slot_dim=D, mlp_hidden=16,
                encoder_channels=[8, 8], decoder_broadcast=R, decoder_channels=[8, 8], decoder_strides=[1, 1])
    base.update(kw)
    return SlotAutoencoderConfig(**base)


def upsampling_config(**kw) -> SlotAutoencoderConfig:
    """The CLEVR form: broadcast at 8x8, a stride-2 transposed conv up to 16, then a stride-1 conv."""
    base = dict(resolution=R, num_slots=K, num_iterations=2, slot_dim=D, mlp_hidden=16,
                encoder_channels=[8, 8], decoder_broadcast=8, decoder_channels=[8, 8], decoder_strides=[2, 1])
    base.update(kw)
    return SlotAutoencoderConfig(**base)


def model_of(cfg: SlotAutoencoderConfig, seed: int = 0) -> SlotAutoencoder:
    torch.manual_seed(seed)
    return SlotAutoencoder(cfg).eval()


def images(seed: int = 0, res: int = R) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, res, res, generator=g) * 2 - 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("make_cfg", [full_res_config, upsampling_config], ids=["full-res", "upsampling"])
def test_forward_shapes_masks_and_composition(make_cfg):
    cfg = make_cfg()
    model = model_of(cfg)
    if cfg.decoder_broadcast == 8:
        assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.decoder.cnn)
    else:
        assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.decoder.cnn)
    x = images()
    with torch.no_grad():
        out = model(x, generator=gen())
    assert out.reconstruction.shape == (B, 3, R, R)
    assert out.rgb.shape == (B, K, 3, R, R)
    assert out.masks.shape == (B, K, 1, R, R)
    assert out.slots.shape == (B, K, D)
    assert out.attn.shape == (B, 2, R * R, K)  # no encoder stride: one input per pixel
    assert model.feature_size == R
    # alpha masks are a softmax across slots
    torch.testing.assert_close(out.masks.sum(1), torch.ones(B, 1, R, R))
    assert (out.masks >= 0).all()
    # the reconstruction is the alpha-weighted mixture of the slots' pictures
    torch.testing.assert_close(out.reconstruction, (out.rgb * out.masks).sum(1))


def test_loss_is_mse_to_the_input():
    model = model_of(full_res_config())
    x = images()
    out = model(x, generator=gen())
    assert out.loss.ndim == 0
    torch.testing.assert_close(out.loss, F.mse_loss(out.reconstruction, x))
    torch.testing.assert_close(out.loss, ((out.reconstruction - x) ** 2).mean())
    assert model(x, generator=gen(), return_loss=False).loss is None
    # it is a training loss: gradients reach the encoder, Slot Attention and the decoder
    out.loss.backward()
    for part in (model.encoder, model.slot_attention, model.decoder):
        assert sum(p.grad.abs().sum() for p in part.parameters() if p.grad is not None) > 0


def test_encoder_stride_reduces_the_number_of_inputs():
    model = model_of(full_res_config(encoder_strides=[2, 1]))
    assert model.feature_size == R // 2
    out = model(images(), generator=gen())
    assert out.attn.shape == (B, 2, (R // 2) ** 2, K)


def test_num_slots_and_iterations_at_call_time():
    model = model_of(full_res_config())
    with torch.no_grad():
        out = model(images(), num_slots=5, num_iterations=1, generator=gen())
    assert out.masks.shape == (B, 5, 1, R, R)
    assert out.attn.shape == (B, 1, R * R, 5)


@pytest.mark.parametrize("frame", ["none", "translation"])
def test_eval_iterations_from_the_config_in_eval_mode(frame, tmp_path):
    model = model_of(full_res_config(eval_iterations=4, slot_frame=frame))
    with torch.no_grad():
        for mode, t in ((False, 4), (True, 2)):  # eval mode: eval_iterations; training: num_iterations
            model.train(mode)
            out, told = model(images(), generator=gen()), model(images(), num_iterations=t, generator=gen())
            assert torch.equal(out.slots, told.slots) and out.attn.shape == told.attn.shape
    model.save_pretrained(tmp_path)
    assert SlotAutoencoder.from_pretrained(tmp_path).slot_attention.eval_iterations == 4


def test_decoder_is_a_permutation_equivariant_set_decoder():
    model = model_of(upsampling_config())
    slots = torch.randn(B, K, D, generator=gen(3))
    perm = torch.tensor([1, 2, 0])
    with torch.no_grad():
        a = model.decode(slots)
        b = model.decode(slots[:, perm])
    torch.testing.assert_close(b.reconstruction, a.reconstruction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.alpha, a.alpha[:, perm], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(b.rgb, a.rgb[:, perm], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("broadcast, channels, strides, kernel, freqs", [
    (8, [8, 8], [1, 1], 5, 0),      # full resolution, "same" convs (Tetrominoes)
    (2, [8, 8, 8], [2, 2, 1], 5, 0),  # upsampling by transposed convs (CLEVR6)
    (8, [8], [1], 3, 0),
    (8, [8], [1], 1, 2),            # a per-pixel MLP over slot and Fourier features
])
def test_first_layer_shortcut_equals_running_the_cnn_on_broadcast_slots(broadcast, channels, strides, kernel, freqs):
    torch.manual_seed(0)
    resolution = broadcast * 2 ** strides.count(2)
    dec = SpatialBroadcastDecoder(D, resolution, broadcast, channels, strides, kernel, pos_frequencies=freqs).double()
    slots = torch.randn(B, K, D, dtype=torch.float64, requires_grad=True)
    out = dec(slots)
    # the plain way: tile every slot over the grid, add the embedding, run the whole CNN B*K times
    tiled = slots.reshape(B * K, D, 1, 1).expand(-1, -1, broadcast, broadcast)
    plain = dec.cnn(dec.pos(tiled)).reshape(B, K, 4, resolution, resolution)
    torch.testing.assert_close(out.rgb, plain[:, :, :3])
    torch.testing.assert_close(out.alpha, plain[:, :, 3:].softmax(dim=1))
    (g_fast,) = torch.autograd.grad(out.reconstruction.square().sum(), slots)
    alpha = plain[:, :, 3:].softmax(dim=1)
    (g_plain,) = torch.autograd.grad((plain[:, :, :3] * alpha).sum(1).square().sum(), slots)
    torch.testing.assert_close(g_fast, g_plain)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_conv_is_conv_transpose_with_the_same_gradients(bf16, channels_last):
    """The decoder's transposed conv takes its bias gradient as a sum (faster on oneDNN): nothing else changes."""
    torch.manual_seed(0)
    stock = torch.nn.ConvTranspose2d(8, 4, 5, 2, padding=2, output_padding=1)
    ours = UpsamplingConv(8, 4, 5, 2, padding=2, output_padding=1)
    ours.load_state_dict(stock.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    stock, ours = stock.to(memory_format=fmt), ours.to(memory_format=fmt)
    x = torch.randn(3, 8, 6, 6).contiguous(memory_format=fmt)
    grad = torch.randn(3, 4, 12, 12)
    results = []
    for layer in (stock, ours):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            y = layer(xi)
        y.backward(grad.to(y.dtype))
        results.append((y, xi.grad, layer.weight.grad, layer.bias.grad))
    (y, gx, gw, gb), (y2, gx2, gw2, gb2) = results
    for a, b in ((y, y2), (gx, gx2), (gw, gw2)):  # the same oneDNN calls: bit for bit
        assert a.dtype == b.dtype
        torch.testing.assert_close(b, a, atol=0, rtol=0)
    assert gb.dtype == gb2.dtype
    torch.testing.assert_close(gb2, gb)  # a sum in another order
    with torch.no_grad():  # inference takes the stock path
        torch.testing.assert_close(ours(x), stock(x), atol=0, rtol=0)
    assert set(ours.state_dict()) == {"weight", "bias"}


def test_first_layer_of_a_channels_last_decoder_is_channels_last():
    """The next layer reads it channels-last: a contiguous map would be reordered there, forward and backward."""
    torch.manual_seed(0)
    dec = SpatialBroadcastDecoder(D, 16, 4, [8, 8], [2, 2])
    slots = torch.randn(B * K, D)
    contiguous = dec.first_layer(slots)
    dec = dec.to(memory_format=torch.channels_last)
    out = dec.first_layer(slots)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, contiguous)


def test_decoder_any_number_of_slots():
    dec = SpatialBroadcastDecoder(D, R, R, channels=[8], strides=[1])
    out = dec(torch.randn(B, 1, D, generator=gen()))
    # one slot: its alpha is 1 everywhere and the reconstruction is its rgb
    torch.testing.assert_close(out.alpha, torch.ones(B, 1, 1, R, R))
    torch.testing.assert_close(out.reconstruction, out.rgb[:, 0])


# ------------------------------------------------------------------------------ positions


def test_build_grid_values():
    g = build_grid(3, 5)
    assert g.shape == (4, 3, 5)
    y = torch.tensor([0.0, 0.5, 1.0])[:, None].expand(3, 5)
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])[None, :].expand(3, 5)
    torch.testing.assert_close(g, torch.stack([y, x, 1 - y, 1 - x]))
    # corners: top-left (0, 0, 1, 1), bottom-right (1, 1, 0, 0)
    assert g[:, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert g[:, -1, -1].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert g[:, 0, -1].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_soft_position_embedding_adds_linear_of_grid():
    pe = SoftPositionEmbedding(5, (4, 4))
    x = torch.randn(B, 5, 4, 4, generator=gen())
    grid = build_grid(4, 4).permute(1, 2, 0)  # [H, W, 4]
    expected = x + pe.proj(grid).permute(2, 0, 1)[None]
    torch.testing.assert_close(pe(x), expected)
    with pytest.raises(ValueError):
        pe(torch.randn(B, 5, 3, 3))


def test_cnn_encoder_output():
    enc = CNNEncoder(R, channels=[8, 8], strides=[2, 2], out_dim=D)
    assert enc.feature_size == R // 4
    out = enc(images())
    assert out.shape == (B, (R // 4) ** 2, D)


# ---------------------------------------------------------------------- configuration errors


def test_decoder_not_reaching_resolution():
    with pytest.raises(ValueError, match="decoder"):
        SlotAutoencoder(full_res_config(decoder_broadcast=8, decoder_strides=[1, 1]))
    with pytest.raises(ValueError, match="decoder"):
        SlotAutoencoder(upsampling_config(decoder_strides=[2, 2]))  # 8 -> 32, not 16
    with pytest.raises(ValueError):
        SpatialBroadcastDecoder(D, R, 4, channels=[8, 8], strides=[4, 1])  # strides must be 1 or 2
    with pytest.raises(ValueError):
        SpatialBroadcastDecoder(D, R, 8, channels=[8, 8], strides=[2])  # lengths differ


def test_encoder_stride_not_dividing_resolution():
    with pytest.raises(ValueError, match="divisible"):
        SlotAutoencoder(full_res_config(resolution=18, decoder_broadcast=18, encoder_strides=[2, 2]))
    with pytest.raises(ValueError, match="divisible"):
        CNNEncoder(15, channels=[8], strides=[2])


@pytest.mark.parametrize("shape", [(B, 3, 32, 32), (B, 1, R, R), (3, R, R), (B, 3, R, R + 1)])
def test_images_of_the_wrong_size(shape):
    model = model_of(full_res_config())
    with pytest.raises(ValueError) as e:
        model(torch.zeros(shape))
    msg = str(e.value)
    assert f"[B, 3, {R}, {R}]" in msg
    assert str(list(shape)) in msg


# -------------------------------------------------------------------------- save / load


def test_save_pretrained_from_pretrained_round_trip(tmp_path):
    cfg = upsampling_config(encoder_strides=[2, 1], slot_init="learned", implicit_grad=True)
    model = model_of(cfg, seed=4)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert (tmp_path / "config.json").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved.get("config", saved)["decoder_strides"] == [2, 1]

    loaded = SlotAutoencoder.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.config, SlotAutoencoderConfig)
    assert loaded.config == cfg
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    x = images(5)
    with torch.no_grad():
        a = model(x, generator=gen(9))
        b = loaded(x, generator=gen(9))
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert torch.equal(a.masks, b.masks)
    assert torch.equal(a.slots, b.slots)


def test_round_trip_gaussian_init_keeps_noise_parameters(tmp_path):
    model = model_of(full_res_config(), seed=2)
    model.save_pretrained(tmp_path)
    loaded = SlotAutoencoder.from_pretrained(tmp_path)
    assert torch.equal(loaded.slot_attention.mu, model.slot_attention.mu)
    assert torch.equal(loaded.slot_attention.log_sigma, model.slot_attention.log_sigma)
    assert loaded.config == model.config


def test_attention_labels_upsample_and_argmax():
    from slotlab.evaluation import attention_labels

    # 2x2 attention grid, 3 slots: slot k wins cell k (cell 3 -> slot 0); upsampled to 4x4 keeps the quadrants
    attn = torch.full((1, 4, 3), 0.1)
    for cell, slot in enumerate([0, 1, 2, 0]):
        attn[0, cell, slot] = 0.8
    labels = attention_labels(attn, 4)
    assert labels.shape == (1, 4, 4)
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]])
    assert torch.equal(labels[0], expected)


def test_slot_mlp_baseline_is_a_grouping_switch():
    from slotlab.modules import SlotMLPBaseline

    config = SlotAutoencoderConfig(resolution=16, num_slots=3, slot_dim=16, mlp_hidden=16, encoder_channels=[8],
                                   decoder_broadcast=16, decoder_channels=[8], decoder_strides=[1], grouping="mlp")
    model = SlotAutoencoder(config)
    assert isinstance(model.slot_attention, SlotMLPBaseline)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model(images)
    assert out.slots.shape == (2, 3, 16) and out.masks.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(out.attn, torch.full((2, 1, 256, 3), 1 / 3))  # it attends to nothing
    out.loss.backward()
    assert model.slot_attention.mlp[0].weight.grad is not None
    # no slot noise: the same image gives the same slots whatever the generator
    torch.testing.assert_close(model(images, generator=torch.Generator().manual_seed(1)).slots, out.slots)
    with pytest.raises(ValueError, match="Slot MLP"):
        SlotAutoencoder(dataclasses.replace(config, slot_init="learned"))
