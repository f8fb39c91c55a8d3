"""The Slot MLP baseline of the Slot Attention paper: no attention, no iterations; an MLP maps the encoder's pooled
features to K slot vectors. It shows what Slot Attention's competition buys (paper, Tetrominoes FG-ARI: 99.5
with Slot Attention, 25.1 with the Slot MLP).

Shapes: B batch, N inputs, D_in input width, K slots, D slot width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slotlab.modules.slot_attention import SlotAttentionOutput


class SlotMLPBaseline(nn.Module):
    """inputs [B, N, D_in] -> LayerNorm, mean over N -> MLP (two hidden layers of ``hidden``) -> slots [B, K, D].

    It returns a :class:`SlotAttentionOutput` so models take it where they take Slot Attention; its ``attn`` is
    uniform (1 / K everywhere: the baseline attends to nothing), so segment with the decoder's masks."""

    def __init__(self, num_slots: int, dim: int, input_dim: int | None = None, hidden: int = 512, ln_eps: float = 1e-3):
        super().__init__()
        input_dim = input_dim or dim
        self.num_slots, self.dim = num_slots, dim
        self.norm = nn.LayerNorm(input_dim, eps=ln_eps)
        self.mlp = nn.Sequential(
            nn.Linear(input_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_slots * dim),
        )

    fixed_num_slots = True  # the MLP's last layer makes exactly K slots

    def forward(
        self,
        inputs: Tensor,
        num_slots: int | None = None,
        num_iterations: int | None = None,
        slots: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SlotAttentionOutput:
        if num_slots not in (None, self.num_slots):
            raise ValueError(f"the Slot MLP makes exactly {self.num_slots} slots, got num_slots={num_slots}")
        b, n, _ = inputs.shape
        out = self.mlp(self.norm(inputs).mean(dim=1)).reshape(b, self.num_slots, self.dim)
        attn = torch.full((b, 1, n, self.num_slots), 1.0 / self.num_slots, device=inputs.device, dtype=out.dtype)
        return SlotAttentionOutput(slots=out, attn=attn, init_slots=out)
