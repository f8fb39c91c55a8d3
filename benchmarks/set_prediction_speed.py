"""Set prediction: time of the Hungarian Huber loss (pairwise cost + scipy matching) against the model's forward.

    python benchmarks/set_prediction_speed.py --batch-size 512 --preset clevr_set_prediction

Prints milliseconds per call of: the forward pass of the preset's model (no grad), the pairwise Huber cost
alone, and the whole loss (cost + per-image matching + gather), plus the loss's share of the forward time.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from slotlab.config import load_config
from slotlab.losses import hungarian_huber_loss, pairwise_huber
from slotlab.models.set_prediction import SlotSetPredictor


def timed(fn, repeats: int, device: str) -> float:
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="clevr_set_prediction")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="forward under bf16 autocast")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset)
    model = SlotSetPredictor(cfg.model).to(args.device).eval()
    r, b, k = cfg.model.resolution, args.batch_size, cfg.model.num_slots
    images = torch.rand(b, 3, r, r, device=args.device) * 2 - 1
    preds = torch.rand(b, k, cfg.model.num_outputs, device=args.device, requires_grad=True)
    targets = torch.rand(b, k, cfg.model.num_outputs, device=args.device)

    @torch.no_grad()
    def forward():
        with torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.bf16):
            model(images)

    fwd = timed(forward, args.repeats, args.device)
    cost = timed(lambda: pairwise_huber(preds, targets), args.repeats * 10, args.device)
    loss = timed(lambda: hungarian_huber_loss(preds, targets).loss.backward(), args.repeats * 10, args.device)
    print(json.dumps({"preset": args.preset, "device": args.device, "batch": b, "slots": k, "bf16": args.bf16,
                      "forward_ms": round(fwd, 1), "pairwise_cost_ms": round(cost, 2),
                      "loss_with_matching_and_backward_ms": round(loss, 2), "loss_share_of_forward": round(loss / fwd, 4)}))


if __name__ == "__main__":
    main()
