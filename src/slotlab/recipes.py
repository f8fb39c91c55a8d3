"""Recipes: complete runs on a laptop CPU, from generated data to metrics and pictures (``slotlab demo``).

- :func:`object_discovery_demo`: procedural Tetrominoes, the ``tetrominoes_demo`` preset, FG-ARI on 320 held-out
  test scenes with the weights of the best validation FG-ARI, a PNG grid.
- :func:`lsd_demo`: procedural textured scenes rendered into a store, LSD's image autoencoder
  (``autoencoder_demo``), the Slot Attention autoencoder (``clevrtex_sa_demo``) whose encoder and Slot Attention
  start LSD, then Latent Slot Diffusion on the autoencoder's latents (its posterior cached once per scene,
  a fresh sample drawn each step; ``lsd_demo``), FG-ARI / mBO / mIoU on held-out scenes,
  reconstructions.

Each writes ``metrics.json`` into its folder and returns the metrics.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from slotlab.checkpoints import checkpoint_step, load_trained, save_trained
from slotlab.config import load_config
from slotlab.data.convert import write_procedural_store
from slotlab.data.latents import cache_store_latents
from slotlab.data.registry import build_dataset
from slotlab.errors import ConfigError
from slotlab.evaluation import evaluate_autoencoder, evaluate_lsd, evaluate_object_discovery
from slotlab.experiment import BEST_CHECKPOINT, train
from slotlab.io import write_json
from slotlab.models.image_autoencoder import load_image_autoencoder
from slotlab.visualize import draw_lsd_grid, draw_model_grid

Report = Callable[[str], None]
DEMO_MARKER = "demo.json"  # a folder a demo wrote: a demo run again into it starts over


def claim_demo_folder(out: Path, task: str, seed: int) -> None:
    """A demo starts over in a folder an earlier demo wrote, and refuses one that holds anything else (a training run,
    a user's files): nothing a demo did not write is removed."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARKER).is_file():
        raise ConfigError(f"{out} holds files that no slotlab demo wrote (no {DEMO_MARKER}); choose another --out")
    write_json(out / DEMO_MARKER, {"task": task, "seed": seed})


def _say(line: str) -> None:
    print(line, flush=True)


def object_discovery_demo(
    out: str | Path = "slotlab-demo",
    seed: int = 0,
    minutes: float | None = None,
    overrides: Sequence[str] = (),
    report: Report = _say,
) -> dict:
    """Generate procedural Tetrominoes, train ``tetrominoes_demo``, keep the weights of the best validation FG-ARI,
    evaluate them on 320 held-out test scenes and draw them."""
    start = time.monotonic()
    overrides = [f"trainer.seed={seed}", f"data.seed={seed}", *overrides]
    if minutes is not None:
        overrides.append(f"trainer.max_time_minutes={minutes}")
    config = load_config("tetrominoes_demo", overrides)
    out = Path(out)
    claim_demo_folder(out, "object_discovery", seed)
    report(
        f"slotlab demo: procedural Tetrominoes, {config.data.train_size} training scenes, "
        f"training for up to {config.trainer.max_time_minutes} min, output in {out}"
    )
    result = train(config, out, overwrite=True)  # a demo run again into the same folder starts over
    test = build_dataset(config.data, "test")  # 320 scenes from a seed used by neither training nor validation
    final = evaluate_object_discovery(result.module.model.float(), test, seed=seed)
    model = _best_weights(result, config)  # early stopping on the validation split
    best_step = checkpoint_step(_best(result)) if _best(result).is_file() else result.trainer.global_step
    metrics = evaluate_object_discovery(model, test, seed=seed)
    metrics.update(
        step=best_step,
        steps=result.trainer.global_step,
        fg_ari_final_weights=final["fg_ari"],
        train_seconds=round(result.seconds, 1),
        seconds=round(time.monotonic() - start, 1),
        model=str(result.model_dir),
        selection="checkpoint with the best validation FG-ARI",
        num_iterations=getattr(model.slot_attention, "test_iterations", None),  # none for the Slot MLP baseline
        test="320 procedural scenes from a seed disjoint from training and validation",
    )
    draw_model_grid(model, test, out / "grid.png", 8, seed)
    write_json(out / "metrics.json", metrics)
    report(json.dumps(metrics, indent=2))
    report(
        f"FG-ARI {metrics['fg_ari']:.3f} on {metrics['num_images']} test scenes (weights of step {best_step} of "
        f"{metrics['steps']}), {metrics['seconds']:.0f} s in all; wrote {out}/metrics.json, {out}/grid.png, "
        f"{result.model_dir}/"
    )
    return metrics


# The LSD demo's Slot Attention stage, whose best checkpoint starts LSD. Its minutes were set when the 32-channel
# encoder's validation FG-ARI peaked at 2,000 steps (about 5 minutes on 2 cores) and the rest of the hour went to the
# image autoencoder (docs/lsd.md, round 6); with 64 channels the stage goes on improving (round 15), but 14 minutes
# of it and 12 of LSD end below 6 and 20 (round 16).
SLOT_ATTENTION_STAGE_MINUTES = 6.0


def lsd_demo(
    out: str | Path = "slotlab-demo",
    seed: int = 0,
    minutes: float | None = None,
    overrides: Sequence[str] = (),
    autoencoder_overrides: Sequence[str] = (),
    slot_attention_overrides: Sequence[str] = (),
    warm_start: bool = True,
    report: Report = _say,
) -> dict:
    """LSD on procedural scenes, in stages: the image autoencoder (``autoencoder_demo``); the Slot Attention
    autoencoder (``clevrtex_sa_demo``, :data:`SLOT_ATTENTION_STAGE_MINUTES`), whose encoder and Slot Attention start
    LSD (``warm_start``; without it LSD starts from scratch and this stage is skipped); Latent Slot Diffusion on the
    autoencoder's latents (``lsd_demo``; the encoder's posterior is cached once per scene in ``out/latents``, and
    each step draws its sample from it, as encoding on the fly would, without the encoder's cost). Then the
    segmentation metrics on held-out scenes (of LSD and of the Slot Attention stage it started from), reconstructions
    and the curves."""
    start = time.monotonic()
    out = Path(out)
    seeds = [f"trainer.seed={seed}"]
    lsd_cfg = load_config("lsd_demo", [*seeds, *overrides])
    # every stage's overrides are checked before the minutes of rendering
    load_config("autoencoder_demo", [*seeds, *autoencoder_overrides])
    load_config("clevrtex_sa_demo", [*seeds, *slot_attention_overrides])
    claim_demo_folder(out, "lsd", seed)
    n = lsd_cfg.data.train_size + 2 * lsd_cfg.data.val_size
    report(f"slotlab demo --task lsd: rendering {n} procedural {lsd_cfg.data.dataset} scenes into {out}/data")
    data = write_procedural_store(lsd_cfg.data.dataset, out / "data", n, seed, lsd_cfg.data.resolution)
    on_data = [
        f"data.path={data.root}",
        f"data.dataset={lsd_cfg.data.dataset}",
        f"data.val_size={lsd_cfg.data.val_size}",
    ]
    # the store's last val_size scenes: neither trained nor validated on
    test = build_dataset(load_config("lsd_demo", [*seeds, *on_data, *overrides]).data, "test")
    stages = 3 if warm_start else 2

    ae_cfg = load_config("autoencoder_demo", [*seeds, *on_data, *autoencoder_overrides])
    report(f"stage 1 of {stages}: image autoencoder for up to {ae_cfg.trainer.max_time_minutes} min")
    ae_run = train(ae_cfg, out / "autoencoder", overwrite=True)  # run again, the demo keeps the scenes, not the runs
    autoencoder_ref = str(ae_run.model_dir.resolve())
    report(f"caching the autoencoder's posterior of the {n} scenes into {out}/latents")
    shutil.rmtree(out / "latents", ignore_errors=True)  # a cache of an earlier run's autoencoder: stale
    # the encoder's posterior once per scene: LSD draws its latent samples from it instead of encoding every step
    latents = cache_store_latents(
        load_image_autoencoder(autoencoder_ref).eval(),  # the exported weights LSD decodes with
        autoencoder_ref,
        data,
        out / "latents",
        progress=False,
        posterior=True,
    )
    lsd_overrides = [*seeds, *on_data, f"data.path={latents.root}", f"model.autoencoder={autoencoder_ref}"]
    metrics: dict = {}
    if warm_start:
        sa_cfg = load_config(
            "clevrtex_sa_demo",
            [*seeds, *on_data, f"trainer.max_time_minutes={SLOT_ATTENTION_STAGE_MINUTES}", *slot_attention_overrides],
        )
        report(f"stage 2 of 3: Slot Attention autoencoder for up to {sa_cfg.trainer.max_time_minutes} min")
        sa_run = train(sa_cfg, out / "slot_attention", overwrite=True)
        sa_model = _best_weights(sa_run, sa_cfg)
        metrics["slot_attention"] = evaluate_object_discovery(sa_model, test, seed=seed)
        metrics["slot_attention"].update(steps=sa_run.trainer.global_step, train_seconds=round(sa_run.seconds, 1))
        lsd_overrides.append(f"trainer.init_from={sa_run.model_dir.resolve()}")
    lsd_overrides += overrides
    if minutes is not None:
        lsd_overrides.append(f"trainer.max_time_minutes={minutes}")
    lsd_cfg = load_config("lsd_demo", lsd_overrides)
    report(f"stage {stages} of {stages}: Latent Slot Diffusion for up to {lsd_cfg.trainer.max_time_minutes} min")
    run = train(lsd_cfg, out / "lsd", overwrite=True)

    model = _best_weights(run, lsd_cfg)
    metrics.update(evaluate_lsd(model, test, seed=seed))
    autoencoder = model.image_autoencoder.float()
    metrics["autoencoder"] = evaluate_autoencoder(autoencoder, test)
    metrics.update(
        steps=run.trainer.global_step,
        lsd_train_seconds=round(run.seconds, 1),
        autoencoder_train_seconds=round(ae_run.seconds, 1),
        slot_attention_train_seconds=metrics["slot_attention"]["train_seconds"] if warm_start else 0.0,
        seconds=round(time.monotonic() - start, 1),
        model=str(run.model_dir),
        data=str(data.root),
        autoencoder_model=str(ae_run.model_dir),
        warm_start=str(sa_run.model_dir) if warm_start else None,
        selection="checkpoint with the best validation FG-ARI" if _best(run).is_file() else "final weights",
        test=f"the last {len(test)} scenes of the store, used neither for training nor for validation",
    )
    draw_lsd_grid(model, test, out / "reconstructions.png", 8, seed)
    write_json(out / "metrics.json", metrics)
    report(json.dumps(metrics, indent=2))
    report(json.dumps({k: metrics[k] for k in ("fg_ari", "mbo_objects", "miou_objects", "seconds")}))
    return metrics


def _best(run) -> Path:
    return run.model_dir.parent / "checkpoints" / BEST_CHECKPOINT


def _best_weights(run, config):
    """The run's weights with the best validation FG-ARI (exported into its model folder), else its final ones."""
    if not _best(run).is_file():
        return run.module.model.float()
    model, _ = load_trained(_best(run))
    save_trained(model, config, run.model_dir)
    return model
