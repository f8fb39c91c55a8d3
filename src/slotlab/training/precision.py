"""``trainer.precision=auto``, ``trainer.channels_last=auto`` and ``trainer.compile=auto``: the faster setting for
this machine, measured on the run's own model.

Whether bf16 autocast speeds up CPU training depends on the processor: on one 2-core development machine it gave
the demo 1.6x the steps/s of fp32, on another fp32 was 1.2x faster, on a third (with AMX) bf16 was 1.2x faster
again (docs/benchmarks.md); channels-last gained 1.05-1.2x on each, more with bf16. ``auto`` therefore times a few
real training steps of the task's module in every combination the config leaves open and keeps the fastest. On one
GPU precision ``auto`` takes bf16 where the device supports it, else fp16 (untimed: tensor cores win there), and
channels-last ``auto`` is timed on the GPU with that precision. With several processes (DDP) every rank must agree
without timing: on CPUs fp32 and channels-last on (it won in fp32 on every CPU measured), on GPUs channels-last off.

``torch.compile`` is timed last, with the precision and layout chosen, on the device the run trains on: on the CPU
demo's model it gained 1.1-1.2x on two machines and lost half the steps on a third (docs/benchmarks.md), and it needs
a C++ compiler that a laptop may lack. Its one compile happens in the probe, and training reuses it.
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

CANDIDATES = {"32-true": None, "bf16-mixed": torch.bfloat16}  # what precision "auto" chooses between on a CPU
AUTOCAST = {**CANDIDATES, "32": None, "16-mixed": torch.float16}  # the precisions a probe can time, as autocast


def probe_device(config: ExperimentConfig) -> torch.device:
    """Where the run trains, so where its switches are timed: the GPU for an accelerator other than "cpu" when CUDA
    is at hand, else the CPU."""
    gpu = config.trainer.accelerator != "cpu" and torch.cuda.is_available()
    return torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")


def _one_process(config: ExperimentConfig) -> bool:
    t = config.trainer
    return t.num_nodes == 1 and t.devices in (1, "1", "auto")


def _first_batch(config: ExperimentConfig, dataset) -> dict:
    """The batch every probe times: the first ``optim.batch_size`` training scenes."""
    return dataset[torch.arange(min(len(dataset), config.optim.batch_size))]


def resolve_switches(
    config: ExperimentConfig, module, dataset, steps: int = 3, rounds: int = 2, report=print
) -> tuple[str, bool]:
    """``(precision, channels_last)`` of ``config.trainer`` with each ``auto`` replaced by the faster choice, timed
    on the first training batch of ``dataset`` and reported in one line; ``module`` is left in the chosen layout."""
    t = config.trainer
    device = probe_device(config)
    precisions = list(CANDIDATES) if t.precision == "auto" else [t.precision]
    layouts = [False, True] if t.channels_last == "auto" else [bool(t.channels_last)]
    if device.type == "cuda" and t.precision == "auto":
        precisions = ["bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"]
    if not _one_process(config):
        precisions, layouts = precisions[:1], (layouts[-1:] if device.type == "cpu" else layouts[:1])
    if precisions[0] not in AUTOCAST:  # bf16-true, 64-true, ...: not timed; "auto" leaves channels-last off
        layouts = layouts[:1]
    candidates = list(itertools.product(precisions, layouts))
    if len(candidates) == 1:
        module.set_channels_last(candidates[0][1])
        return candidates[0]
    batch = _first_batch(config, dataset)
    rates = time_candidates(module, batch, candidates, steps, rounds, device=device)
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
    precision and layout already resolved) are faster than eager ones, timed on the first training batch on the run's
    device and reported in one line; then ``module`` trains with the compiled forward the probe built. A compile that
    fails is reported and leaves training eager. With several processes (ranks must agree), or a precision the probe
    cannot time, it stays eager untimed."""
    t = config.trainer
    if t.compile != "auto":
        return t.compile
    if not _one_process(config) or t.precision not in AUTOCAST:
        return False
    device = probe_device(config)
    batch = _first_batch(config, dataset)
    candidate = (t.precision, bool(t.channels_last))
    graphed = compiled(module.model.forward, True)
    start = time.perf_counter()
    eager = time_candidates(module, batch, [candidate], steps, rounds, device=device)[candidate]
    try:
        fast = time_candidates(module, batch, [candidate], steps, rounds, forward=graphed, device=device)[candidate]
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
    module,
    batch: dict,
    candidates: list[tuple[str, bool]],
    steps: int = 3,
    rounds: int = 2,
    forward=None,
    device: torch.device | None = None,
) -> dict[tuple[str, bool], float]:
    """Steps/s of ``module.training_step`` + backward + Adam on ``batch`` for each (precision, channels-last)
    candidate, the best of ``rounds`` alternating rounds after one untimed step, with the model's ``forward`` given
    (default: eager), on ``device`` (default: the CPU; on a GPU each timing waits for its kernels). The module's
    weights, its device, its layout, its forward and the RNG state are restored: the probe leaves the run exactly as
    it found it."""
    device = device or torch.device("cpu")
    home = next(module.parameters()).device
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    layout = module.channels_last
    module.to(device)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-6)
    kept = module._forward
    module._forward = forward or module.model.forward
    was_training = module.training
    module.train()

    def step(candidate):
        dtype = AUTOCAST[candidate[0]]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rates = dict.fromkeys(candidates, 0.0)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), warnings.catch_warnings():
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
        module.to(home)
        module.set_channels_last(layout)
        module.load_state_dict(saved, strict=False)  # strict=False: an autoencoder loaded lazily is not in `saved`
        for p in params:
            p.grad = None
        module.train(was_training)
    return rates
