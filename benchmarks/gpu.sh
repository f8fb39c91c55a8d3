#!/usr/bin/env bash
# Every GPU row of docs/benchmarks.md, JSON lines on stdout, then a short end-to-end object-discovery demo on the GPU
# (written to gpu-demo, or $OUT). Each command has its own time limit, so one that fails or runs long does not stop
# the rest. Run from the repository root with slotlab importable.
#
#     bash benchmarks/gpu.sh                 # every part (about 20 minutes at the limits)
#     bash benchmarks/gpu.sh graphs demo     # only these parts: lsd, od, compile, graphs, demo
#
# The parts, each under 10 minutes at its limits: lsd (Latent Slot Diffusion training and sampling, about 6 min), od
# (the object-discovery and set-prediction presets, 3 min), compile (torch.compile, 4 min), graphs (CUDA graphs for
# the launch-bound small presets, issue 22: Tetrominoes >= 150 steps/s at batch 64; 4.5 min), demo (2.5 min).
set -u
out=${OUT:-gpu-demo}
py=${PYTHON:-python3}
parts=${*:-lsd od compile graphs demo}
run() { local limit=$1; shift; echo "## $*"; timeout "$limit" "$py" "$@" || echo "## exit $? (limit ${limit}s)"; }
want() { [[ " $parts " == *" $1 "* ]]; }
for part in $parts; do
  case $part in lsd|od|compile|graphs|demo) ;; *) echo "gpu.sh: error: unknown part '$part' (lsd od compile graphs demo)" >&2; exit 2;; esac
done

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c "import torch, diffusers, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'lightning', lightning.__version__)"

if want lsd; then
  # Latent Slot Diffusion, official MOVi-E settings per GPU (batch 32, fp16): cached latents, the VAE in the loop, bf16
  run 150 benchmarks/lsd_speed.py --preset lsd_movi_e --batch-size 32 --modes fp16 fp16+vae bf16 --steps 10 --warmup 3 --sample-steps
  # the whole batch of 128 on one GPU
  run 60 benchmarks/lsd_speed.py --preset lsd_movi_e --batch-size 128 --modes fp16 --steps 4 --warmup 2 --sample-steps
  # sampling at the official validation batch (32), DPM-Solver++, fp16; slotlab's decoder and the bare diffusers UNet
  run 90 benchmarks/lsd_speed.py --preset lsd_movi_e --modes --sample-steps 25 50 --sample-batch 32 --sample-precision fp16 --sample-reference
  run 60 benchmarks/lsd_speed.py --preset lsd_movi_e --modes --sample-steps 25 --sample-batch 32 --sample-precision fp16 --sample-decode
fi
if want od; then
  # object discovery presets at their paper batch sizes
  run 90 benchmarks/train_speed.py tetrominoes multi_dsprites clevr6 --modes fp32 bf16 bf16+cl --steps 20 --warmup 5
  run 90 benchmarks/set_prediction_speed.py --preset clevr_set_prediction --bf16
fi
if want compile; then
  run 120 benchmarks/train_speed.py clevr6 --modes bf16+cl+compile --steps 20 --warmup 5
  run 130 benchmarks/lsd_speed.py --preset lsd_movi_e --batch-size 32 --modes fp16+compile --steps 10 --warmup 3 --sample-steps
fi
if want graphs; then
  # torch.compile's reduce-overhead mode (trainer.compile=reduce-overhead), and the whole step captured by hand
  run 150 benchmarks/train_speed.py tetrominoes --batch-size 64 --modes bf16 bf16+reduce-overhead bf16+graphs fp32+graphs --steps 50 --warmup 10
  run 120 benchmarks/train_speed.py clevr6 --batch-size 64 --modes bf16+cl+graphs --steps 20 --warmup 5
fi
if want demo; then
  # end to end through Lightning on the GPU: generate, train one minute, evaluate, draw
  run 150 -m slotlab demo --out "$out" --minutes 1
fi
