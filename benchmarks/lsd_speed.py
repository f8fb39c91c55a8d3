"""Latent Slot Diffusion: training steps/s and peak memory per speed switch, and sampling images/s.

    python benchmarks/lsd_speed.py --preset lsd_demo --modes fp32 bf16 bf16+compile --sample-steps 25 50
    python benchmarks/lsd_speed.py --preset lsd_movi_e --batch-size 32 --modes fp16 fp16+vae bf16   # on a GPU
    python benchmarks/lsd_speed.py --preset lsd_demo --modes bf16 --set model.decoder_heads=1     # overrides

Training: forward (encoder, Slot Attention, noised latents, UNet) + epsilon MSE + backward + grad-norm clip 1.0 +
AdamW on random images and latents. Modes combine with '+': fp32, fp16 (autocast + GradScaler), bf16, cl
(channels-last weights and images), compile (torch.compile of the forward), vae (the official training loop: images are encoded every step by a frozen
autoencoder of the Stable Diffusion VAE's architecture, random weights, instead of coming in as cached latents).

``--profile N``: after a mode's timing, N more steps under torch.profiler, and its table of operators by self time.

Sampling: slots -> latents by DPM-Solver++ for each step count, at ``--sample-precision``; ``--sample-decode``
adds the SD-architecture VAE decode to the time; ``--sample-reference`` also times the bare diffusers UNet of the
same configuration (default attention processors, no position embeddings), the decoder the official code wraps.
Peak memory: CUDA allocator peak on GPU, process max RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from slotlab.config import load_config
from slotlab.models.image_autoencoder import ImageAutoencoder, ImageAutoencoderConfig
from slotlab.models.lsd import LatentSlotDiffusion

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def sd_vae_architecture(resolution: int, latent_size: int) -> ImageAutoencoder:
    """The Stable Diffusion KL-f8 VAE's architecture (128/256/512/512, 2 layers, 4 latent channels; fewer levels
    where the preset's latents are less downsampled), random weights: for timing, no download."""
    levels = (resolution // latent_size).bit_length()  # f = 8 -> 4 levels
    return ImageAutoencoder(ImageAutoencoderConfig(resolution=resolution, block_out_channels=[128, 256, 512, 512][:levels],
                                                   layers_per_block=2, latent_channels=4, norm_num_groups=32,
                                                   scaling_factor=0.18215))


def _dtype(flags: set[str]):
    return torch.bfloat16 if "bf16" in flags else torch.float16 if "fp16" in flags else None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_train(model, cfg, mode: str, batch: int, steps: int, warmup: int, device: str, profile: int = 0) -> dict:
    flags = set(mode.split("+"))
    dtype = _dtype(flags)
    c = cfg.model
    images = torch.rand(batch, 3, c.resolution, c.resolution, device=device) * 2 - 1
    latents = torch.randn(batch, c.latent_channels, c.latent_size, c.latent_size, device=device)
    if "cl" in flags:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    vae = sd_vae_architecture(c.resolution, c.latent_size).to(device).eval().requires_grad_(False) if "vae" in flags else None
    forward = torch.compile(model.forward) if "compile" in flags else model.forward
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    scaler = torch.amp.GradScaler(enabled=dtype is torch.float16 and device.startswith("cuda"))

    def step():
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            if vae is not None:
                with torch.no_grad():
                    z = vae.encode(images)
            loss = forward(images, z if vae is not None else latents).loss
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    s = time.perf_counter() - start
    result = {"bench": "train", "mode": mode, "batch": batch, "steps_per_s": round(steps / s, 3),
              "images_per_s": round(steps * batch / s, 1), "peak_mib": round(_peak_mib(device))}
    if profile:  # after the peak memory is read: the profiler's own memory is not the step's
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        gpu = device.startswith("cuda")
        with profiler(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if gpu else [])]) as prof:
            for _ in range(profile):
                step()
            _sync(device)
        print(f"{mode}: {profile} steps under torch.profiler")
        print(prof.key_averages().table(sort_by="self_cuda_time_total" if gpu else "self_cpu_time_total", row_limit=12))
    return result


@torch.no_grad()
def bench_sample(model, cfg, steps: int, batch: int, device: str, dtype, vae=None) -> dict:
    c = cfg.model
    slots = torch.randn(batch, c.num_slots, c.slot_dim, device=device)

    def sample():
        latents = model.generate(slots, steps=steps)
        return vae.decode(latents) if vae is not None else latents

    with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
        model.generate(slots, steps=2)
        _sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        sample()
        _sync(device)
    s = time.perf_counter() - start
    return {"bench": "sample", "sampler": "dpm", "steps": steps, "batch": batch, "decode": vae is not None,
            "images_per_s": round(batch / s, 2), "peak_mib": round(_peak_mib(device))}


def bench_autoencoder(preset: str, modes: list[str], steps: int, warmup: int, device: str, info: dict) -> None:
    from slotlab.models.image_autoencoder import ImageAutoencoder

    cfg = load_config(preset)
    r, batch = cfg.model.resolution, cfg.optim.batch_size
    images = torch.rand(batch, 3, r, r, device=device) * 2 - 1
    for mode in modes:
        dtype = _dtype(set(mode.split("+")))
        torch.manual_seed(0)
        ae = ImageAutoencoder(cfg.model).to(device)
        opt = torch.optim.Adam(ae.parameters(), lr=1e-4)

        def step():
            with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                loss = ae(images).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(warmup):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        s = time.perf_counter() - start
        print(json.dumps(info | {"preset": preset, "bench": "train", "mode": mode, "batch": batch,
                                 "steps_per_s": round(steps / s, 3), "images_per_s": round(steps * batch / s, 1),
                                 "peak_mib": round(_peak_mib(device))}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="lsd_demo")
    p.add_argument("--modes", nargs="*", default=["fp32", "bf16"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="then profile N training steps of each mode (on the CPU, the peak memory of later modes then "
                        "counts the profiler's)")
    p.add_argument("--sample-steps", type=int, nargs="*", default=[25, 50])
    p.add_argument("--sample-batch", type=int, default=8)
    p.add_argument("--sample-precision", choices=["auto", *DTYPES], default="auto",
                   help="auto: bf16 on a GPU when a bf16 mode is timed, else fp32")
    p.add_argument("--sample-decode", action="store_true", help="include the SD-architecture VAE decode")
    p.add_argument("--sample-reference", action="store_true",
                   help="also time the bare diffusers UNet (no position embeddings) of the same configuration")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--autoencoder", help="also time training steps of this autoencoder preset (e.g. autoencoder_demo)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides of the preset, e.g. model.decoder_heads=1")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, args.set)
    batch = args.batch_size or cfg.optim.batch_size
    info = {"preset": args.preset, **({"set": args.set} if args.set else {}), "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    for mode in args.modes:
        torch.manual_seed(0)
        model = LatentSlotDiffusion(cfg.model).to(args.device).train()
        print(json.dumps(info | bench_train(model, cfg, mode, batch, args.steps, args.warmup, args.device, args.profile)), flush=True)
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.autoencoder:
        bench_autoencoder(args.autoencoder, args.modes, args.steps, args.warmup, args.device, info)
    if not args.sample_steps:
        return
    model = LatentSlotDiffusion(cfg.model).to(args.device).eval()
    if args.sample_precision == "auto":
        dtype = torch.bfloat16 if any("bf16" in m for m in args.modes) and args.device != "cpu" else None
    else:
        dtype = DTYPES[args.sample_precision]
    vae = sd_vae_architecture(cfg.model.resolution, cfg.model.latent_size).to(args.device).eval() if args.sample_decode else None
    precision = {"precision": next(k for k, v in DTYPES.items() if v is dtype)}
    for steps in args.sample_steps:
        print(json.dumps(info | precision | bench_sample(model, cfg, steps, args.sample_batch, args.device, dtype, vae)),
              flush=True)
    if args.sample_reference:  # the same UNet with diffusers' default attention: no position embeddings
        from diffusers.models.attention_processor import AttnProcessor2_0

        model.decoder.unet.set_attn_processor(AttnProcessor2_0())
        for steps in args.sample_steps:
            print(json.dumps(info | precision | {"decoder": "bare diffusers UNet"}
                             | bench_sample(model, cfg, steps, args.sample_batch, args.device, dtype, vae)), flush=True)


if __name__ == "__main__":
    main()
