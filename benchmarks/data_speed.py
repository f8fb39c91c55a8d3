"""Data-path throughput: reading a converted store into training batches, TFRecord decoding, conversion, and
the procedural generators.

    python benchmarks/data_speed.py                       # everything, 2 threads
    python benchmarks/data_speed.py --only store render

store:    a store of --items scenes at --resolution (image + labels), served by the training DataLoader
          (ShuffledBatchSampler, batch --batch-size) with 0 and 2 workers: images/s of float batches in [-1, 1].
tfrecord: records/s decoding Tetrominoes- and clevr_with_masks-sized DeepMind records (gzip, CRC checked).
convert:  records/s of `convert_dataset` on a procedural Tetrominoes TFRecord.
render:   images/s of the CLEVR-like renderer at 128x128 and 320x480.
generate: images/s of procedural Tetrominoes and Multi-dSprites.
dataset:  seconds to build the CPU demo's training set (`build_dataset` of tetrominoes_demo's train split, --scenes
          scenes: generate, masks -> label maps, crop), the part of `slotlab demo` before training starts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def bench_store(tmp: Path, items: int, resolution: int, batch_size: int, batches: int) -> list[dict]:
    from slotlab.data.datasets import ShuffledBatchSampler
    from slotlab.data.registry import store_dataset
    from slotlab.data.store import StoreWriter

    rng = np.random.default_rng(0)
    w = StoreWriter(tmp / "store", {"bench": True})
    for i in range(0, items, 1024):
        n = min(1024, items - i)
        w.append({"image": rng.integers(0, 256, (n, 3, resolution, resolution), dtype=np.uint8),
                  "labels": rng.integers(0, 7, (n, resolution, resolution), dtype=np.uint8)}, i + n)
    ds = store_dataset(w.finish())
    rows = []
    for workers in (0, 2):
        loader = DataLoader(ds, sampler=ShuffledBatchSampler(len(ds), batch_size, seed=0), batch_size=None,
                            num_workers=workers, persistent_workers=workers > 0)
        it = iter(loader)
        next(it)  # workers started, first batch in flight
        start, n = time.perf_counter(), 0
        for _ in range(batches):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            n += batch["image"].shape[0]
        rows.append({"bench": "store", "resolution": resolution, "batch_size": batch_size, "workers": workers,
                     "images_per_s": _rate(n, time.perf_counter() - start)})
    return rows


def bench_tfrecord(tmp: Path, records: int) -> list[dict]:
    from slotlab.data.formats import multi_object as mo

    rows = []
    rng = np.random.default_rng(0)
    for name, n in (("tetrominoes", records), ("clevr_with_masks", max(records // 50, 10))):
        spec = mo.SPECS[name]
        h, w, c = spec.image_shape
        e = spec.num_entities
        labels = rng.integers(0, e, (n, h, w))
        d = {"image": rng.integers(0, 256, (n, h, w, c), dtype=np.uint8),
             "mask": ((labels[:, None] == np.arange(e)[None, :, None, None]) * 255).astype(np.uint8)[..., None]}
        d |= {k: np.zeros((n, e, *t), np.float32) for k, t in spec.float_factors.items()}
        d |= {k: np.zeros((n, e), np.uint8) for k in spec.byte_factors}
        path = tmp / spec.filename
        mo.write_multi_object(spec, path, d)
        start = time.perf_counter()
        count = sum(1 for _ in mo.read_multi_object(spec, path))
        rows.append({"bench": "tfrecord", "dataset": name, "records": count,
                     "records_per_s": _rate(count, time.perf_counter() - start),
                     "mb_per_s_decompressed": round(count * (h * w * c + e * h * w) * 3 / 1e6 /
                                                    (time.perf_counter() - start), 1)})
    return rows


def bench_convert(tmp: Path, records: int) -> list[dict]:
    from slotlab.data.convert import convert_dataset
    from slotlab.data.formats.multi_object import write_multi_object
    from slotlab.data.procedural.tetrominoes import generate_tetrominoes

    path = tmp / "tetrominoes_train.tfrecords"
    write_multi_object("tetrominoes", path, generate_tetrominoes(records, 0))
    start = time.perf_counter()
    store = convert_dataset("tetrominoes", path, tmp / "converted", progress=False)
    return [{"bench": "convert", "dataset": "tetrominoes", "records": len(store),
             "records_per_s": _rate(len(store), time.perf_counter() - start)}]


def bench_render(n: int) -> list[dict]:
    from slotlab.data.procedural.clevr_scenes import generate_clevr_scenes

    rows = []
    for h, w in ((128, 128), (320, 480)):
        count = n if h == 128 else max(n // 8, 8)
        generate_clevr_scenes(8, 123, height=h, width=w)  # warm-up
        start = time.perf_counter()
        generate_clevr_scenes(count, 0, height=h, width=w)
        rows.append({"bench": "render", "size": f"{h}x{w}", "images": count,
                     "images_per_s": _rate(count, time.perf_counter() - start)})
    return rows


def bench_generate(n: int) -> list[dict]:
    from slotlab.data.procedural.multi_dsprites import generate_multi_dsprites
    from slotlab.data.procedural.tetrominoes import generate_tetrominoes

    rows = []
    for name, fn in (("tetrominoes", generate_tetrominoes), ("multi_dsprites", generate_multi_dsprites)):
        fn(100, 1)
        start = time.perf_counter()
        fn(n, 0)
        rows.append({"bench": "generate", "dataset": name, "images": n, "images_per_s": _rate(n, time.perf_counter() - start)})
    return rows


def bench_dataset(n: int) -> list[dict]:
    from slotlab.config import load_config
    from slotlab.data import build_dataset

    cfg = load_config("tetrominoes_demo", [f"data.train_size={n}"]).data
    start = time.perf_counter()
    build_dataset(cfg, "train")
    seconds = time.perf_counter() - start
    return [{"bench": "dataset", "preset": "tetrominoes_demo", "images": n, "seconds": round(seconds, 2),
             "images_per_s": _rate(n, seconds)}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=["store", "tfrecord", "convert", "render", "generate", "dataset"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--items", type=int, default=8192, help="store: scenes in the store")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--render", type=int, default=512, help="render: scenes at 128x128")
    p.add_argument("--scenes", type=int, default=100_000, help="dataset: training scenes (the demo's 100k)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        jobs = {"store": lambda: bench_store(tmp, args.items, args.resolution, args.batch_size, args.batches),
                "tfrecord": lambda: bench_tfrecord(tmp, args.records), "convert": lambda: bench_convert(tmp, args.records),
                "render": lambda: bench_render(args.render), "generate": lambda: bench_generate(10_000),
                "dataset": lambda: bench_dataset(args.scenes)}
        for name in args.only:
            for row in jobs[name]():
                print(json.dumps({"threads": args.threads, **row}), flush=True)


if __name__ == "__main__":
    main()
