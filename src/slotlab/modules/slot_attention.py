"""Slot Attention (Locatello et al. 2020), faithful to the official algorithm.

Shapes: B batch, N inputs, D_in input width, K slots, D slot width, T iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SlotInit = Literal["gaussian", "learned"]


@dataclass
class SlotAttentionOutput:
    slots: Tensor  # [B, K, D] slots after the last iteration
    attn: Tensor  # [B, T, N, K] softmax over slots of every iteration, before the eps renormalisation
    #               (T + 1 rounds with slot reference frames: InvariantSlotAttention)
    init_slots: Tensor  # [B, K, D] the slots the iterations started from

    @property
    def masks(self) -> Tensor:
        """[B, N, K] last iteration's attention: which slot claims each input (segmentation masks)."""
        return self.attn[:, -1]


class SlotMLP(nn.Sequential):
    """Linear(D, H) ReLU Linear(H, D): the residual MLP applied to slots."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim or dim))


class _Fan(torch.autograd.Function):
    """The inputs' gradient of all iterations in one batched matmul, instead of two skinny matmuls per iteration and
    a running sum of [B, N, D] gradients (the largest cost of the backward pass, in bf16 most of all).

    Each iteration reads the inputs x [B, N, D_in] twice, as ``logits = qk @ x^T`` and ``pooled = weights @ x``, so
    ``dx = sum_t dlogits_t^T @ qk_t + weights_t^T @ dpooled_t``: stacking the iterations' [B, K, N] and [B, K, D_in]
    factors along K makes that one [B, N, 2TK] @ [B, 2TK, D_in] matmul. ``_Fan(x)`` hands out a pair of placeholder
    tensors per read; each read (:class:`_Read`) uses x detached and returns its two factors as the gradients of its
    pair; autograd runs ``_Fan``'s backward once all reads have, with every factor, and it returns dx."""

    @staticmethod
    def forward(ctx, x: Tensor, dtype: torch.dtype, num_slots: int, reads: int) -> tuple[Tensor, ...]:  # type: ignore[override]
        ctx.set_materialize_grads(False)
        ctx.x_dtype = x.dtype
        b, n, d = x.shape
        shapes = [(b, num_slots, n), (b, num_slots, d)] * reads  # a distinct (never read) tensor per output
        return tuple(x.new_empty(shape, dtype=dtype) for shape in shapes)

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        pairs = [
            (left, right)
            for left, right in zip(grads[0::2], grads[1::2], strict=True)
            if left is not None and right is not None
        ]
        if not pairs:
            return None, None, None, None
        left = torch.cat([left for left, _ in pairs], dim=1)  # [B, M, N]
        right = torch.cat([right.to(left.dtype) for _, right in pairs], dim=1)  # [B, M, D_in]
        return torch.bmm(left.transpose(1, 2), right).to(ctx.x_dtype), None, None, None


class _Read(torch.autograd.Function):
    """``factor @ x_t`` ([B, K, D_in] @ [B, D_in, N], the logits) or ``factor @ x`` ([B, K, N] @ [B, N, D_in], the
    pooled inputs) with x constant here: the factor's gradient as usual, and x's two factors (left [B, K, N], right
    [B, K, D_in]) as the gradients of the placeholder pair from :class:`_Fan`."""

    @staticmethod
    def forward(ctx, factor: Tensor, x: Tensor, left: Tensor, right: Tensor, logits: bool) -> Tensor:  # type: ignore[override]
        factor = factor.to(x.dtype)
        ctx.save_for_backward(factor, x)
        ctx.logits = logits
        return torch.bmm(factor, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, Tensor, Tensor, None]:  # type: ignore[override]
        factor, x = ctx.saved_tensors
        grad = grad.to(x.dtype)
        d_factor = torch.bmm(grad, x.transpose(1, 2))
        if ctx.logits:  # logits = qk @ x_t: dx = grad^T @ qk
            return d_factor, None, grad, factor, None
        return d_factor, None, factor, grad, None  # pooled = weights @ x: dx = weights^T @ grad


class SlotAttention(nn.Module):
    """Turns a set of N features into K slots by iterative, competitive attention.

    Args:
        num_slots: K used when ``forward`` is not told otherwise.
        dim: slot width D (also the width of keys, queries and values).
        input_dim: width of the inputs (default D).
        num_iterations: T used when ``forward`` is not told otherwise.
        eval_iterations: T in eval mode (``module.eval()``: validation, evaluation, inference) when ``forward`` is
            not told otherwise; default ``num_iterations``. The paper: a model trained with T iterations segments
            better with more at test time.
        mlp_hidden: hidden width of the residual MLP (128 for D = 64 in the paper).
        eps: added to the attention before the weighted mean (1e-8 official, 1e-6 in LSD).
        ln_eps: LayerNorm epsilon (1e-3 in the official Keras code).
        init: ``"gaussian"``: slots ~ N(mu, exp(log_sigma)^2) with learned mu, log_sigma (paper);
            ``"learned"``: one learned query per slot (BO-QSA); K is then fixed to ``num_slots``.
        implicit_grad: pass gradients only through the last iteration (Chang et al. 2022):
            the first T - 1 iterations run without a graph and the last starts from their detached result.
        num_heads: multi-head Slot Attention: queries, keys and values split into H heads of width D / H that
            attend separately (the slots compete in each head); 1 (the paper) is single-head.
    """

    fused_input_gradient = True  # the inputs' gradient of all iterations in one matmul (:class:`_Fan`)

    def __init__(
        self,
        num_slots: int,
        dim: int,
        input_dim: int | None = None,
        num_iterations: int = 3,
        mlp_hidden: int = 128,
        eps: float = 1e-8,
        ln_eps: float = 1e-3,
        init: SlotInit = "gaussian",
        implicit_grad: bool = False,
        num_heads: int = 1,
        eval_iterations: int | None = None,
    ):
        super().__init__()
        input_dim = input_dim or dim
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads must divide the slot width {dim}, got {num_heads}")
        self.num_slots, self.dim, self.num_iterations = num_slots, dim, num_iterations
        self.eval_iterations = eval_iterations
        self.eps, self.init, self.implicit_grad, self.num_heads = eps, init, implicit_grad, num_heads
        self.scale = (dim // num_heads) ** -0.5

        self.norm_inputs = nn.LayerNorm(input_dim, eps=ln_eps)
        self.norm_slots = nn.LayerNorm(dim, eps=ln_eps)
        self.norm_mlp = nn.LayerNorm(dim, eps=ln_eps)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(input_dim, dim, bias=False)
        self.to_v = nn.Linear(input_dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = SlotMLP(dim, mlp_hidden)

        if init == "gaussian":
            self.mu = nn.Parameter(torch.empty(1, 1, dim))
            self.log_sigma = nn.Parameter(torch.empty(1, 1, dim))
        elif init == "learned":
            self.queries = nn.Parameter(torch.empty(1, num_slots, dim))
        else:
            raise ValueError(f"unknown slot init {init!r}: use 'gaussian' or 'learned'")
        self.reset_slot_parameters()

    def reset_slot_parameters(self) -> None:
        """Glorot-uniform initial-slot parameters, as the official code (fan_in = 1, fan_out = D)."""
        bound = math.sqrt(6.0 / (1 + self.dim))
        for p in (getattr(self, "mu", None), getattr(self, "log_sigma", None), getattr(self, "queries", None)):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)

    def initial_slots(self, batch_size: int, num_slots: int, generator: torch.Generator | None = None) -> Tensor:
        """[B, K, D] starting slots. Gaussian sampling is reparameterised so mu and log_sigma get gradients."""
        if self.init == "learned":
            if num_slots != self.num_slots:
                raise ValueError(f"learned slot queries fix K = {self.num_slots}, got num_slots={num_slots}")
            return self.queries.expand(batch_size, -1, -1)
        noise = torch.randn(
            batch_size, num_slots, self.dim, device=self.mu.device, dtype=self.mu.dtype, generator=generator
        )
        return self.mu + self.log_sigma.exp() * noise

    def step(
        self, slots: Tensor, x: Tensor, x_t: Tensor, fan: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, Tensor]:
        """One iteration. slots [B, K, D], the normalised inputs x [B, N, D_in] and x_t = x [B, D_in, N] ->
        (new slots [B, K, D], attn [B, K, N]).

        The key and value projections are folded into the slot side (associativity): ``q . (W_k x) = (q W_k) . x``
        and ``sum_n w_n (W_v x_n) = W_v (sum_n w_n x_n)``, so the N inputs are never projected; the work over N is
        the two batched matmuls every iteration needs anyway, and the two [B, N, D] projections (and their
        backward) disappear. Equal to the textbook form up to float rounding.

        Laid out slots-first: the logits [B, K, N] come from one batched matmul, the softmax over the slots runs
        along dim 1 (contiguous runs of N), and the weighted mean over the inputs is the next matmul; the
        public [B, N, K] attention is a transposed view of it (see :meth:`forward`).

        ``fan``: this iteration's two placeholder pairs from :class:`_Fan` (x is then constant here)."""
        q = self.to_q(self.norm_slots(slots)) * self.scale  # [B, K, D]
        qk = q @ self.to_k.weight  # [B, K, D_in]
        logits = _Read.apply(qk, x_t, fan[0], fan[1], True) if fan else torch.bmm(qk, x_t)  # [B, K, N]
        attn = logits.softmax(dim=1)  # slots compete for each input
        weights = self.mean_weights(attn, dim=2)  # [B, K, N]
        pooled = _Read.apply(weights, x, fan[2], fan[3], False) if fan else torch.bmm(weights, x)  # [B, K, D_in]
        return self.update(slots, F.linear(pooled, self.to_v.weight)), attn

    def _multi_head_step(self, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """H heads of width D / H: slots compete for each input in every head separately, each head takes its own
        weighted mean of its share of the values, the heads' updates are concatenated; the returned attention
        [B, K, N] is the heads' mean (what segments the image). k, v [B, N, D] are the projected inputs."""
        q = self.to_q(self.norm_slots(slots)) * self.scale
        b, kk, d = q.shape
        n, h = k.shape[1], self.num_heads
        qh = q.reshape(b, kk, h, d // h).transpose(1, 2)  # [B, H, K, D/H]
        kh = k.reshape(b, n, h, d // h).transpose(1, 2)  # [B, H, N, D/H]
        vh = v.reshape(b, n, h, d // h).transpose(1, 2)
        attn = torch.matmul(qh, kh.transpose(2, 3)).softmax(dim=2)  # [B, H, K, N]
        updates = torch.matmul(self.mean_weights(attn, dim=3), vh)  # [B, H, K, D/H]
        updates = updates.transpose(1, 2).reshape(b, kk, d)
        return self.update(slots, updates), attn.mean(dim=1)

    def mean_weights(self, attn: Tensor, dim: int = 1) -> Tensor:
        """Attention -> weights of a weighted mean over the inputs (axis ``dim`` of ``attn``: 1 for [B, N, K], 2 for
        [B, K, N]): (attn + eps), summing to 1 over the inputs."""
        weights = attn + self.eps
        return weights / weights.sum(dim=dim, keepdim=True)

    @property
    def fixed_num_slots(self) -> bool:
        """Whether K is fixed by the weights (learned queries) rather than free at every call (sampled slots)."""
        return self.init == "learned"

    @property
    def test_iterations(self) -> int:
        """T in eval mode when a call does not say: ``eval_iterations`` where set, else ``num_iterations``."""
        return self.eval_iterations or self.num_iterations

    def counts(self, num_slots: int | None, num_iterations: int | None, slots: Tensor | None) -> tuple[int, int]:
        """K and T of a call: given, else the explicit slots' number / the module's defaults (T in eval mode:
        ``eval_iterations`` when set)."""
        num_slots = num_slots or (slots.shape[1] if slots is not None else self.num_slots)
        if num_iterations is None:
            num_iterations = self.num_iterations if self.training else self.test_iterations
        if num_iterations < 1:
            raise ValueError("num_iterations must be >= 1")
        return num_slots, num_iterations

    def update(self, slots: Tensor, updates: Tensor) -> Tensor:
        """GRU and residual MLP: slots [B, K, D], updates [B, K, D] -> new slots [B, K, D]."""
        b, n_slots, d = slots.shape
        slots = self.gru(updates.reshape(-1, d), slots.reshape(-1, d)).reshape(b, n_slots, d)
        return slots + self.mlp(self.norm_mlp(slots))

    def forward(
        self,
        inputs: Tensor,
        num_slots: int | None = None,
        num_iterations: int | None = None,
        slots: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SlotAttentionOutput:
        """inputs [B, N, D_in] -> SlotAttentionOutput. ``slots`` [B, K, D] overrides the initialisation."""
        num_slots, num_iterations = self.counts(num_slots, num_iterations, slots)
        if slots is None:
            slots = self.initial_slots(inputs.shape[0], num_slots, generator)
        init_slots = slots

        x = self.norm_inputs(inputs)
        step: Callable[..., tuple[Tensor, Tensor]]
        if self.num_heads > 1:
            args: list[tuple] = [(self.to_k(x), self.to_v(x))] * num_iterations
            step = self._multi_head_step
        else:
            x_in = x
            if torch.is_autocast_enabled(x.device.type):  # cast once, not in every iteration's matmuls
                x = x.to(torch.get_autocast_dtype(x.device.type))
            fans: list[tuple[Tensor, ...] | None] = [None] * num_iterations
            if self.fused_input_gradient and x.requires_grad and torch.is_grad_enabled():
                with_grad = 1 if self.implicit_grad else num_iterations  # the iterations that build a graph
                pairs = _Fan.apply(x_in, x.dtype, num_slots, 2 * with_grad)
                fans[num_iterations - with_grad :] = [pairs[4 * i : 4 * i + 4] for i in range(with_grad)]
                x = x.detach()
            x_t = x.transpose(1, 2)  # a view, read transposed by the matmuls: faster than a copy (docs/benchmarks.md)
            args = [(x, x_t, fan) for fan in fans]
            step = self.step
        attns = []
        for it in range(num_iterations):
            if self.implicit_grad and it == num_iterations - 1:
                slots = slots.detach()
                # keep a path to the initial-slot parameters (straight-through), as Chang et al. do
                slots = slots + init_slots - init_slots.detach()
            with torch.set_grad_enabled(
                torch.is_grad_enabled() and not (self.implicit_grad and it < num_iterations - 1)
            ):
                slots, attn = step(slots, *args[it])
            attns.append(attn)
        # [B, T, K, N] as computed, seen as [B, T, N, K] (a view: no copy)
        return SlotAttentionOutput(slots=slots, attn=torch.stack(attns, dim=1).transpose(2, 3), init_slots=init_slots)
