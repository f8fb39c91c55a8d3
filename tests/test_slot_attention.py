"""Tests for slotlab.modules.slot_attention.SlotAttention (tiny sizes, CPU, a few ms each)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slotlab.modules import SlotAttention

B, N, D_IN, D, K, T = 2, 10, 6, 8, 3, 3


def make(seed: int = 0, **kwargs) -> SlotAttention:
    torch.manual_seed(seed)
    kw = dict(num_slots=K, dim=D, input_dim=D_IN, num_iterations=T, mlp_hidden=12)
    kw.update(kwargs)
    return SlotAttention(**kw)


def inputs(seed: int = 1, n: int = N, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, D_IN, generator=g).requires_grad_(requires_grad)


def gen(seed: int = 123) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------- shapes


def test_output_shapes_and_attention_normalised_over_slots():
    sa = make()
    out = sa(inputs(), generator=gen())
    assert out.slots.shape == (B, K, D)
    assert out.attn.shape == (B, T, N, K)
    assert out.init_slots.shape == (B, K, D)
    # softmax over the slot axis: every input's attention sums to 1 across slots, in every iteration
    torch.testing.assert_close(out.attn.sum(-1), torch.ones(B, T, N))
    assert (out.attn >= 0).all()
    # masks is the last iteration's attention
    assert out.masks.shape == (B, N, K)
    assert torch.equal(out.masks, out.attn[:, -1])
    # and the iterations actually differ (masks is not e.g. the first one)
    assert not torch.allclose(out.attn[:, 0], out.attn[:, -1])


@pytest.mark.parametrize("k,t", [(1, 1), (5, 2), (2, 4)])
def test_num_slots_and_iterations_overridable_at_call_time(k, t):
    sa = make()
    out = sa(inputs(), num_slots=k, num_iterations=t, generator=gen())
    assert out.slots.shape == (B, k, D)
    assert out.attn.shape == (B, t, N, k)
    torch.testing.assert_close(out.attn.sum(-1), torch.ones(B, t, N))
    # the module defaults are untouched
    assert sa(inputs(), generator=gen()).attn.shape == (B, T, N, K)


def test_eval_iterations_apply_in_eval_mode_only_and_a_call_overrides_them():
    sa = make(eval_iterations=5)
    assert sa(inputs(), generator=gen()).attn.shape[1] == T  # training mode: the T it trains with
    sa.eval()
    out = sa(inputs(), generator=gen())
    assert out.attn.shape[1] == 5
    # the same as asking for 5 iterations explicitly, with the same noise
    torch.testing.assert_close(out.slots, sa(inputs(), num_iterations=5, generator=gen()).slots, rtol=0, atol=0)
    assert sa(inputs(), num_iterations=2, generator=gen()).attn.shape[1] == 2
    assert make().eval()(inputs(), generator=gen()).attn.shape[1] == T  # unset: as trained


def test_num_iterations_must_be_positive():
    with pytest.raises(ValueError):
        make()(inputs(), num_iterations=0)


def test_unknown_init_rejected():
    with pytest.raises(ValueError, match="unknown slot init"):
        make(init="zeros")


# ----------------------------------------------------------------------------- symmetries


def test_permutation_invariant_in_inputs():
    sa = make()
    x = inputs()
    perm = torch.randperm(N, generator=gen(7))
    out = sa(x, generator=gen())
    out_p = sa(x[:, perm], generator=gen())
    # the set of inputs is the same, so the slots are the same ...
    torch.testing.assert_close(out_p.slots, out.slots, atol=1e-5, rtol=1e-5)
    # ... and each input keeps its attention: the attention rows are permuted along
    torch.testing.assert_close(out_p.attn, out.attn[:, :, perm], atol=1e-5, rtol=1e-5)


def test_permutation_equivariant_in_slots():
    sa = make()
    x = inputs()
    slots0 = torch.randn(B, K, D, generator=gen(3))
    perm = torch.tensor([2, 0, 1])
    out = sa(x, slots=slots0)
    out_p = sa(x, slots=slots0[:, perm])
    assert out.slots.shape == (B, K, D)
    torch.testing.assert_close(out_p.slots, out.slots[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_p.attn, out.attn[..., perm], atol=1e-5, rtol=1e-5)
    assert torch.equal(out_p.init_slots, slots0[:, perm])


def test_explicit_slots_set_the_number_of_slots():
    sa = make()
    slots0 = torch.randn(B, 5, D, generator=gen(3))
    out = sa(inputs(), slots=slots0)
    assert out.slots.shape == (B, 5, D)
    assert out.attn.shape == (B, T, N, 5)


# ------------------------------------------------------------------------------- gradients


def test_gradients_reach_mu_and_log_sigma():
    sa = make()
    out = sa(inputs(), generator=gen())
    (out.slots**2).sum().backward()
    for p in (sa.mu, sa.log_sigma):
        assert p.grad is not None
        assert p.grad.abs().sum() > 0
    assert not hasattr(sa, "queries")


def test_learned_init_gradients_reach_queries_and_k_is_fixed():
    sa = make(init="learned")
    assert sa.queries.shape == (1, K, D)
    assert not hasattr(sa, "mu")
    out = sa(inputs())
    (out.slots**2).sum().backward()
    assert sa.queries.grad is not None
    assert sa.queries.grad.abs().sum() > 0
    # every row of the batch starts from the same learned queries
    assert torch.equal(out.init_slots[0], out.init_slots[1])
    with pytest.raises(ValueError, match="num_slots"):
        sa(inputs(), num_slots=K + 1)


def _copy(sa: SlotAttention, **kwargs) -> SlotAttention:
    other = make(**kwargs)
    other.load_state_dict(sa.state_dict())
    return other


def test_implicit_grad_same_value_as_normal_forward():
    sa = make()
    sa_imp = _copy(sa, implicit_grad=True)
    x = inputs()
    out = sa(x, generator=gen())
    out_imp = sa_imp(x, generator=gen())
    torch.testing.assert_close(out_imp.slots, out.slots, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out_imp.attn, out.attn, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out_imp.init_slots, out.init_slots)


def test_implicit_grad_reaches_initial_slot_parameters_and_weights():
    sa = make(implicit_grad=True)
    out = sa(inputs(), generator=gen())
    (out.slots**2).sum().backward()
    for name in ("mu", "log_sigma", "to_q.weight", "to_k.weight", "to_v.weight", "gru.weight_hh", "mlp.0.weight"):
        p = sa.get_parameter(name)
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_implicit_grad_with_one_iteration_equals_normal_grad():
    # With T = 1 the only iteration is the last one, and the straight-through
    # ``slots.detach() + init - init.detach()`` is the identity in value and in gradient,
    # so both modes must give exactly the same gradients for every parameter and the inputs.
    sa = make()
    sa_imp = _copy(sa, implicit_grad=True)
    grads = []
    for module in (sa, sa_imp):
        x = inputs(requires_grad=True)
        out = module(x, num_iterations=1, generator=gen())
        (out.slots**2).sum().backward()
        grads.append({"inputs": x.grad, **{n: p.grad for n, p in module.named_parameters()}})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-6, msg=name)


def test_implicit_grad_graph_spans_only_the_last_iteration():
    # Implicit differentiation (Chang et al. 2022): the first T-1 iterations run without a graph.
    # So the implicit-mode gradients (inputs and all weights) must equal those of a *normal* single
    # iteration started from the detached result of the first T-1 iterations. The initial-slot
    # parameters get the gradient that arrives at that starting point, passed straight through:
    # d(init)/d(mu) = 1 and d(init)/d(log_sigma) = exp(log_sigma) * noise = init - mu.
    sa = make()
    sa_imp = _copy(sa, implicit_grad=True)

    x_imp = inputs(requires_grad=True)
    out_imp = sa_imp(x_imp, generator=gen())
    (out_imp.slots**2).sum().backward()

    with torch.no_grad():
        first = sa(inputs(), num_iterations=T - 1, generator=gen())
    start = first.slots.clone().requires_grad_(True)
    x_ref = inputs(requires_grad=True)
    out_ref = sa(x_ref, slots=start, num_iterations=1)
    (out_ref.slots**2).sum().backward()

    torch.testing.assert_close(out_imp.slots, out_ref.slots, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x_imp.grad, x_ref.grad, atol=1e-6, rtol=1e-6)
    for name, p in sa_imp.named_parameters():
        if name in ("mu", "log_sigma"):
            continue
        torch.testing.assert_close(p.grad, sa.get_parameter(name).grad, atol=1e-6, rtol=1e-6, msg=name)
    torch.testing.assert_close(sa_imp.mu.grad, start.grad.sum((0, 1), keepdim=True), atol=1e-6, rtol=1e-6)
    init = first.init_slots
    torch.testing.assert_close(
        sa_imp.log_sigma.grad, (start.grad * (init - sa.mu.detach())).sum((0, 1), keepdim=True), atol=1e-6, rtol=1e-6
    )

    # and it is genuinely different from backpropagating through all T iterations
    x_full = inputs(requires_grad=True)
    sa.zero_grad()
    (sa(x_full, generator=gen()).slots ** 2).sum().backward()
    assert not torch.allclose(x_full.grad, x_imp.grad, atol=1e-6)


# ------------------------------------------------------------------------ initialisation


def test_layernorm_eps_and_projection_biases():
    sa = make()
    for ln in (sa.norm_inputs, sa.norm_slots, sa.norm_mlp):
        assert ln.eps == 1e-3
    for lin in (sa.to_q, sa.to_k, sa.to_v):
        assert lin.bias is None
    assert sa.to_k.in_features == D_IN and sa.to_v.in_features == D_IN and sa.to_q.in_features == D
    assert sa.eps == 1e-8
    assert sa.scale == pytest.approx(D**-0.5)


def test_initial_slot_parameters_glorot_uniform():
    dim = 64
    sa = make(dim=dim, input_dim=dim)
    bound = math.sqrt(6.0 / (1 + dim))
    for p in (sa.mu, sa.log_sigma):
        assert p.shape == (1, 1, dim)
        assert p.abs().max() <= bound
        # spread over the interval, not a constant (64 uniform draws: max-min far from 0)
        assert p.max() - p.min() > bound
    sa_l = make(dim=dim, input_dim=dim, init="learned")
    assert sa_l.queries.abs().max() <= bound


# ------------------------------------------------------------------------ official algorithm


def reference_step(sa: SlotAttention, slots, inputs_):
    """One Slot Attention iteration written out with plain torch ops from the module's weights."""
    x = F.layer_norm(inputs_, (inputs_.shape[-1],), sa.norm_inputs.weight, sa.norm_inputs.bias, 1e-3)
    k = x @ sa.to_k.weight.T
    v = x @ sa.to_v.weight.T
    s = F.layer_norm(slots, (D,), sa.norm_slots.weight, sa.norm_slots.bias, 1e-3)
    q = (s @ sa.to_q.weight.T) / math.sqrt(D)
    logits = k @ q.transpose(1, 2)  # [B, N, K]
    attn = torch.softmax(logits, dim=-1)  # over slots
    w = attn + 1e-8
    w = w / w.sum(dim=1, keepdim=True)  # over inputs
    updates = w.transpose(1, 2) @ v  # [B, K, D] weighted mean
    # GRUCell(updates, previous slots) written out (PyTorch gate order r, z, n)
    h = slots
    gi = updates @ sa.gru.weight_ih.T + sa.gru.bias_ih
    gh = h @ sa.gru.weight_hh.T + sa.gru.bias_hh
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    h = (1 - z) * n + z * h
    m = F.layer_norm(h, (D,), sa.norm_mlp.weight, sa.norm_mlp.bias, 1e-3)
    m = torch.relu(m @ sa.mlp[0].weight.T + sa.mlp[0].bias) @ sa.mlp[2].weight.T + sa.mlp[2].bias
    return h + m, attn


def test_matches_hand_written_official_algorithm():
    sa = make()
    # make LayerNorm affine and biases non-trivial so that they are really exercised
    with torch.no_grad():
        for p in sa.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen(11)))
    x = inputs()
    slots0 = torch.randn(B, K, D, generator=gen(5))
    with torch.no_grad():
        out = sa(x, slots=slots0, num_iterations=2)
        s, attns = slots0, []
        for _ in range(2):
            s, a = reference_step(sa, s, x)
            attns.append(a)
    torch.testing.assert_close(out.slots, s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.attn, torch.stack(attns, 1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("on", ["slots", "first_attention", "both"])
def test_gradients_match_the_hand_written_algorithm(fused, on):
    """The inputs' gradient of all iterations in one matmul (fused) or summed per iteration: both equal autograd
    through the hand-written algorithm, whatever the loss reads (the last slots, only the first attention, both),
    and a second backward pass over a kept graph gives the same again."""
    sa = make()
    sa.fused_input_gradient = fused
    with torch.no_grad():
        for p in sa.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen(11)))
    slots0 = torch.randn(B, K, D, generator=gen(5)).requires_grad_(True)
    w_slots, w_attn = torch.randn(B, K, D, generator=gen(6)), torch.randn(B, N, K, generator=gen(7))

    def loss_of(slots, attn_first):
        return (slots * w_slots).sum() * (on != "first_attention") + (attn_first * w_attn).sum() * (on != "slots")

    def grads(loss, x):
        return torch.autograd.grad(loss, [x, slots0, *sa.parameters()], retain_graph=True, allow_unused=True)

    x = inputs(requires_grad=True)
    out = sa(x, slots=slots0)
    loss = loss_of(out.slots, out.attn[:, 0])
    got, again = grads(loss, x), grads(loss, x)
    x_ref = inputs(requires_grad=True)
    s, attns = slots0, []
    for _ in range(T):
        s, a = reference_step(sa, s, x_ref)
        attns.append(a)
    want = grads(loss_of(s, attns[0]), x_ref)
    for g, g2, w in zip(got, again, want, strict=True):
        if w is None:
            assert g is None or not g.any()
            continue
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g2, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("implicit", "bf16"), [(True, False), (False, True), (True, True)])
def test_fused_input_gradient_equals_the_per_iteration_one(implicit, bf16):
    """With implicit differentiation (only the last iteration reads the inputs with a graph) and under bf16
    autocast, the fused gradient equals the per-iteration one (bf16: within its rounding)."""
    sa = make(implicit_grad=implicit)
    got = {}
    for fused in (True, False):
        sa.fused_input_gradient = fused
        sa.zero_grad(set_to_none=True)
        x = inputs(requires_grad=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = sa(x, generator=gen())
        (out.slots.float().square().sum() + out.attn.float()[:, -1, :, 0].sum()).backward()
        got[fused] = [x.grad, *(p.grad for p in sa.parameters())]
    tol = {"atol": 2e-2, "rtol": 2e-2} if bf16 else {"atol": 1e-6, "rtol": 1e-5}
    for a, b in zip(got[True], got[False], strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_gaussian_initial_slots_are_mu_plus_sigma_noise():
    sa = make()
    with torch.no_grad():
        sa.log_sigma.fill_(math.log(0.5))
    init = sa.initial_slots(B, K, generator=gen(9))
    noise = torch.randn(B, K, D, generator=gen(9))
    torch.testing.assert_close(init, sa.mu + 0.5 * noise)


# ------------------------------------------------------------------------------ generator


def test_generator_makes_runs_repeatable():
    sa = make()
    x = inputs()
    a = sa(x, generator=gen(1))
    b = sa(x, generator=gen(1))
    c = sa(x, generator=gen(2))
    assert torch.equal(a.slots, b.slots)
    assert torch.equal(a.attn, b.attn)
    assert torch.equal(a.init_slots, b.init_slots)
    assert not torch.allclose(a.init_slots, c.init_slots)
    assert not torch.allclose(a.slots, c.slots)


def test_multi_head_slot_attention():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32)
    one = SlotAttention(4, 32, num_heads=1)
    heads = SlotAttention(4, 32, num_heads=4)
    heads.load_state_dict(one.state_dict())  # the same weights: the heads only split the width
    g = lambda: torch.Generator().manual_seed(1)
    out = heads(x, generator=g())
    assert out.slots.shape == (2, 4, 32) and out.attn.shape == (2, 3, 16, 4)
    torch.testing.assert_close(out.attn.sum(-1), torch.ones(2, 3, 16))  # the heads' mean: still a softmax over K
    assert not torch.allclose(out.slots, one(x, generator=g()).slots)  # H separate competitions differ from one
    # equivariant in the slots, invariant in the inputs, as with one head
    perm = torch.randperm(16)
    torch.testing.assert_close(heads(x[:, perm], generator=g()).slots, out.slots, atol=1e-5, rtol=1e-5)
    out.slots.sum().backward()
    assert all(p.grad is not None for n, p in heads.named_parameters() if n != "queries")
    with pytest.raises(ValueError, match="divide"):
        SlotAttention(4, 30, num_heads=4)


def test_multi_head_in_a_model_config():
    from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig

    model = SlotAutoencoder(
        SlotAutoencoderConfig(
            resolution=16,
            num_slots=3,
            slot_dim=16,
            mlp_hidden=16,
            slot_heads=2,
            encoder_channels=[8],
            decoder_broadcast=16,
            decoder_channels=[8],
            decoder_strides=[1],
        )
    )
    assert model.slot_attention.num_heads == 2
    assert model(torch.rand(2, 3, 16, 16) * 2 - 1).attn.shape[-1] == 3
