"""A plain PyTorch transcription of the official Slot Attention object-discovery model (TF2/Keras code of
Locatello et al. 2020), written from the algorithm as published (shared/BRIEF.md sections 1-2), with no speed work:
the reference that benchmarks/peers.py times slotlab against. Layouts follow the official code: attention logits
[B, N, K] (``einsum("bid,bjd->bij", k, q)``) with the softmax over the last axis (the slots), decoders over
B * K broadcast images, alpha softmax over the slots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def build_grid(res: int) -> torch.Tensor:
    """[1, 4, res, res]: (y, x, 1 - y, 1 - x) from linspace(0, 1), as the official ``build_grid``."""
    r = torch.linspace(0.0, 1.0, res)
    y, x = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([y, x, 1 - y, 1 - x])[None]


class SoftPositionEmbed(nn.Module):
    def __init__(self, hidden: int, res: int):
        super().__init__()
        self.dense = nn.Linear(4, hidden)
        self.register_buffer("grid", build_grid(res))

    def forward(self, x):  # [B, C, H, W]
        return x + self.dense(self.grid.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class OfficialSlotAttention(nn.Module):
    def __init__(self, num_slots: int, dim: int, iters: int = 3, mlp_hidden: int = 128, eps: float = 1e-8):
        super().__init__()
        self.num_slots, self.iters, self.eps, self.dim = num_slots, iters, eps, dim
        self.norm_inputs, self.norm_slots, self.norm_mlp = (nn.LayerNorm(dim, eps=1e-3) for _ in range(3))
        self.slots_mu = nn.Parameter(torch.empty(1, 1, dim).uniform_(-0.3, 0.3))
        self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, dim).uniform_(-0.3, 0.3))
        self.project_q = nn.Linear(dim, dim, bias=False)
        self.project_k = nn.Linear(dim, dim, bias=False)
        self.project_v = nn.Linear(dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, dim))

    def forward(self, inputs):  # [B, N, D]
        inputs = self.norm_inputs(inputs)
        k, v = self.project_k(inputs), self.project_v(inputs)
        b = inputs.shape[0]
        slots = self.slots_mu + self.slots_log_sigma.exp() * torch.randn(b, self.num_slots, self.dim)
        for _ in range(self.iters):
            slots_prev = slots
            q = self.project_q(self.norm_slots(slots)) * self.dim**-0.5
            attn = torch.einsum("bid,bjd->bij", k, q).softmax(dim=-1)  # [B, N, K], softmax over the slots
            attn = attn + self.eps
            attn = attn / attn.sum(dim=-2, keepdim=True)
            updates = torch.einsum("bij,bid->bjd", attn, v)
            slots = self.gru(updates.reshape(-1, self.dim), slots_prev.reshape(-1, self.dim)).reshape(b, -1, self.dim)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots


class OfficialAutoencoder(nn.Module):
    """``decoder="full"``: broadcast at the image size, 3 x conv 5x5 (Multi-dSprites, Tetrominoes); ``"clevr"``:
    broadcast at 8x8, 4 x transposed conv 5x5 stride 2, transposed conv 5x5, conv 3x3 (CLEVR6)."""

    def __init__(self, resolution: int, num_slots: int, channels: int, decoder: str, hidden: int = 64):
        super().__init__()
        self.resolution, self.num_slots, self.hidden = resolution, num_slots, hidden
        self.encoder = nn.Sequential(*[m for i in range(4) for m in (nn.Conv2d(3 if i == 0 else channels, channels, 5,
                                                                                padding=2), nn.ReLU())])
        self.enc_pos = SoftPositionEmbed(channels, resolution)
        self.norm = nn.LayerNorm(channels, eps=1e-3)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.slot_attention = OfficialSlotAttention(num_slots, hidden)
        if decoder == "full":
            self.broadcast = resolution
            layers = [nn.Conv2d(hidden, channels, 5, padding=2), nn.ReLU(), nn.Conv2d(channels, channels, 5, padding=2),
                      nn.ReLU(), nn.Conv2d(channels, channels, 5, padding=2), nn.ReLU(),
                      nn.Conv2d(channels, 4, 3, padding=1)]
        else:
            self.broadcast = 8
            layers = []
            c = hidden
            for _ in range(4):
                layers += [nn.ConvTranspose2d(c, 64, 5, 2, padding=2, output_padding=1), nn.ReLU()]
                c = 64
            layers += [nn.ConvTranspose2d(64, 64, 5, 1, padding=2), nn.ReLU(), nn.ConvTranspose2d(64, 4, 3, 1, padding=1)]
        self.dec_pos = SoftPositionEmbed(hidden, self.broadcast)
        self.decoder = nn.Sequential(*layers)

    def forward(self, image):  # [B, 3, H, W] in [-1, 1]
        b = image.shape[0]
        x = self.enc_pos(self.encoder(image))
        x = self.mlp(self.norm(x.flatten(2).transpose(1, 2)))  # [B, N, D]
        slots = self.slot_attention(x)  # [B, K, D]
        s = self.broadcast
        x = slots.reshape(-1, self.hidden, 1, 1).expand(-1, -1, s, s)  # spatial broadcast
        x = self.decoder(self.dec_pos(x)).reshape(b, self.num_slots, 4, *image.shape[-2:])
        recons, masks = x.split([3, 1], dim=2)
        masks = masks.softmax(dim=1)
        recon = (recons * masks).sum(dim=1)
        return F.mse_loss(recon, image)
