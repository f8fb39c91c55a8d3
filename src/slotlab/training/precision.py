"""``trainer.precision=auto``, ``trainer.channels_last=auto`` and ``trainer.compile=auto``: the faster setting for
this machine, measured on the run's own model.

Whether bf16 autocast speeds up CPU training depends on the processor: on one 2-core development machine it gave
the demo 1.6x the steps/s of fp32, on another fp32 was 1.2x faster, on a third (with AMX) bf16 was 1.2x faster
again (docs/benchmarks.md); channels-last gained 1.05-1.2x on each, more with bf16. ``auto`` therefore times a few
real training steps of the task's module in every combination the config leaves open and keeps the fastest. On a
GPU precision ``auto`` takes bf16 where the device supports it, else fp16, and channels-last ``auto`` stays off (not
measured there: set it). With several processes (DDP) on CPU every rank must agree without timing: fp32, and
channels-last on (it won in fp32 on every CPU measured).

``torch.compile`` is timed last, with the precision and layout chosen: on the CPU demo's model it gained 1.1-1.2x on
two machines and lost half the steps on a third (docs/benchmarks.md), and it needs a C++ compiler that a laptop may
lack. Its one compile happens in the probe, and training reuses it.
"""

from __future__ import annotations

import itertools
import time
import warnings
from typing import TYPE_CHECKING

import torch

from slotlab.training.base import compiled

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


def resolve_compile(
    config: ExperimentConfig, module, dataset, steps: int = 3, rounds: int = 2, report=print
) -> bool | str:
    """``config.trainer.compile`` with "auto" replaced by True or False: True when compiled training steps (with the
    precision and layout already resolved) are faster than eager ones, timed on the first training batch and reported
    in one line; then ``module`` trains with the compiled forward the probe built. A compile that fails is reported and
    leaves training eager. On a GPU "auto" compiles untimed; with several CPU processes it stays eager (ranks agree)."""
    t = config.trainer
    if t.compile != "auto":
        return t.compile
    if t.accelerator != "cpu" and torch.cuda.is_available():
        module._forward = compiled(module.model.forward, True)
        return True
    if t.num_nodes > 1 or t.devices not in (1, "1", "auto"):
        return False
    batch = dataset[torch.arange(min(len(dataset), config.optim.batch_size))]
    candidate = (t.precision, bool(t.channels_last))
    graphed = compiled(module.model.forward, True)
    start = time.perf_counter()
    eager = time_candidates(module, batch, [candidate], steps, rounds)[candidate]
    try:
        fast = time_candidates(module, batch, [candidate], steps, rounds, forward=graphed)[candidate]
    except Exception as e:  # no C++ compiler, an operator inductor cannot lower, ...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        report(f"trainer auto compile: torch.compile failed ({reason}) -> eager")
        return False
    keep = fast > eager
    if keep:
        module._forward = graphed
    report(
        f"trainer auto compile: eager {eager:.2f} steps/s, compiled {fast:.2f} steps/s (probe with the compile "
        f"{time.perf_counter() - start:.0f} s) -> {'compiled' if keep else 'eager'}"
    )
    return keep


def time_candidates(
    module, batch: dict, candidates: list[tuple[str, bool]], steps: int = 3, rounds: int = 2, forward=None
) -> dict[tuple[str, bool], float]:
    """Steps/s of ``module.training_step`` + backward + Adam on ``batch`` for each (precision, channels-last)
    candidate, the best of ``rounds`` alternating rounds after one untimed step, with the model's ``forward`` given
    (default: eager). The module's weights, its layout, its forward and the RNG state are restored: the probe leaves
    the run exactly as it found it."""
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    layout = module.channels_last
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-6)
    kept = module._forward
    module._forward = forward or module.model.forward
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
        module._forward = kept
        module.set_channels_last(layout)
        module.load_state_dict(saved, strict=False)  # strict=False: an autoencoder loaded lazily is not in `saved`
        for p in params:
            p.grad = None
        module.train(was_training)
    return rates
