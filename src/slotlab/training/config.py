"""The optim and trainer sections of an experiment config (every Lightning module reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from slotlab.fields import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    OpenFraction,
    PositiveFloat,
    PositiveInt,
    Seed,
    UnitInterval,
)

Optimizer = Literal["adam", "adamw"]
# Lightning's precision names; "auto": the faster of fp32 and bf16 here (training/precision.py)
Precision = Literal["auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64"]
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"]


@dataclass
class OptimConfig:
    lr: PositiveFloat = 4e-4
    batch_size: PositiveInt = 64  # per device
    max_steps: PositiveInt = 500_000
    warmup_steps: int = 10_000  # <= 0: no warm-up
    decay_rate: UnitInterval = 0.5  # lr * decay_rate ** (step / decay_steps), counted from step 0 (official code)
    decay_steps: PositiveInt = 100_000
    # the rate falls linearly to zero over this last share of the run, counted in steps of max_steps or, under
    # trainer.max_time_minutes, in time if that ends the run first (0: no fall, as in the papers)
    cooldown_fraction: Fraction = 0.0
    grad_clip: PositiveFloat | None = None  # max gradient norm; None = no clipping (paper)
    optimizer: Optimizer = "adam"
    weight_decay: NonNegativeFloat = 0.0  # AdamW's decoupled weight decay (LSD: 0.01)
    # learning-rate multipliers for top-level parts of the model, e.g. {encoder: 0.1, slot_attention: 0.1} for a
    # warm-started encoder under a new decoder; 0 freezes a part; parts not named keep the full rate
    part_lr: dict[str, NonNegativeFloat] = field(default_factory=dict)
    # top-level parts held still until this step (rate 0), then warmed up over optim.warmup_steps to their rate, e.g.
    # {encoder: 1000, slot_attention: 1000}: a new decoder first learns to read the warm-started slots before its
    # gradients reach them (they are still computed while a part is held: same step cost, Adam's moments filled)
    part_start_step: dict[str, NonNegativeInt] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    accelerator: Accelerator = "auto"
    devices: Any = 1  # a count, a list of device ids or "auto" (Lightning's Trainer(devices=...))
    num_nodes: PositiveInt = 1
    strategy: str = "auto"  # Lightning's strategy name: "auto", "ddp", "ddp_spawn", "fsdp", ...
    precision: Precision = "32-true"
    # torch.compile the model's forward (and so its backward): true for inductor's default mode; "reduce-overhead"
    # adds CUDA graphs on a GPU, for the small presets whose steps are bound by kernel launches; "max-autotune" also
    # searches kernel configurations (a longer compile); "auto": compiled if its training steps are faster here, timed
    # when training starts (training/precision.py), eager where compiling fails
    compile: bool | Literal["auto", "reduce-overhead", "max-autotune"] = False
    channels_last: bool | Literal["auto"] = False  # "auto": the faster layout here (training/precision.py)
    seed: Seed = 0  # the weights' start, the training noise and, unless data_seed is set, the order of the scenes
    # the order of the training scenes (None: seed): fix it to vary only the start and the noise, or the reverse
    data_seed: Seed | None = None
    max_time_minutes: PositiveFloat | None = None  # stop training after this long (the step count is then logged)
    val_every_n_steps: PositiveInt = 5_000
    checkpoint_every_n_steps: PositiveInt = 5_000
    log_every_n_steps: PositiveInt = 50
    num_threads: PositiveInt | None = None  # torch intra-op threads on CPU (None: torch's default)
    # keep an exponential moving average of the weights (e.g. 0.999); validation, checkpoints and the exported
    # model then use the averaged weights
    ema_decay: OpenFraction | None = None
    # warm start: copy the weights of these parts (top-level submodules, e.g. the encoder and Slot Attention) from a
    # trained model (a model folder, a run folder or a .ckpt, of any kind whose parts have the same names and shapes)
    # before the first step; a resumed run takes its weights from its checkpoint instead
    init_from: str | None = None
    init_parts: list[str] = field(default_factory=lambda: ["encoder", "slot_attention"])
