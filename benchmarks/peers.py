"""slotlab against its peers, side by side in one process: steps/s and the ratio slotlab / peer.

    python benchmarks/peers.py                      # every workload and switch, 2 threads
    python benchmarks/peers.py --workloads module --modes fp32 bf16 --rounds 7

Workloads (same sizes and batches on both sides, parameter counts printed):

- ``module``: Slot Attention alone, N 1024 inputs, K 7 slots, D 64, batch 64, 3 iterations, forward + backward;
  slotlab's ``SlotAttention`` against lucidrains' ``slot-attention`` (PyPI, the ``peers`` extra: ``pip install
  -e ".[peers]"``; skipped if absent) and against the transcription of the official code (benchmarks/official_model.py).
- ``tetrominoes``: a training step (forward, MSE, backward, Adam) of the paper's Tetrominoes model, batch 32, 32 px.
- ``clevr6``: a training step of the paper's CLEVR6 model, batch 8, 128 px.

For the training steps the peer is the plain transcription of the official TF2 model (the official code itself
needs TensorFlow); slotlab runs its preset's model. Modes are switches joined by ``+``: ``fp32`` or ``bf16``
(autocast), then ``cl`` (channels-last weights and images; only for the convolutional workloads) and ``compile``
(``torch.compile``), applied alike to every implementation. After the modes, a ``best`` line per workload sets
each implementation's fastest mode against the others' fastest.

Rounds are interleaved (every implementation once per round, in turn) and the median block is
reported. Timing on a busy machine is meaningless (PyTorch's OpenMP threads collapse when another process uses a
core), so the script refuses to start while the load is high and drops every block during which other processes
used more than ``--max-other`` of a core (read from /proc/stat against this process's own CPU time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_model import OfficialAutoencoder, OfficialSlotAttention
from quiet import Block, refuse_if_busy

MODES = ("fp32", "fp32+cl", "bf16", "bf16+cl", "bf16+compile", "bf16+cl+compile")


def switches(mode: str) -> tuple[bool, bool, bool]:
    """``mode`` -> (bf16 autocast, channels-last, compile)."""
    parts = mode.split("+")
    return parts[0] == "bf16", "cl" in parts, "compile" in parts


def train_step(model: torch.nn.Module, loss_of: Callable[[], torch.Tensor], bf16: bool) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_of()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def module_workload(compile_: bool, per_iteration: bool = False) -> dict[str, tuple[torch.nn.Module, Callable]]:
    from slotlab.modules import SlotAttention

    b, n, k, d = 64, 1024, 7, 64
    x = torch.randn(b, n, d)
    models: dict[str, torch.nn.Module] = {"slotlab": SlotAttention(k, d, num_iterations=3),
                                          "official": OfficialSlotAttention(k, d, iters=3)}
    if per_iteration:  # slotlab with the inputs' gradient summed iteration by iteration (the A/B of that switch)
        models["slotlab-per-iteration"] = SlotAttention(k, d, num_iterations=3)
        models["slotlab-per-iteration"].fused_input_gradient = False
    try:
        from slot_attention import SlotAttention as Lucidrains

        models["lucidrains"] = Lucidrains(k, d, iters=3)
    except ImportError:
        print("lucidrains' slot-attention is not installed (pip install -e '.[peers]'): skipped", flush=True)
    out = {}
    for name, m in models.items():
        fn = torch.compile(m) if compile_ else m

        def loss(fn=fn):
            o = fn(x)
            return (o.slots if hasattr(o, "slots") else o).square().mean()

        out[name] = (m, loss)
    return out


def autoencoder_workload(
    preset: str, batch: int, channels_last: bool, compile_: bool
) -> dict[str, tuple[torch.nn.Module, Callable]]:
    from slotlab.config import load_config
    from slotlab.models import SlotAutoencoder

    config = load_config(preset).model
    r = config.resolution
    images = torch.rand(batch, 3, r, r) * 2 - 1
    ours = SlotAutoencoder(config)
    official = OfficialAutoencoder(r, config.num_slots, config.encoder_channels[0],
                                   "clevr" if preset == "clevr6" else "full")
    if channels_last:
        ours, official = ours.to(memory_format=torch.channels_last), official.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    ours_fn = torch.compile(ours.forward) if compile_ else ours.forward
    official_fn = torch.compile(official) if compile_ else official
    return {"slotlab": (ours, lambda: ours_fn(images).loss), "official": (official, lambda: official_fn(images))}


WORKLOADS = {
    "module": lambda cl, c, per_iteration=False: module_workload(c, per_iteration),
    "tetrominoes": lambda cl, c: autoencoder_workload("tetrominoes", 32, cl, c),
    "clevr6": lambda cl, c: autoencoder_workload("clevr6", 8, cl, c),
}
STEPS = {"module": 5, "tetrominoes": 5, "clevr6": 2}


def best_line(workload: str, results: dict) -> dict:
    """Each implementation's fastest mode of ``workload`` and slotlab's ratio against the others' fastest."""
    best: dict[str, tuple[float, str]] = {}
    for key, row in results.items():
        w, mode = key.split("/")
        for name, rate in row["steps_per_s"].items():
            if w == workload and rate == rate and rate > best.get(name, (0.0, ""))[0]:  # rate == rate: not NaN
                best[name] = (rate, mode)
    ratios = {f"slotlab/{n}": best["slotlab"][0] / r for n, (r, _) in best.items() if n != "slotlab"}
    return {"steps_per_s": {n: r for n, (r, _) in best.items()}, "modes": {n: m for n, (_, m) in best.items()},
            "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-other", type=float, default=0.15, help="cores other processes may use during a block")
    p.add_argument("--out", type=Path, help="also write the results as JSON")
    p.add_argument("--per-iteration", action="store_true",
                   help="module workload: also time slotlab with the inputs' gradient summed per iteration "
                        "(SlotAttention.fused_input_gradient off)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = refuse_if_busy(args.max_other)
    if load is None:
        return 2
    print(f"torch {torch.__version__}, {args.threads} threads, other processes at start: {load:.2f} cores", flush=True)
    results: dict = {}
    for workload in args.workloads:
        for mode in args.modes:
            bf16, channels_last, compile_ = switches(mode)
            if channels_last and workload == "module":
                continue  # no convolutions: channels-last changes nothing
            torch.manual_seed(0)
            extra = {"per_iteration": True} if workload == "module" and args.per_iteration else {}
            impls = WORKLOADS[workload](channels_last, compile_, **extra)
            blocks = {}
            try:
                for name, (model, loss) in impls.items():
                    step = train_step(model, loss, bf16)
                    step()  # warm-up (and compilation)
                    step()
                    blocks[name] = Block(step, STEPS[workload])
            except Exception as error:  # e.g. torch.compile failing on one implementation: say so, time the rest
                print(f"{workload:12s} {mode:15s}  failed: {type(error).__name__}: {str(error).splitlines()[0]}",
                      flush=True)
                continue
            rates: dict[str, list[float]] = {name: [] for name in blocks}
            dropped = 0
            for _ in range(args.rounds):
                for name, block in blocks.items():
                    rate, others = block.run()
                    if others > args.max_other:
                        dropped += 1
                        continue
                    rates[name].append(rate)
            medians = {name: statistics.median(r) if r else float("nan") for name, r in rates.items()}
            params = {name: sum(q.numel() for q in m.parameters()) for name, (m, _) in impls.items()}
            row = {"steps_per_s": medians, "params": params, "blocks_dropped": dropped,
                   "ratios": {f"slotlab/{n}": medians["slotlab"] / medians[n] for n in medians if n != "slotlab"}}
            results[f"{workload}/{mode}"] = row
            ratios = "  ".join(f"{k} {v:.2f}x" for k, v in row["ratios"].items())
            speeds = "  ".join(f"{n} {v:.2f}" for n, v in medians.items())
            print(f"{workload:12s} {mode:15s}  steps/s: {speeds}  |  {ratios}  (params {params}, "
                  f"{dropped} blocks dropped)", flush=True)
        if any(key.startswith(workload + "/") for key in results):
            best = results[f"{workload}/best"] = best_line(workload, results)
            speeds = "  ".join(f"{n} {v:.2f} ({best['modes'][n]})" for n, v in best["steps_per_s"].items())
            ratios = "  ".join(f"{k} {v:.2f}x" for k, v in best["ratios"].items())
            print(f"{workload:12s} {'best':15s}  steps/s: {speeds}  |  {ratios}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
