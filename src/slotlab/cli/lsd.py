"""``slotlab reconstruct`` and the LSD part of ``slotlab demo`` (Latent Slot Diffusion)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="LSD: image -> slots -> image by diffusion, as a PNG grid",
                       description="Encode images into slots with a trained Latent Slot Diffusion model, decode them "
                       "back by reverse diffusion from noise, and draw: input | the autoencoder's own reconstruction "
                       "| decoded from the slots | segmentation from attention | [ground truth] | each slot's "
                       "attention map.")
    p.add_argument("--checkpoint", required=True, help="LSD model folder, run folder or .ckpt")
    p.add_argument("--data", help="a store or .npz (default: the validation split of the training dataset)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    p.add_argument("--sampler", choices=["dpm", "ddim"], default="dpm", help="DPM-Solver++ (default) or DDIM")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1: none)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_reconstruct)


def cmd_reconstruct(args) -> int:
    from slotlab.checkpoints import load_trained
    from slotlab.cli.main import _eval_dataset
    from slotlab.errors import DataError
    from slotlab.models.image_autoencoder import load_image_autoencoder
    from slotlab.models.lsd import LatentSlotDiffusion
    from slotlab.visualize import draw_lsd_grid

    model, config = load_trained(args.checkpoint)
    if not isinstance(model, LatentSlotDiffusion):
        raise DataError(f"{args.checkpoint}: not a Latent Slot Diffusion model")
    autoencoder = load_image_autoencoder(model.config.autoencoder).eval()
    dataset = _eval_dataset(config, args.data, model.config.resolution)
    path = draw_lsd_grid(model, autoencoder, dataset, args.out, args.num_images, args.seed, args.steps, args.sampler,
                         args.guidance)
    print(f"wrote {path}")
    return 0


def demo_lsd(args) -> int:
    """Both LSD stages on procedural CLEVR-like scenes: the autoencoder, then LSD on its latents; then the
    segmentation metrics on held-out scenes, reconstructions and the curves."""
    from slotlab.checkpoints import load_trained, save_trained
    from slotlab.cli.main import _write_json
    from slotlab.config import load_config
    from slotlab.data.convert import write_procedural_store
    from slotlab.evaluation import evaluate_autoencoder, evaluate_lsd
    from slotlab.training.run import BEST_CHECKPOINT, train
    from slotlab.visualize import draw_lsd_grid

    start = time.monotonic()
    out = Path(args.out)
    seed = [f"trainer.seed={args.seed}"]
    lsd_cfg = load_config("lsd_demo", [*seed, *args.overrides])
    n = lsd_cfg.data.train_size + 2 * lsd_cfg.data.val_size
    print(f"slotlab demo --task lsd: rendering {n} procedural CLEVR-like scenes into {out}/data", flush=True)
    data = write_procedural_store(lsd_cfg.data.dataset, out / "data", n, args.seed, lsd_cfg.data.resolution)
    on_data = [f"data.path={data.root}", f"data.dataset={lsd_cfg.data.dataset}", f"data.val_size={lsd_cfg.data.val_size}"]

    ae_cfg = load_config("autoencoder_demo", [*seed, *on_data, *args.autoencoder_set])
    print(f"stage 1: image autoencoder for up to {ae_cfg.trainer.max_time_minutes} min", flush=True)
    ae_run = train(ae_cfg, out / "autoencoder", overwrite=True)  # run again, the demo keeps the scenes, not the runs
    lsd_overrides = [*seed, *on_data, f"model.autoencoder={ae_run.model_dir.resolve()}", *args.overrides]
    if args.minutes is not None:
        lsd_overrides.append(f"trainer.max_time_minutes={args.minutes}")
    lsd_cfg = load_config("lsd_demo", lsd_overrides)
    print(f"stage 2: Latent Slot Diffusion for up to {lsd_cfg.trainer.max_time_minutes} min", flush=True)
    run = train(lsd_cfg, out / "lsd", overwrite=True)

    from slotlab.data.registry import build_dataset

    test = build_dataset(lsd_cfg.data, "test")  # the store's last val_size scenes: neither trained nor validated on
    model = run.module.model.float()
    best = out / "lsd" / "checkpoints" / BEST_CHECKPOINT
    if best.is_file():  # the weights with the best validation FG-ARI
        model, _ = load_trained(best)
        save_trained(model, lsd_cfg, run.model_dir)
    metrics = evaluate_lsd(model, test, seed=args.seed)
    autoencoder = run.module.autoencoder.float()
    metrics["autoencoder"] = evaluate_autoencoder(autoencoder, test)
    metrics.update(steps=run.trainer.global_step, lsd_train_seconds=round(run.seconds, 1),
                   autoencoder_train_seconds=round(ae_run.seconds, 1), seconds=round(time.monotonic() - start, 1),
                   model=str(run.model_dir), autoencoder_model=str(ae_run.model_dir),
                   selection="checkpoint with the best validation FG-ARI" if best.is_file() else "final weights",
                   test=f"the last {len(test)} scenes of the store, used neither for training nor for validation")
    draw_lsd_grid(model, autoencoder, test, out / "reconstructions.png", 8, args.seed)
    _write_json(metrics, out / "metrics.json")
    print(json.dumps({k: metrics[k] for k in ("fg_ari", "mbo_objects", "miou_objects", "seconds")}))
    return 0


def add_fid(sub) -> None:
    p = sub.add_parser("fid", help="FID and KID of generation protocols (compositions, batch shift, shuffled slots)",
                       description="Decode slot sets by each protocol and compare the images with real ones by FID "
                       "and KID: reconstruct (own slots), compose (concept library), recompose (each slot of a real scene "
                       "replaced by a member of its own concept from another image), shift (slot i of scene b from "
                       "image b + i), shuffle (slots drawn at random: the baseline). Features: the standard FID "
                       "Inception-v3 (weights from --inception or downloaded with a checksum check), or the model's "
                       "image autoencoder (offline proxy, not comparable with published FIDs).")
    p.add_argument("--checkpoint", required=True, help="LSD (or object discovery) model folder, run folder or .ckpt")
    p.add_argument("--data", help="a store or .npz (default: the validation split of the training dataset)")
    p.add_argument("--library", help="concept library (.safetensors from `slotlab concepts build`): enables compose "
                   "and recompose")
    p.add_argument("--protocols", nargs="+", default=None, metavar="P",
                   help="of reconstruct, compose, recompose, shift, shuffle; default: compose and recompose (with "
                   "--library), shift, shuffle")
    p.add_argument("--concepts", nargs="+", help="compose: concept ids, one slot from each; 'a,b,c' draws one of a "
                   "group per scene (e.g. the ground concepts); default: random distinct concepts")
    p.add_argument("--num", type=int, default=256, help="images per protocol (default 256)")
    p.add_argument("--features", choices=["inception", "autoencoder"], default="inception")
    p.add_argument("--inception", help="path of pt_inception-2015-12-05-6726825d.pth (else the cache or a download)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--sampler", choices=["dpm", "ddim"], default="dpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the JSON here (also printed)")
    p.set_defaults(func=cmd_fid)


def cmd_fid(args) -> int:
    from slotlab.checkpoints import load_trained
    from slotlab.cli.main import _eval_dataset, _write_json
    from slotlab.errors import DataError
    from slotlab.generation import NEEDS_LIBRARY, PROTOCOLS, AutoencoderFeatures, score_protocols

    unknown = [p for p in args.protocols or [] if p not in PROTOCOLS]
    if unknown:
        raise DataError(f"unknown protocol {unknown[0]!r}; protocols: {', '.join(PROTOCOLS)}")
    model, config = load_trained(args.checkpoint)
    dataset = _eval_dataset(config, args.data, model.config.resolution)
    library = None
    if args.library:
        from slotlab.concepts import ConceptLibrary

        library = ConceptLibrary.load(args.library)
    protocols = args.protocols or (list(NEEDS_LIBRARY) if library else []) + ["shift", "shuffle"]
    if library is None and set(protocols) & set(NEEDS_LIBRARY):
        raise DataError(f"the {' and '.join(p for p in protocols if p in NEEDS_LIBRARY)} protocol needs --library")
    if library is not None and library.slots.shape[1] != model.config.slot_width:
        raise DataError(f"{args.library} holds slots of width {library.slots.shape[1]}; the model's are "
                        f"{model.config.slot_width}: build the library with this model")
    autoencoder = None
    if hasattr(model.config, "autoencoder"):
        from slotlab.models.image_autoencoder import load_image_autoencoder

        autoencoder = load_image_autoencoder(model.config.autoencoder).eval()
    if args.features == "autoencoder":
        if autoencoder is None:
            raise DataError("--features autoencoder needs an LSD model (it has an image autoencoder)")
        extractor, features = AutoencoderFeatures(autoencoder), "image autoencoder latents, pooled 4x4 (proxy)"
    else:
        from slotlab.metrics.fid import InceptionFeatures

        extractor, features = InceptionFeatures(path=args.inception), "FID Inception-v3 pool3"
    from slotlab.cli.concepts import _parse_concepts

    results = score_protocols(model, dataset, extractor, protocols, args.num, library, args.seed, args.steps,
                              args.sampler, autoencoder, concepts=_parse_concepts(args.concepts))
    _write_json({"features": features, "num_images": min(args.num, len(dataset)), **results,
                 "checkpoint": str(args.checkpoint), "data": args.data or "validation split"}, args.out)
    return 0
