"""``trainer.precision=auto``: the faster of fp32 and bf16 autocast for this machine, measured on the run's own model.

Whether bf16 autocast speeds up CPU training depends on the processor: on one 2-core development machine it gave
the demo 1.6x the steps/s of fp32, on another fp32 was 1.2x faster (docs/benchmarks.md). ``auto`` therefore times a
few real training steps of the task's module in each and keeps the faster. On a GPU it takes bf16 where the device
supports it, else fp16. With several processes (DDP) on CPU every rank must agree without timing, so it is fp32.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from slotlab.config import ExperimentConfig

CANDIDATES = {"32-true": None, "bf16-mixed": torch.bfloat16}


def resolve_precision(config: ExperimentConfig, module, dataset, steps: int = 3, rounds: int = 2, report=print) -> str:
    """``config.trainer.precision`` unless it is ``auto``; then the faster precision, timed on the first training
    batch of ``dataset`` and reported in one line."""
    t = config.trainer
    if t.precision != "auto":
        return t.precision
    if t.accelerator != "cpu" and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if t.num_nodes > 1 or t.devices not in (1, "1", "auto"):
        return "32-true"
    batch = dataset[torch.arange(min(len(dataset), config.optim.batch_size))]
    rates = time_precisions(module, batch, steps, rounds)
    best = max(rates, key=lambda name: rates[name])
    report("trainer.precision=auto: " + ", ".join(f"{p} {r:.2f} steps/s" for p, r in rates.items()) + f" -> {best}")
    return best


def time_precisions(module, batch: dict, steps: int = 3, rounds: int = 2) -> dict[str, float]:
    """Steps/s of ``module.training_step`` + backward + Adam on ``batch`` for each candidate precision, the best
    of ``rounds`` alternating rounds after one untimed step. The module's weights and the RNG state are restored:
    the probe leaves the run exactly as it found it."""
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-6)
    forward = module._forward
    module._forward = module.model.forward  # eager: compiling twice for a probe would cost more than it tells
    was_training = module.training
    module.train()

    def step(dtype):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rates = dict.fromkeys(CANDIDATES, 0.0)
    try:
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log outside a Trainer
            for dtype in CANDIDATES.values():
                step(dtype)
            for _ in range(rounds):
                for name, dtype in CANDIDATES.items():
                    start = time.perf_counter()
                    for _ in range(steps):
                        step(dtype)
                    rates[name] = max(rates[name], steps / (time.perf_counter() - start))
    finally:
        module._forward = forward
        module.load_state_dict(saved, strict=False)  # strict=False: an autoencoder loaded lazily is not in `saved`
        for p in params:
            p.grad = None
        module.train(was_training)
    return rates
