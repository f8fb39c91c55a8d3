"""Convolutional feature extractors that turn images into a set of feature vectors."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from slotlab.modules.position import SoftPositionEmbedding
from slotlab.modules.slot_attention import SlotMLP


def conv_stack(in_channels: int, channels: Sequence[int], kernel_size: int, strides: Sequence[int]) -> nn.Sequential:
    """Conv k x k ("same" padding) + ReLU per entry of ``channels``; stride 2 halves the resolution."""
    if len(strides) != len(channels):
        raise ValueError(f"{len(channels)} conv channels but {len(strides)} strides")
    layers: list[nn.Module] = []
    for out_channels, stride in zip(channels, strides):
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


class FeatureEncoder(nn.Module):
    """A backbone's feature map [B, C, h, w] -> a set of features [B, N, D] (N = h * w).

    Soft position embedding, flatten, LayerNorm and MLP (Linear(C, D) ReLU Linear(D, D)), as in Slot Attention
    and LSD; the backbone is any module mapping images to a [B, C, h, w] map of side ``feature_size``.
    ``position_embedding=False`` leaves positions out (Invariant Slot Attention adds them per slot itself).
    """

    def __init__(
        self,
        backbone: nn.Module,
        channels: int,
        feature_size: int,
        out_dim: int = 64,
        ln_eps: float = 1e-3,
        pos_frequencies: int = 0,
        pixel_centres: bool = False,
        position_embedding: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.feature_size = feature_size
        self.pos = (
            SoftPositionEmbedding(channels, (feature_size, feature_size), pos_frequencies, pixel_centres)
            if position_embedding
            else nn.Identity()
        )
        self.norm = nn.LayerNorm(channels, eps=ln_eps)
        self.mlp = SlotMLP(channels, out_dim, out_dim)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix + "cnn.")]:  # weights saved before the rename
            state_dict[prefix + "backbone." + key[len(prefix) + 4 :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, images: Tensor) -> Tensor:
        h = self.pos(self.backbone(images))  # [B, C, h, w]
        h = h.flatten(2).transpose(1, 2)  # [B, N, C]
        return self.mlp(self.norm(h))


class CNNEncoder(FeatureEncoder):
    """Images [B, 3, H, W] -> features [B, N, D] (N = h * w after the strides).

    A stack of k x k convs + ReLU, then :class:`FeatureEncoder`'s position embedding, LayerNorm and MLP, as in
    the Slot Attention paper.
    """

    def __init__(
        self,
        resolution: int,
        channels: Sequence[int] = (64, 64, 64, 64),
        kernel_size: int = 5,
        strides: Sequence[int] | None = None,
        out_dim: int = 64,
        in_channels: int = 3,
        ln_eps: float = 1e-3,
        pos_frequencies: int = 0,
        pixel_centres: bool = False,
        position_embedding: bool = True,
    ):
        strides = list(strides) if strides is not None else [1] * len(channels)
        downsample = 1
        for s in strides:
            downsample *= s
        if resolution % downsample:
            raise ValueError(f"resolution {resolution} is not divisible by the encoder's total stride {downsample}")
        super().__init__(
            conv_stack(in_channels, channels, kernel_size, strides),
            channels[-1],
            resolution // downsample,
            out_dim,
            ln_eps,
            pos_frequencies,
            pixel_centres,
            position_embedding,
        )
