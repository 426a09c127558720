"""Time squeezespan.data.augment per-sample vs per-batch parameters on 256 images; writes bench/results/augment_speed.json.

Usage: python bench/augment_speed.py [--batch 256] [--resolution 32] [--threads 2] [--runs 25] [--warmup 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import kornia
import torch

from squeezespan.data.augment import Augment, AugmentConfig


def summary(times_ms: list) -> dict:
    return {"median_ms": round(statistics.median(times_ms), 2), "min_ms": round(min(times_ms), 2), "runs": len(times_ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "augment_speed.json"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = []
    for channels in (3, 1):
        x = torch.rand(args.batch, channels, args.resolution, args.resolution)
        # blur_p=0 is the CIFAR preset (the paper does not blur CIFAR); 0.5 is everyone else.
        for blur_p in (0.0, 0.5):
            for per_sample in (True, False):
                aug = Augment(AugmentConfig(per_sample=per_sample, blur_p=blur_p), channels, args.resolution)
                row = {"channels": channels, "blur_p": blur_p, "per_sample": per_sample}
                cases.append((row, aug, x, []))

    # Interleave the cases run by run so that load from other processes hits all of them alike.
    load_before = os.getloadavg()[0]
    for run in range(args.warmup + args.runs):
        for _, aug, x, times in cases:
            t0 = time.perf_counter()
            aug(x)
            if run >= args.warmup:
                times.append(1000.0 * (time.perf_counter() - t0))
    load_after = os.getloadavg()[0]
    results = []
    for row, _, _, times in cases:
        row.update(summary(times))
        results.append(row)
        print(json.dumps(row))

    report = {
        "what": "squeezespan.data.augment.Augment forward on CPU, float32 input already at the target resolution",
        "batch": args.batch,
        "resolution": args.resolution,
        "threads": args.threads,
        "torch": torch.__version__,
        "kornia": kornia.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "note": "shared 2-core machine with other jobs running: compare rows with each other, not across machines",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
