"""Learning-rate schedules as multipliers of the base rate (for ``torch.optim.lr_scheduler.LambdaLR``)."""

from __future__ import annotations


def warmup_exponential_decay(step: int, warmup_steps: int, decay_rate: float, decay_steps: int) -> float:
    """Slot Attention's official schedule: linear warm-up, times ``decay_rate ** (step / decay_steps)``.

    The decay is counted from step 0, not from the end of warm-up (the official code; some frameworks differ).
    """
    warmup = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    return warmup * decay_rate ** (step / decay_steps)


def cooldown(progress: float, fraction: float) -> float:
    """A linear fall to zero over the last ``fraction`` of a run, at ``progress`` in [0, 1]; 1 before it.

    The "warm-up, stable, decay" shape of budgeted training (not in the papers); ``fraction`` 0 turns it off.
    """
    if fraction <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - progress) / fraction))
