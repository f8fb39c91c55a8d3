"""``trainer.precision=auto`` and ``trainer.channels_last=auto``: the faster setting for this machine, measured on
the run's own model.

Whether bf16 autocast speeds up CPU training depends on the processor: on one 2-core development machine it gave
the demo 1.6x the steps/s of fp32, on another fp32 was 1.2x faster, on a third (with AMX) bf16 was 1.2x faster
again (docs/benchmarks.md); channels-last gained 1.05-1.2x on each, more with bf16. ``auto`` therefore times a few
real training steps of the task's module in every combination the config leaves open and keeps the fastest. On a
GPU precision ``auto`` takes bf16 where the device supports it, else fp16, and channels-last ``auto`` stays off (not
measured there: set it). With several processes (DDP) on CPU every rank must agree without timing: fp32, and
channels-last on (it won in fp32 on every CPU measured).
"""

from __future__ import annotations

import itertools
import time
import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from slotlab.config import ExperimentConfig

CANDIDATES = {"32-true": None, "bf16-mixed": torch.bfloat16}


def resolve_switches(
    config: ExperimentConfig, module, dataset, steps: int = 3, rounds: int = 2, report=print
) -> tuple[str, bool]:
    """``(precision, channels_last)`` of ``config.trainer`` with each ``auto`` replaced by the faster choice, timed
    on the first training batch of ``dataset`` and reported in one line; ``module`` is left in the chosen layout."""
    t = config.trainer
    precisions = list(CANDIDATES) if t.precision == "auto" else [t.precision]
    layouts = [False, True] if t.channels_last == "auto" else [bool(t.channels_last)]
    if t.accelerator != "cpu" and torch.cuda.is_available():
        precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        precisions, layouts = [precision if t.precision == "auto" else t.precision], layouts[:1]
    elif t.num_nodes > 1 or t.devices not in (1, "1", "auto"):
        precisions, layouts = precisions[:1], layouts[-1:]
    candidates = list(itertools.product(precisions, layouts))
    if len(candidates) == 1:
        module.set_channels_last(candidates[0][1])
        return candidates[0]
    batch = dataset[torch.arange(min(len(dataset), config.optim.batch_size))]
    rates = time_candidates(module, batch, candidates, steps, rounds)
    best = max(rates, key=lambda c: rates[c])
    module.set_channels_last(best[1])
    named = {c: f"{c[0]}{' channels-last' if c[1] else ''}" for c in candidates}
    report(
        "trainer auto switches: "
        + ", ".join(f"{named[c]} {r:.2f} steps/s" for c, r in rates.items())
        + f" -> {named[best]}"
    )
    return best


def time_candidates(
    module, batch: dict, candidates: list[tuple[str, bool]], steps: int = 3, rounds: int = 2
) -> dict[tuple[str, bool], float]:
    """Steps/s of ``module.training_step`` + backward + Adam on ``batch`` for each (precision, channels-last)
    candidate, the best of ``rounds`` alternating rounds after one untimed step. The module's weights, its layout
    and the RNG state are restored: the probe leaves the run exactly as it found it."""
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    layout = module.channels_last
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-6)
    forward = module._forward
    module._forward = module.model.forward  # eager: compiling for a probe would cost more than it tells
    was_training = module.training
    module.train()

    def step(candidate):
        dtype = CANDIDATES[candidate[0]]
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rates = dict.fromkeys(candidates, 0.0)
    try:
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log outside a Trainer
            for candidate in candidates:
                module.set_channels_last(candidate[1])
                step(candidate)
            for _ in range(rounds):
                for candidate in candidates:
                    module.set_channels_last(candidate[1])
                    start = time.perf_counter()
                    for _ in range(steps):
                        step(candidate)
                    rates[candidate] = max(rates[candidate], steps / (time.perf_counter() - start))
    finally:
        module._forward = forward
        module.set_channels_last(layout)
        module.load_state_dict(saved, strict=False)  # strict=False: an autoencoder loaded lazily is not in `saved`
        for p in params:
            p.grad = None
        module.train(was_training)
    return rates
