"""Spatial broadcast decoder with alpha masks softmaxed across slots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.modules.position import RelativePositionEmbedding, SoftPositionEmbedding


@dataclass
class BroadcastDecoderOutput:
    reconstruction: Tensor  # [B, 3, H, W] sum_k rgb_k * alpha_k
    rgb: Tensor  # [B, K, 3, H, W] each slot's colours
    alpha: Tensor  # [B, K, 1, H, W] masks, softmax across slots (they sum to 1 at every pixel)


class _TransposedConv(torch.autograd.Function):
    """``F.conv_transpose2d`` whose backward takes the bias gradient as a sum over the output gradient.

    PyTorch's oneDNN backward of a transposed convolution computes the bias gradient far slower than that sum
    (``benchmarks/conv_layers.py clevr6 --mode bf16+cl`` on an AMD EPYC: 269 ms for the backward of CLEVR6's last
    transposed layer, 527 ms with the stock layer); the forward is the same call."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding, groups, dilation):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.settings = stride, padding, output_padding, groups, dilation
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, output_padding, groups, dilation = ctx.settings
        needs = ctx.needs_input_grad
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, stride, padding, dilation, True, output_padding, groups, [needs[0], needs[1], False]
        )
        grad_bias = grad.sum((0, 2, 3)) if needs[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class UpsamplingConv(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with a faster backward: the same parameters, state dict, outputs and gradients (the
    bias gradient summed in another order), through ``_TransposedConv``."""

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if self.bias is None or not torch.is_grad_enabled():
            return super().forward(input, output_size)
        stride, padding, dilation = self.stride, self.padding, self.dilation
        output_padding = self._output_padding(input, output_size, stride, padding, self.kernel_size, 2, dilation)  # type: ignore[arg-type]
        x, weight, bias = input, self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):  # cast as autocast would, so that the backward sees one dtype
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
        return _TransposedConv.apply(x, weight, bias, stride, padding, output_padding, self.groups, dilation)


class SpatialBroadcastDecoder(nn.Module):
    """Slots [B, K, D] -> image as a mixture of K per-slot (RGB, alpha) pictures.

    Each slot is tiled to a ``broadcast_size`` grid, gets a soft position embedding and goes through a CNN
    shared by all slots. A stride-1 layer is a "same" conv, a stride-2 layer a transposed conv that doubles
    the resolution. The paper's two forms:
      - full resolution (Multi-dSprites, Tetrominoes): broadcast at H, channels [32]*3, strides [1]*3;
      - upsampling (CLEVR6): broadcast at 8, channels [64]*5, strides [2, 2, 2, 2, 1].
    A final ``out_kernel_size`` conv maps to 4 channels: RGB and an alpha logit. With ``kernel_size`` 1 and
    ``pos_frequencies`` > 0 the decoder is a per-pixel MLP over the slot and Fourier position features.

    ``pose_dims`` 2 or 4: the slots are posed, ``[features (slot_dim), position (2), scale (2)]``, as Invariant
    Slot Attention gives them, and each slot is drawn on the grid of its own frame (relative position embedding)
    instead of the absolute one (``pose_scale_factor``: the encoder's ``scale_factor``).
    """

    def __init__(
        self,
        slot_dim: int,
        resolution: int,
        broadcast_size: int,
        channels: Sequence[int] = (32, 32, 32),
        strides: Sequence[int] | None = None,
        kernel_size: int = 5,
        out_kernel_size: int = 3,
        pos_frequencies: int = 0,
        pose_dims: int = 0,
        pose_scale_factor: float = 1.0,
    ):
        super().__init__()
        if pose_dims not in (0, 2, 4):
            raise ValueError(f"pose_dims must be 0, 2 or 4, got {pose_dims}")
        if pose_dims and pos_frequencies:
            raise ValueError("Fourier position bands are not available with slot frames (pose_dims > 0)")
        strides = list(strides) if strides is not None else [1] * len(channels)
        if len(strides) != len(channels):
            raise ValueError(f"{len(channels)} decoder channels but {len(strides)} strides")
        size = broadcast_size
        for s in strides:
            if s not in (1, 2):
                raise ValueError(f"decoder strides must be 1 or 2, got {s}")
            size *= s
        if size != resolution:
            raise ValueError(
                f"decoder outputs {size}x{size} (broadcast {broadcast_size}, strides {strides}) but the model works "
                f"at {resolution}"
            )
        self.broadcast_size, self.pose_dims = broadcast_size, pose_dims
        if pose_dims:
            self.pos: nn.Module = RelativePositionEmbedding(slot_dim, broadcast_size, pose_scale_factor)
        else:
            self.pos = SoftPositionEmbedding(slot_dim, (broadcast_size, broadcast_size), pos_frequencies)
        layers: list[nn.Module] = []
        in_ch = slot_dim
        for out_ch, stride in zip(channels, strides):
            pad = kernel_size // 2
            if stride == 1:
                layers.append(nn.Conv2d(in_ch, out_ch, kernel_size, padding=pad))
            else:
                layers.append(UpsamplingConv(in_ch, out_ch, kernel_size, 2, padding=pad, output_padding=1))
            layers.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        layers.append(nn.Conv2d(in_ch, 4, out_kernel_size, padding=out_kernel_size // 2))
        self.cnn = nn.Sequential(*layers)

    def first_layer(self, slots: Tensor) -> Tensor:
        """The first layer over the broadcast slots plus the position embedding, without running it B*K times.

        slots [N, D] -> [N, C, H', W']. The layer is linear and its input is ``slot (constant over the grid) +
        embedding (the same for every slot)``. On a constant map every kernel tap q either meets the grid or the
        padding, so the response is ``sum_q W[:, :, q] * taps[q]`` with ``taps`` [Q, H', W'] the 0/1 map of where
        tap q meets the grid. Each slot then costs two small matmuls (slot x weights -> [C, Q], then x taps)
        instead of a k x k convolution over the grid, and the embedding one pass of the layer: equal up to float
        rounding, the padding's border effects included."""
        layer: Any = self.cnn[0]
        weight: Tensor = layer.weight
        n, d = slots.shape
        taps = self.kernel_taps(layer, weight.dtype, weight.device)  # [Q, H', W']
        q, h, w = taps.shape
        if isinstance(layer, nn.ConvTranspose2d):  # weight [D, C, k, k]
            c = weight.shape[1]
            per_slot = weight.reshape(d, c * q)
        else:  # Conv2d, weight [C, D, k, k]
            c = weight.shape[0]
            per_slot = weight.reshape(c, d, q).transpose(0, 1).reshape(d, c * q)
        mixed = slots.to(weight.dtype) @ per_slot  # [N, C*Q]
        pos: Any = self.pos
        embedded = layer(pos.embedding().to(weight.dtype))  # [1, C, H', W'] with the layer's bias
        if embedded.is_contiguous(memory_format=torch.channels_last) and not embedded.is_contiguous():
            # a channels-last model: lay the output out [N, H', W', C] too, as the next layer reads it
            per_pixel = taps.reshape(q, h * w).T @ mixed.reshape(n, c, q).transpose(1, 2)  # [N, H'*W', C]
            out = per_pixel.reshape(n, h, w, c).permute(0, 3, 1, 2)
        else:
            out = (mixed.reshape(n * c, q) @ taps.reshape(q, h * w)).reshape(n, c, h, w)
        return out + embedded

    def kernel_taps(self, layer: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
        """[k*k, H', W'] 0/1: whether kernel tap q of ``layer`` meets the broadcast grid at output pixel (y, x)
        (the layer run on a ones map with one-hot kernels)."""
        kh, kw = layer.kernel_size
        s = self.broadcast_size
        ones = torch.ones(1, 1, s, s, dtype=dtype, device=device)
        one_hot = torch.eye(kh * kw, dtype=dtype, device=device)
        stride: Any = layer.stride
        padding: Any = layer.padding  # a tuple (the layers of this decoder never use Conv2d's "same")
        if isinstance(layer, nn.ConvTranspose2d):
            kernels = one_hot.reshape(1, kh * kw, kh, kw)
            taps = F.conv_transpose2d(ones, kernels, None, stride, padding, layer.output_padding)
        else:
            taps = F.conv2d(ones, one_hot.reshape(kh * kw, 1, kh, kw), None, stride, padding)
        return taps[0]

    def forward(self, slots: Tensor) -> BroadcastDecoderOutput:
        b, k, _ = slots.shape
        s = self.broadcast_size
        if self.pose_dims:
            feats, pose = slots.split([slots.shape[-1] - self.pose_dims, self.pose_dims], dim=-1)
            d = feats.shape[-1]
            x = feats.reshape(b, k, d, 1, 1).expand(-1, -1, -1, s, s)
            x = self.pos(x, pose[..., :2], pose[..., 2:] if self.pose_dims == 4 else None).reshape(b * k, d, s, s)
            out = self.cnn(x)  # [B*K, 4, H, W]
        else:
            out = self.cnn[1:](self.first_layer(slots.reshape(b * k, -1)))
        out = out.reshape(b, k, *out.shape[1:])
        rgb, alpha_logits = out.split([3, 1], dim=2)
        alpha = alpha_logits.float().softmax(dim=1).to(rgb.dtype)
        reconstruction = (rgb * alpha).sum(dim=1)
        return BroadcastDecoderOutput(reconstruction=reconstruction, rgb=rgb, alpha=alpha)
