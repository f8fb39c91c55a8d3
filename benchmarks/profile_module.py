"""Where a forward + backward pass of Slot Attention alone spends its time (torch.profiler, CPU).

    python benchmarks/profile_module.py --mode bf16+compile
    python benchmarks/profile_module.py --mode fp32 --batch-size 64 --inputs 1024

The workload is ``benchmarks/peers.py``'s ``module`` one: N inputs of width D, K slots, 3 iterations, the loss the
mean square of the slots. It prints the steps/s of an unprofiled stretch, then torch.profiler's table of operators
sorted by self CPU time over ``--steps`` profiled passes, and the share of the step in batched matmuls (``bmm``)
and, when compiled, in inductor's generated kernels (the ``CompiledFxGraph`` rows' self time).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import profile

from slotlab.modules import SlotAttention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="fp32", help="fp32 or bf16, optionally +compile")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--inputs", type=int, default=1024)
    parser.add_argument("--slots", type=int, default=7)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module = SlotAttention(args.slots, args.dim, num_iterations=3)
    x = torch.randn(args.batch_size, args.inputs, args.dim)
    forward = torch.compile(module) if "compile" in args.mode else module
    bf16 = "bf16" in args.mode

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            slots = forward(x).slots
        slots.float().square().mean().backward()

    for _ in range(5):  # warm-up (and the compile)
        step()
    start = time.perf_counter()
    for _ in range(4 * args.steps):
        step()
    rate = 4 * args.steps / (time.perf_counter() - start)
    print(
        f"Slot Attention, B {args.batch_size} N {args.inputs} K {args.slots} D {args.dim}, {args.mode}, "
        f"{args.threads} threads: {rate:.2f} steps/s ({1000 / rate:.1f} ms a step, unprofiled)"
    )

    with profile() as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    per_step = {e.key: e.self_cpu_time_total / 1000 / args.steps for e in events}  # ms
    total = sum(per_step.values())
    bmm = per_step.get("aten::bmm", 0.0)
    generated = sum(v for k, v in per_step.items() if "CompiledFxGraph" in k)
    print(
        f"profiled: {total:.1f} ms a step; aten::bmm {bmm:.1f} ms ({bmm / total:.0%})"
        + (f"; inductor's kernels {generated:.1f} ms ({generated / total:.0%})" if generated else "")
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
