"""Invariant Slot Attention (slot reference frames): the module, the relative position embedding of the decoder,
and the models built with ``slot_frame`` (tiny sizes, CPU)."""

from __future__ import annotations

import pytest
import torch

from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig
from slotlab.models.set_prediction import SlotSetPredictor, SlotSetPredictorConfig
from slotlab.modules import InvariantSlotAttention, RelativePositionEmbedding, SlotAttention, pose_dims
from slotlab.modules.position import position_grid

B, S, D_IN, D, K, T = 2, 5, 6, 8, 3, 3  # S x S input grid
N = S * S


def make(frame: str = "translation", seed: int = 0, **kwargs) -> InvariantSlotAttention:
    torch.manual_seed(seed)
    return InvariantSlotAttention(K, D, grid_size=S, input_dim=D_IN, num_iterations=T, mlp_hidden=12, frame=frame,
                                  grid_hidden=16, **kwargs)


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, N, D_IN, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 123) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("frame", ["translation", "translation_scale"])
def test_shapes_pose_and_attention(frame):
    sa = make(frame)
    out = sa(inputs(), generator=gen())
    p = pose_dims(frame)
    assert out.slots.shape == (B, K, D + p) and out.init_slots.shape == (B, K, D + p)
    assert out.attn.shape == (B, T + 1, N, K)  # T updates, then the round that places the final frames
    torch.testing.assert_close(out.attn.sum(-1), torch.ones(B, T + 1, N))
    # the position is the centre of mass of the last round's attention (eps-renormalised over the inputs)
    w = out.attn[:, -1] + sa.eps
    w = w / w.sum(1, keepdim=True)
    grid = position_grid(S)
    feats, positions, scales = sa.split(out.slots)
    torch.testing.assert_close(positions, torch.einsum("bnk,nc->bkc", w, grid))
    assert positions.abs().max() <= 1
    if frame == "translation_scale":
        spread = (grid[None, None] - positions[:, :, None]).square()
        torch.testing.assert_close(scales, torch.einsum("bnk,bknc->bkc", w, spread).sqrt())
    else:
        assert scales is None
    # initial poses: positions uniform in [-1, 1], scales at init_scale
    init_pos = sa.split(out.init_slots)[1:]
    assert init_pos[0].abs().max() <= 1 and init_pos[0].std() > 0.1
    if frame == "translation_scale":
        assert torch.all(init_pos[1] == sa.init_scale)


def test_slots_and_iterations_at_call_time_and_slot_equivariance():
    sa = make()
    out = sa(inputs(), num_slots=5, num_iterations=2, generator=gen())
    assert out.slots.shape == (B, 5, D + 2) and out.attn.shape == (B, 3, N, 5)
    start = sa(inputs(), generator=gen()).init_slots
    perm = torch.tensor([2, 0, 1])
    a, b = sa(inputs(), slots=start), sa(inputs(), slots=start[:, perm])
    torch.testing.assert_close(b.slots, a.slots[:, perm])
    torch.testing.assert_close(b.attn, a.attn[..., perm])
    with pytest.raises(ValueError, match="grid of 25"):
        sa(torch.randn(B, 16, D_IN))


def test_attention_moves_with_the_content_and_the_frame():
    """Content shifted on the grid and every slot's position shifted with it: each input's attention over the
    slots is the shifted one (the softmax over slots is per input, so this holds exactly)."""
    sa = make("translation_scale").eval()
    feat = torch.zeros(B, S, S, D_IN)
    feat[:, 1:3, 0:3] = torch.randn(B, 2, 3, D_IN, generator=gen(5))  # content in the top-left, rest uniform
    shifted = torch.zeros_like(feat)
    shifted[:, 2:4, 2:5] = feat[:, 1:3, 0:3]  # moved by (1, 2) cells
    step = 2 / S  # cell spacing of the grid over [-1, 1]
    start = sa(feat.flatten(1, 2), generator=gen()).init_slots
    start[..., D : D + 2] = torch.rand(B, K, 2, generator=gen(6)) * 0.8 - 1  # in [-1, -0.2]: stays inside moved
    moved = start.clone()
    moved[..., D : D + 2] += torch.tensor([1 * step, 2 * step])
    a = sa(feat.flatten(1, 2), slots=start, num_iterations=1).attn[:, 0].reshape(B, S, S, K)
    b = sa(shifted.flatten(1, 2), slots=moved, num_iterations=1).attn[:, 0].reshape(B, S, S, K)
    torch.testing.assert_close(b[:, 1:, 2:], a[:, : S - 1, : S - 2])
    # the absolute-position module has no such property: its slots do not move
    assert not torch.allclose(b[:, 1:, 2:], a[:, 1:, 2:])


def test_gradients_reach_the_initial_slot_parameters_and_the_frame_layers():
    sa = make("translation_scale")
    out = sa(inputs(), generator=gen())
    out.slots.square().sum().backward()
    for p in (sa.mu, sa.log_sigma, sa.grid_proj.weight, sa.to_k.weight, sa.to_q.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_implicit_grad_same_values_other_gradients():
    plain, implicit = make(seed=3), make(seed=3, implicit_grad=True)
    x = inputs()
    a, b = plain(x, generator=gen()), implicit(x, generator=gen())
    torch.testing.assert_close(a.slots, b.slots)
    a.slots.sum().backward()
    b.slots.sum().backward()
    assert implicit.mu.grad.abs().sum() > 0
    assert not torch.allclose(plain.to_q.weight.grad, implicit.to_q.weight.grad)


def test_a_frame_is_required():
    with pytest.raises(ValueError, match="unknown slot frame"):
        pose_dims("rotation")
    with pytest.raises(ValueError, match="needs a frame"):
        InvariantSlotAttention(K, D, grid_size=S, frame="none")


def test_relative_position_embedding_moves_with_the_slot():
    torch.manual_seed(0)
    emb = RelativePositionEmbedding(4, 6)
    x = torch.zeros(1, 2, 4, 6, 6)
    pos = torch.tensor([[[-0.2, 0.1], [0.4, -0.6]]])
    step = 2 / 6  # cell centres of a 6 x 6 grid over [-1, 1]
    a = emb(x, pos)
    b = emb(x, pos + torch.tensor([step, 2 * step]))  # the slot one row down, two columns right
    torch.testing.assert_close(b[..., 1:, 2:], a[..., :5, :4])
    scales = torch.full((1, 2, 2), 0.5)
    c = emb(x, pos, scales)
    bias = emb.proj.bias[:, None, None]
    torch.testing.assert_close(c, bias + (a - bias) * 2)
    # scale_factor divides as the scale does (ISA's scales_factor), and a scale edited to 0 stays finite
    emb5 = RelativePositionEmbedding(4, 6, scale_factor=5.0)
    emb5.load_state_dict(emb.state_dict())
    torch.testing.assert_close(emb5(x, pos, scales), bias + (a - bias) * 2 / 5)
    assert torch.isfinite(emb(x, pos, torch.zeros(1, 2, 2))).all()
    # a bf16 module (no autocast) takes float32 poses
    assert emb.to(torch.bfloat16)(x.bfloat16(), pos, scales).dtype == torch.bfloat16


def test_grids_of_different_sizes_agree_over_the_image():
    """A position names the same place on the encoder's feature grid and the decoder's broadcast grid: each cell
    of an 8 x 8 grid sits at the mean of the 2 x 2 cells it covers on a 16 x 16 grid over the same image."""
    fine, coarse = position_grid(16).reshape(8, 2, 8, 2, 2), position_grid(8).reshape(8, 8, 2)
    torch.testing.assert_close(fine.mean(dim=(1, 3)), coarse)
    assert position_grid(8).min() == -7 / 8 and position_grid(8).max() == 7 / 8


def test_pose_in_float32_and_finite_gradients_at_zero_spread():
    sa = make("translation_scale")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sa(inputs(), generator=gen())
    w = out.attn[:, -1].float() + sa.eps
    w = w / w.sum(1, keepdim=True)
    _, positions, scales = sa.split(out.slots)
    assert positions.dtype == torch.float32
    torch.testing.assert_close(positions, torch.einsum("bnk,nc->bkc", w, position_grid(S)), atol=1e-3, rtol=0)
    # all of a slot's attention on one input: zero spread, scale at min_scale, and finite gradients
    weights = torch.nn.functional.one_hot(torch.arange(K) * 2, N).float().T[None].requires_grad_()  # [1, N, K]
    positions, scales = sa.pose(weights, with_scale=True)
    torch.testing.assert_close(scales, torch.full((1, K, 2), sa.min_scale))
    (positions.sum() + scales.sum()).backward()
    assert torch.isfinite(weights.grad).all()


def test_explicit_slots_must_carry_the_pose():
    sa = make("translation_scale")
    with pytest.raises(ValueError, match=r"slots must be \[B, 3, 12\]"):
        sa(inputs(), slots=torch.zeros(B, K, D))
    with pytest.raises(ValueError, match="slots must be"):
        sa(inputs(), num_slots=K + 1, slots=torch.zeros(B, K, D + 4))


def tiny_config(frame: str, **kwargs) -> SlotAutoencoderConfig:
    return SlotAutoencoderConfig(resolution=16, num_slots=3, slot_dim=16, mlp_hidden=16, encoder_channels=[8, 8],
                                 encoder_strides=[2, 1], decoder_broadcast=4, decoder_channels=[8, 8],
                                 decoder_strides=[2, 2], weight_init="torch", slot_frame=frame, **kwargs)


@pytest.mark.parametrize("frame", ["translation", "translation_scale"])
def test_autoencoder_with_slot_frames(frame, tmp_path):
    torch.manual_seed(0)
    model = SlotAutoencoder(tiny_config(frame)).eval()
    assert isinstance(model.slot_attention, InvariantSlotAttention)
    assert isinstance(model.encoder.pos, torch.nn.Identity)  # positions enter per slot, not in the encoder
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model(images, generator=gen())
    width = 16 + pose_dims(frame)
    assert model.config.slot_width == width and out.slots.shape == (2, 3, width)
    assert out.reconstruction.shape == (2, 3, 16, 16) and out.masks.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 1, 16, 16))
    # a slot moved elsewhere is drawn elsewhere: the decoder reads its pose
    moved = out.slots.clone()
    moved[:, 0, 16:18] = -moved[:, 0, 16:18]
    assert not torch.allclose(model.decode(moved).alpha[:, 0], out.masks[:, 0])
    # bf16 autocast: the same poses to float32 accuracy (they are computed in float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(images, generator=gen())
    assert low.slots.dtype == torch.float32
    torch.testing.assert_close(low.slots[..., 16:], out.slots[..., 16:], atol=0.05, rtol=0)
    model.save_pretrained(tmp_path / "m")
    again = SlotAutoencoder.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(again(images, generator=gen()).reconstruction, out.reconstruction)


def test_set_predictor_with_slot_frames():
    torch.manual_seed(0)
    model = SlotSetPredictor(SlotSetPredictorConfig(resolution=16, num_slots=4, slot_dim=16, mlp_hidden=16,
                                                    encoder_channels=[8, 8], encoder_strides=[2, 1], head_hidden=8,
                                                    slot_frame="translation"))
    out = model(torch.rand(2, 3, 16, 16) * 2 - 1, targets=torch.rand(2, 3, 19))
    assert out.slots.shape == (2, 4, 18) and out.predictions.shape == (2, 4, 19) and out.loss.ndim == 0


def test_slot_frame_config_errors():
    with pytest.raises(ValueError, match="unknown slot frame"):
        SlotAutoencoder(tiny_config("affine"))
    with pytest.raises(ValueError, match="encoder_pos_frequencies"):
        SlotAutoencoder(tiny_config("translation", encoder_pos_frequencies=2))
    with pytest.raises(ValueError, match="Fourier position bands"):
        SlotAutoencoder(tiny_config("translation", decoder_pos_frequencies=2))
    assert type(SlotAutoencoder(tiny_config("none")).slot_attention) is SlotAttention
    framed = SlotAutoencoder(tiny_config("translation_scale", slot_scale_factor=5.0))
    assert framed.slot_attention.scale_factor == 5.0 and framed.decoder.pos.scale_factor == 5.0
