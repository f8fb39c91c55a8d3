"""Invariant Slot Attention (Biza et al. 2023): Slot Attention with slot-centric reference frames.

Every slot carries a pose: a position (the centre of mass of its attention over the input grid) and, with
``frame="translation_scale"``, a scale (the attention's spread). In every iteration the input grid is expressed
in each slot's own frame, ``(grid - position) / scale``, embedded (``Linear``) and added to the keys and values,
which then pass an MLP; so each slot sees the inputs relative to itself and what it learns about an object's
appearance no longer depends on where the object is. After the last update one more attention round places the
frames of the final slots. A decoder that draws each slot on the same relative grid
(:class:`slotlab.modules.SpatialBroadcastDecoder` with ``pose_dims``) completes the invariance.

The pose travels with the slot: the output slots are ``[features (D), position (y, x), scale (y, x)]``, so
everything that stores, edits or decodes slots handles posed slots unchanged. Positions are in [-1, 1] over the
image (the input grid's cell centres, :func:`slotlab.modules.position.position_grid`, so a decoder's broadcast grid
of another size agrees); without a scale the frame is translation only (scale 1). Poses are computed in float32
whatever the autocast precision: a bf16 grid would be off by a few thousandths, and that error is then divided by
the scale.

Shapes: B batch, N inputs on a ``grid_size`` x ``grid_size`` grid, K slots, D slot width, P pose width
(2: position; 4: position and scale), T iterations.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from slotlab.modules.position import position_grid, relative_grid
from slotlab.modules.slot_attention import SlotAttention, SlotAttentionOutput, SlotInit, SlotMLP

Frame = Literal["translation", "translation_scale"]
FRAMES = ("translation", "translation_scale")


def pose_dims(frame: str) -> int:
    """Width of the pose a slot carries: 0 (no frame), 2 (translation), 4 (translation and scale)."""
    if frame == "none":
        return 0
    if frame not in FRAMES:
        raise ValueError(f"unknown slot frame {frame!r}: use 'none', 'translation' or 'translation_scale'")
    return 2 if frame == "translation" else 4


class InvariantSlotAttention(SlotAttention):
    """Slot Attention whose slots attend in their own reference frames (translation, optionally scale).

    Args (besides :class:`SlotAttention`'s):
        grid_size: side of the square input grid (N = grid_size ** 2, row-major, as a flattened feature map).
        frame: ``"translation"`` or ``"translation_scale"``.
        grid_hidden: hidden width of the MLP that mixes the relative-position embedding into keys and values.
        init_scale: the scale every slot starts from (0.1: fairly small objects, as the ISA code).
        min_scale, max_scale: scales are clipped to this range.
        scale_factor: the relative grid is ``(grid - position) / (scale_factor * scale)`` (ISA's
            ``scales_factor``: 1 by default, 5 in its CLEVR models); a decoder must use the same.

    Slots start at uniformly random positions in [-1, 1] (drawn with ``generator``), as ISA's Tetrominoes
    model; pass ``slots`` [B, K, D + P] to choose features and poses yourself.
    """

    grid: Tensor

    def __init__(
        self,
        num_slots: int,
        dim: int,
        grid_size: int,
        input_dim: int | None = None,
        num_iterations: int = 3,
        mlp_hidden: int = 128,
        eps: float = 1e-8,
        ln_eps: float = 1e-3,
        init: SlotInit = "gaussian",
        implicit_grad: bool = False,
        frame: Frame = "translation",
        grid_hidden: int = 128,
        init_scale: float = 0.1,
        min_scale: float = 0.001,
        max_scale: float = 2.0,
        scale_factor: float = 1.0,
        eval_iterations: int | None = None,
    ):
        super().__init__(
            num_slots,
            dim,
            input_dim,
            num_iterations,
            mlp_hidden,
            eps,
            ln_eps,
            init,
            implicit_grad,
            eval_iterations=eval_iterations,
        )
        self.frame, self.pose_dims = frame, pose_dims(frame)
        if self.pose_dims == 0:
            raise ValueError("InvariantSlotAttention needs a frame: 'translation' or 'translation_scale'")
        self.init_scale, self.min_scale, self.max_scale = init_scale, min_scale, max_scale
        self.scale_factor = scale_factor
        self.grid_proj = nn.Linear(2, dim)
        self.grid_mlp = nn.Sequential(nn.LayerNorm(dim, eps=ln_eps), SlotMLP(dim, grid_hidden))
        self.register_buffer("grid", position_grid(grid_size), persistent=False)

    def initial_poses(self, batch_size: int, num_slots: int, generator: torch.Generator | None = None) -> Tensor:
        """[B, K, P]: positions uniform in [-1, 1], then (with scales) ``init_scale``."""
        positions = torch.rand(batch_size, num_slots, 2, device=self.grid.device, generator=generator) * 2 - 1
        if self.pose_dims == 2:
            return positions
        return torch.cat([positions, torch.full_like(positions, self.init_scale)], dim=-1)

    def split(self, slots: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Posed slots [B, K, D + P] -> features [B, K, D], positions [B, K, 2], scales [B, K, 2] or None."""
        feats, pose = slots.split([slots.shape[-1] - self.pose_dims, self.pose_dims], dim=-1)
        return feats, pose[..., :2], (pose[..., 2:] if self.pose_dims == 4 else None)

    def attend(self, slots: Tensor, k: Tensor, v: Tensor, positions: Tensor, scales: Tensor | None):
        """One attention round in the slots' frames -> (updates [B, K, D], attn [B, N, K], positions, scales)."""
        rel = relative_grid(self.grid, positions, scales, self.scale_factor)  # [B, K, N, 2], float32
        emb = self.grid_proj(rel.to(self.grid_proj.weight.dtype))  # [B, K, N, D]
        k_rel = self.grid_mlp(k[:, None] + emb)  # every slot has its own keys and values
        v_rel = self.grid_mlp(v[:, None] + emb)
        q = self.to_q(self.norm_slots(slots)) * self.scale
        attn = torch.einsum("bknd,bkd->bnk", k_rel, q).softmax(dim=-1)  # slots compete for each input
        weights = self.mean_weights(attn)
        updates = torch.einsum("bnk,bknd->bkd", weights, v_rel)
        positions, scales = self.pose(weights, with_scale=scales is not None)
        return updates, attn, positions, scales

    def pose(self, weights: Tensor, with_scale: bool) -> tuple[Tensor, Tensor | None]:
        """weights [B, N, K] (summing to 1 over N) -> positions [B, K, 2] (centre of mass, in [-1, 1]) and scales
        [B, K, 2] (the spread around it, clipped) or None; in float32 whatever the autocast precision."""
        with torch.autocast(weights.device.type, enabled=False):
            weights = weights.float()
            positions = torch.einsum("bnk,nc->bkc", weights, self.grid)
            if not with_scale:
                return positions, None
            spread = (self.grid[None, None] - positions[:, :, None]).square()  # [B, K, N, 2]
            var = torch.einsum("bnk,bknc->bkc", weights, spread)
            return positions, var.clamp(self.min_scale**2, self.max_scale**2).sqrt()  # clamp first: sqrt'(0) = inf

    def forward(
        self,
        inputs: Tensor,
        num_slots: int | None = None,
        num_iterations: int | None = None,
        slots: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SlotAttentionOutput:
        """inputs [B, N, D_in] -> SlotAttentionOutput with posed slots [B, K, D + P] and attention
        [B, T + 1, N, K] (the last round places the final slots' frames: its attention is their segmentation)."""
        if inputs.shape[1] != self.grid.shape[0]:
            raise ValueError(f"{inputs.shape[1]} inputs, but the module was built for a grid of {self.grid.shape[0]}")
        num_slots, num_iterations = self.counts(num_slots, num_iterations, slots)
        if slots is None:
            feats = self.initial_slots(inputs.shape[0], num_slots, generator)
            slots = torch.cat([feats, self.initial_poses(inputs.shape[0], num_slots, generator).to(feats.dtype)], -1)
        elif slots.shape[-1] != self.dim + self.pose_dims or slots.shape[1] != num_slots:
            raise ValueError(
                f"slots must be [B, {num_slots}, {self.dim + self.pose_dims}] (features and pose), "
                f"got {list(slots.shape)}"
            )
        init_slots = slots
        feats, positions, scales = self.split(slots)
        positions = positions.float().clamp(-1, 1)
        scales = scales.float().clamp(self.min_scale, self.max_scale) if scales is not None else None

        x = self.norm_inputs(inputs)
        k, v = self.to_k(x), self.to_v(x)
        attns = []
        for it in range(num_iterations + 1):
            no_grad = self.implicit_grad and it < num_iterations - 1
            if self.implicit_grad and it == num_iterations - 1:  # as SlotAttention: straight through to the init
                init_feats = self.split(init_slots)[0]
                feats = feats.detach() + init_feats - init_feats.detach()
            with torch.set_grad_enabled(torch.is_grad_enabled() and not no_grad):
                updates, attn, positions, scales = self.attend(feats, k, v, positions, scales)
                if it < num_iterations:
                    feats = self.update(feats, updates)
            attns.append(attn)
        pose = [positions] if scales is None else [positions, scales]
        return SlotAttentionOutput(
            slots=torch.cat([feats, *pose], dim=-1), attn=torch.stack(attns, dim=1), init_slots=init_slots
        )
