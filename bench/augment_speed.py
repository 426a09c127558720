"""Time squeezespan.data.augment per-sample vs per-batch parameters on 256 images.

Writes bench/results/augment_speed.json. Usage: python bench/augment_speed.py [--batch 256] [--resolution 32]
[--threads 2 [1 ...]] [--runs 25] [--warmup 3] [--out PATH]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import kornia
import torch

from squeezespan import Augment, AugmentConfig
from squeezespan.cliutil import ArgumentParser


def summary(times_ms: list) -> dict:
    return {
        "median_ms": round(statistics.median(times_ms), 2),
        "min_ms": round(min(times_ms), 2),
        "runs": len(times_ms),
    }


def main() -> None:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="one or more torch thread counts")
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "augment_speed.json"))
    args = ap.parse_args()

    torch.manual_seed(0)
    cases = []
    for channels in (3, 1):
        x = torch.rand(args.batch, channels, args.resolution, args.resolution)
        # blur_p=0 is the CIFAR preset (the paper does not blur CIFAR); 0.5 is everyone else.
        for blur_p in (0.0, 0.5):
            for per_sample in (True, False):
                aug = Augment(AugmentConfig(per_sample=per_sample, blur_p=blur_p), channels, args.resolution)
                cases.append(({"channels": channels, "blur_p": blur_p, "per_sample": per_sample}, aug, x))

    results = []
    load = [round(os.getloadavg()[0], 2)]
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = [[] for _ in cases]
        # Interleave the cases run by run so that load from other processes hits all of them alike.
        for run in range(args.warmup + args.runs):
            for (_, aug, x), t in zip(cases, times):
                t0 = time.perf_counter()
                aug(x)
                if run >= args.warmup:
                    t.append(1000.0 * (time.perf_counter() - t0))
        for (row, _, _), t in zip(cases, times):
            results.append({"threads": threads, **row, **summary(t)})
            print(json.dumps(results[-1]))
        load.append(round(os.getloadavg()[0], 2))

    report = {
        "what": "squeezespan.data.augment.Augment forward on CPU, float32 input already at the target resolution",
        "batch": args.batch,
        "resolution": args.resolution,
        "torch": torch.__version__,
        "kornia": kornia.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average_1min_before_and_after_each_thread_count": load,
        "note": "shared 2-core machine with other jobs running: compare rows with each other, not across machines",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
