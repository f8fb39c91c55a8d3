"""Each convolution of an object-discovery preset's training step, timed alone: ms and GFLOP/s, forward and backward.

    python benchmarks/conv_layers.py clevr6 --batch-size 8 --mode fp32+cl
    python benchmarks/conv_layers.py tetrominoes_demo --mode bf16+cl

The layers are the ones a real forward pass of the preset's model calls (found with forward hooks, so a layer the
model computes another way, such as the broadcast decoder's first, is not listed), at the shapes it calls them with.
Each is timed alone on random inputs: the forward, then forward + backward (input gradient where the step needs
one, weight and bias gradients) less the forward. GFLOP/s counts two operations per multiply-add of the direct
algorithm. The last lines set the sum against the time the same arithmetic takes at the best rate any layer
reached: how much a faster convolution kernel could save, next to how much needs less arithmetic. For the
decoder's transposed layers the last column times the backward of a stock ``nn.ConvTranspose2d`` with the same
weights, whose bias gradient oneDNN computes (slotlab's ``UpsamplingConv`` takes it as a sum over the output
gradient).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quiet import refuse_if_busy
from slotlab.config import load_config
from slotlab.models import SlotAutoencoder
from slotlab.modules.decoders import UpsamplingConv

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def called_convs(model: nn.Module, images: torch.Tensor) -> list[tuple[str, nn.Module, torch.Size]]:
    """(name, layer, input shape) for each convolution a forward pass calls, in the order it calls them."""
    calls: list[tuple[str, nn.Module, torch.Size]] = []
    handles = [
        m.register_forward_hook(lambda m, args, out, name=name: calls.append((name, m, args[0].shape)))
        for name, m in model.named_modules()
        if isinstance(m, CONVS)
    ]
    model(images)
    for h in handles:
        h.remove()
    return calls


def multiply_adds(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    taps = layer.weight[0, 0].numel()
    if isinstance(layer, nn.ConvTranspose2d):  # every input pixel scatters into out_channels x taps outputs
        return x.numel() * layer.out_channels * taps // layer.groups
    return y.numel() * layer.in_channels * taps // layer.groups


def time_layer(layer: nn.Module, shape: torch.Size, needs_grad: bool, bf16: bool, cl: bool, repeats: int):
    """-> (forward s, backward s, forward GFLOP, backward GFLOP)."""
    fmt = torch.channels_last if cl else torch.contiguous_format
    layer = layer.to(memory_format=fmt)
    x = torch.randn(shape).contiguous(memory_format=fmt).requires_grad_(needs_grad)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = layer(x)
    grad = torch.randn_like(y)

    def forward():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return layer(x)

    def both():
        forward().backward(grad)

    def seconds(fn) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t) / repeats

    with torch.no_grad():
        fwd = seconds(forward)
    bwd = max(seconds(both) - fwd, 1e-9)
    gflop = 2 * multiply_adds(layer, x, y) / 1e9
    return fwd, bwd, gflop, gflop * (2 if needs_grad else 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--mode", default="fp32", help="fp32 or bf16, with +cl for channels-last")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if refuse_if_busy(0.3) is None:
        return 2
    flags = set(args.mode.split("+"))
    cfg = load_config(args.preset)
    torch.manual_seed(0)
    model = SlotAutoencoder(cfg.model)
    batch = args.batch_size or cfg.optim.batch_size
    images = torch.rand(batch, 3, cfg.model.resolution, cfg.model.resolution) * 2 - 1
    with torch.no_grad():
        calls = called_convs(model, images)
    # the step needs no gradient of the images (the first encoder layer's input); every other input is an activation
    layers = [(name, m, shape, i > 0) for i, (name, m, shape) in enumerate(calls)]

    print(f"{args.preset}, batch {batch}, {args.mode}, {args.threads} threads")
    print(
        "| layer | input | forward ms | GFLOP/s | backward ms | GFLOP/s | stock nn.ConvTranspose2d backward ms |\n"
        "|---|---|---|---|---|---|---|"
    )
    rows = []
    for name, layer, shape, needs_grad in layers:
        fwd, bwd, gf_fwd, gf_bwd = time_layer(layer, shape, needs_grad, "bf16" in flags, "cl" in flags, args.repeats)
        rows.append((fwd, bwd, gf_fwd, gf_bwd))
        kind, stock_ms = "", "-"
        if isinstance(layer, nn.ConvTranspose2d):
            kind = "T"
            if isinstance(layer, UpsamplingConv):
                stock = nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                           layer.padding, layer.output_padding, bias=layer.bias is not None)  # fmt: skip
                stock.load_state_dict(layer.state_dict())
                _, stock_bwd, _, _ = time_layer(stock, shape, needs_grad, "bf16" in flags, "cl" in flags, args.repeats)
                stock_ms = f"{stock_bwd * 1e3:.1f}"
        print(
            f"| {name} {kind}{layer.weight.shape[-1]}x{layer.weight.shape[-2]} | {list(shape)} | {fwd * 1e3:.1f} | "
            f"{gf_fwd / fwd:.0f} | {bwd * 1e3:.1f} | {gf_bwd / bwd:.0f} | {stock_ms} |"
        )
    total = sum(f + b for f, b, _, _ in rows)
    flops = sum(gf + gb for _, _, gf, gb in rows)
    best = max(max(gf / f, gb / b) for f, b, gf, gb in rows)
    print(
        f"convolutions: {total:.3f} s for {flops:.1f} GFLOP ({flops / total:.0f} GFLOP/s); "
        f"at the best rate measured ({best:.0f} GFLOP/s) the same arithmetic takes {flops / best:.3f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
