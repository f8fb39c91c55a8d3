"""Training-step throughput of a preset: steps/s, images/s and peak memory, per speed switch.

    python benchmarks/train_speed.py tetrominoes_demo tetrominoes clevr6 --modes fp32 bf16 bf16+cl compile

Each mode times ``--steps`` full training steps (forward, MSE, backward, Adam) on random images after
``--warmup`` untimed ones. Modes: fp32, bf16 / fp16 (autocast), cl (channels-last), compile (torch.compile),
reduce-overhead (torch.compile in that mode, CUDA graphs on a GPU: what ``trainer.compile=reduce-overhead`` does),
graphs (CUDA only: the whole step, Adam included, captured once as one CUDA graph and replayed; the ceiling for
launch-bound models), ema (an exponential moving average of the weights after each step, 0.999, tensor by
tensor: Lightning's ``EMAWeightAveraging`` as it comes), ema-foreach (the same average in one foreach lerp over
all tensors; on the CPU demo no faster, so ``trainer.ema_decay`` keeps Lightning's), adam-foreach / adam-fused
(Adam's foreach or fused implementation; PyTorch's default on a CPU is one tensor at a time); combine with '+'. Peak
memory: CUDA allocator peak on GPU, process max RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn, get_ema_multi_avg_fn

from slotlab.config import load_config
from slotlab.models import SlotAutoencoder


def bench(preset: str, mode: str, steps: int, warmup: int, batch_size: int | None, device: str, overrides: list[str]) -> dict:
    cfg = load_config(preset, overrides)
    flags = set(mode.split("+"))
    torch.manual_seed(0)
    model = SlotAutoencoder(cfg.model).to(device)
    bs = batch_size or cfg.optim.batch_size
    r = cfg.model.resolution
    images = torch.rand(bs, 3, r, r, device=device) * 2 - 1
    if "cl" in flags:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    graphs = "graphs" in flags
    if graphs and not device.startswith("cuda"):
        raise SystemExit("train_speed.py: error: mode 'graphs' captures CUDA graphs and needs --device cuda")
    if "reduce-overhead" in flags:
        forward = torch.compile(model, mode="reduce-overhead")
    else:
        forward = torch.compile(model) if "compile" in flags else model
    implementation = {"foreach": True} if "adam-foreach" in flags else {"fused": True} if "adam-fused" in flags else {}
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, capturable=graphs, **implementation)
    dtype = torch.bfloat16 if "bf16" in flags else torch.float16 if "fp16" in flags else None
    if "ema" in flags:
        average = AveragedModel(model, use_buffers=True, avg_fn=get_ema_avg_fn(0.999))
    elif "ema-foreach" in flags:
        average = AveragedModel(model, use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    else:
        average = None

    def step():
        # no autocast weight cache under capture: cached casts would be tensors of the capture only
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None, cache_enabled=not graphs):
            loss = forward(images).loss
        if not graphs:  # a captured step leaves the gradients to the graph, which overwrites them on each replay
            opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average is not None:
            average.update_parameters(model)

    if graphs:  # warm up on a side stream, then capture forward, backward and Adam as one graph (PyTorch's recipe)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            step()
        step = graph.replay  # the images stay in place: a data loader would copy each batch into them

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"preset": preset, "mode": mode, "device": device, "batch_size": bs, "threads": torch.get_num_threads(),
            "steps_per_s": round(steps / seconds, 3), "images_per_s": round(steps * bs / seconds, 1),
            "peak_mem_mib": round(peak / 2**20, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("presets", nargs="+")
    p.add_argument("--modes", nargs="+", default=["fp32", "bf16", "bf16+cl"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. model.num_slots=5")
    a = p.parse_args()
    if a.device == "cpu":
        print(f"# cpu threads={torch.get_num_threads()}")
    else:
        print(f"# {torch.cuda.get_device_name()}")
    for preset in a.presets:
        for mode in a.modes:
            print(json.dumps(bench(preset, mode, a.steps, a.warmup, a.batch_size, a.device, a.set)), flush=True)


if __name__ == "__main__":
    main()
