"""Where an object-discovery training step spends its time, by part and by operator (torch.profiler, CPU).

    python benchmarks/profile_step.py tetrominoes --batch-size 32            # the paper's Tetrominoes model
    python benchmarks/profile_step.py tetrominoes_demo --mode bf16+cl

The step is the real one (forward, MSE, backward, Adam) on random images. Parts are timed with
``record_function`` ranges around the model's pieces (encoder, Slot Attention, broadcast decoder, alpha
recombination, loss, backward, optimizer), forward only for the ranges inside the model; backward is one range
(the autograd engine does not keep the forward's ranges). The table of operators is torch.profiler's, sorted by
self CPU time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quiet import refuse_if_busy
from slotlab.config import load_config
from slotlab.models import SlotAutoencoder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--mode", default="fp32", help="fp32, bf16, cl, or a '+' combination")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if refuse_if_busy(0.3) is None:
        return 2

    cfg = load_config(args.preset)
    flags = set(args.mode.split("+"))
    torch.manual_seed(0)
    model = SlotAutoencoder(cfg.model)
    batch = args.batch_size or cfg.optim.batch_size
    r = cfg.model.resolution
    images = torch.rand(batch, 3, r, r) * 2 - 1
    if "cl" in flags:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if "bf16" in flags else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            with record_function("encoder"):
                features = model.encoder(images)
            with record_function("slot_attention"):
                slots = model.slot_attention(features).slots
            with record_function("decoder (CNN over B x K, alpha softmax, recombination)"):
                dec = model.decode(slots)
            with record_function("loss"):
                loss = torch.mean((dec.reconstruction.float() - images.float()) ** 2)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            with record_function("step"):
                step()
    events = {e.key: e for e in prof.key_averages()}
    total = events["step"].cpu_time_total
    print(f"{args.preset}, batch {batch}, {args.mode}, {args.threads} threads: {total / args.steps / 1e3:.1f} ms a step")
    print("| part | ms a step | share |\n|---|---|---|")
    parts = ["encoder", "slot_attention", "decoder (CNN over B x K, alpha softmax, recombination)", "loss", "backward", "optimizer"]
    for part in parts:
        t = events[part].cpu_time_total
        print(f"| {part} | {t / args.steps / 1e3:.1f} | {t / total:.0%} |")
    print()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
