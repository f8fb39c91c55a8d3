"""K-means for the visual concept library: seconds per backend on random slots.

    python benchmarks/concepts_speed.py                                  # 100k slots, D 192, K 64, 2 threads
    python benchmarks/concepts_speed.py --num 5000 --threads 1 --backends torch sklearn

Slots are standard normal (no clusters: Lloyd iterations rarely converge early, so this is near the worst case
for ``--iters``). Both backends start from k-means++ seeds drawn with ``--seed`` and run at most ``--iters`` Lloyd
iterations; torch's and scikit-learn's thread pools are both limited to ``--threads``. Prints one JSON object:
seconds, iterations and inertia per backend.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from slotlab.concepts import BACKENDS, kmeans


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=100_000, help="slots (default 100000)")
    p.add_argument("--dim", type=int, default=192, help="slot width (default 192, LSD's)")
    p.add_argument("--k", type=int, default=64, help="clusters (default 64)")
    p.add_argument("--iters", type=int, default=50, help="maximum Lloyd iterations (default 50)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both backends (default 2)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=["torch", "sklearn"])
    p.add_argument("--device", default="cpu", help="torch backend's device (e.g. cuda)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    x = torch.randn(args.num, args.dim, generator=torch.Generator().manual_seed(args.seed))
    result = {"num": args.num, "dim": args.dim, "k": args.k, "max_iters": args.iters, "threads": args.threads,
              "seconds": {}, "iterations": {}, "inertia": {}}
    with threadpool_limits(limits=args.threads):
        kmeans(x[:2000], 8, iters=2, backend=args.backends[0])  # warm up (imports, thread pools)
        for backend in args.backends:
            data = x.to(args.device) if backend == "torch" else x
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            r = kmeans(data, args.k, iters=args.iters, seed=args.seed, backend=backend)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            result["seconds"][backend] = round(time.perf_counter() - start, 3)
            result["iterations"][backend] = r.iterations
            result["inertia"][backend] = round(r.inertia, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
