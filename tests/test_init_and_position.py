"""Weight initialisation schemes and Fourier position features."""

import math

import pytest
import torch
from torch import nn

from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig
from slotlab.modules import SlotAttention, keras_init_
from slotlab.modules.position import SoftPositionEmbedding, build_grid, fourier_features

TINY = dict(resolution=16, num_slots=3, slot_dim=16, mlp_hidden=16, encoder_channels=[8, 8], decoder_broadcast=16,
            decoder_channels=[8, 8], decoder_strides=[1, 1])


def test_keras_init_matches_official_scheme():
    sa = keras_init_(SlotAttention(num_slots=4, dim=32, input_dim=24))
    for lin in (sa.to_q, sa.to_k, sa.to_v, sa.mlp[0], sa.mlp[2]):
        fan_out, fan_in = lin.weight.shape
        assert lin.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-7
    assert torch.count_nonzero(sa.mlp[0].bias) == 0 and torch.count_nonzero(sa.gru.bias_ih) == 0
    assert torch.count_nonzero(sa.gru.bias_hh) == 0
    w = sa.gru.weight_hh  # [3H, H], orthonormal columns (Keras' orthogonal recurrent kernel, transposed)
    torch.testing.assert_close(w.T @ w, torch.eye(32), atol=1e-5, rtol=0)
    # the initial-slot distribution parameters are left as they were (Glorot-uniform, set by SlotAttention)
    assert sa.mu.abs().max() <= math.sqrt(6 / 33) and torch.count_nonzero(sa.mu) > 0


def test_model_weight_init_switch():
    torch.manual_seed(0)
    keras = SlotAutoencoder(SlotAutoencoderConfig(**TINY))
    default = SlotAutoencoder(SlotAutoencoderConfig(**TINY, weight_init="torch"))
    assert torch.count_nonzero(keras.decoder.cnn[0].bias) == 0
    assert torch.count_nonzero(default.decoder.cnn[0].bias) > 0
    with pytest.raises(ValueError, match="weight_init"):
        SlotAutoencoder(SlotAutoencoderConfig(**TINY, weight_init="lecun"))


def test_fourier_features():
    grid = build_grid(8, 8)
    assert torch.equal(fourier_features(grid, 0), grid)
    f = fourier_features(grid, 3)
    assert f.shape == (4 + 4 * 3, 8, 8)
    assert torch.equal(f[:4], grid)
    y, x = grid[0], grid[1]
    # layout: sin of (f0 y, f0 x, f1 y, f1 x, f2 y, f2 x), then cos of the same
    torch.testing.assert_close(f[4 + 2], torch.sin(torch.pi * 2 * y))
    torch.testing.assert_close(f[4 + 6 + 5], torch.cos(torch.pi * 4 * x))


def test_position_embedding_with_frequencies_and_mlp_decoder():
    pe = SoftPositionEmbedding(6, (8, 8), num_frequencies=2)
    assert pe.proj.in_features == 12
    assert pe(torch.zeros(2, 6, 8, 8)).shape == (2, 6, 8, 8)
    # a per-pixel MLP decoder (1x1 convs) with Fourier position features is a valid configuration
    cfg = SlotAutoencoderConfig(**{**TINY, "decoder_channels": [8, 8]}, decoder_kernel=1, decoder_out_kernel=1,
                                decoder_pos_frequencies=3, encoder_pos_frequencies=2)
    model = SlotAutoencoder(cfg)
    out = model(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert out.masks.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 1, 16, 16))
    assert all(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.decoder.cnn if isinstance(m, nn.Conv2d))
