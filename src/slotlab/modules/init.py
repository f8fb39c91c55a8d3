"""Weight initialisation schemes.

The official Slot Attention code is Keras: every Dense and Conv kernel starts Glorot-uniform with zero bias,
GRU recurrent kernels start orthogonal. PyTorch's defaults (Kaiming-uniform with a = sqrt(5), non-zero biases)
give about a third of that variance per layer, which makes the early phase of training markedly slower.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def keras_init_(module: nn.Module) -> nn.Module:
    """Re-initialise every Linear, Conv, ConvTranspose and GRUCell below ``module`` as Keras would."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GRUCell):
            # Keras: kernel [D_in, 3H] Glorot over the whole matrix, recurrent kernel [H, 3H] orthogonal
            # (PyTorch stores the transposes; the distributions are the same)
            nn.init.xavier_uniform_(m.weight_ih)
            nn.init.orthogonal_(m.weight_hh)
            nn.init.zeros_(m.bias_ih)
            nn.init.zeros_(m.bias_hh)
    return module
