"""Bragg-filter speed: milliseconds per 256x256 image, preprocessing included, one image at a time.

    python benchmarks/bench_bragg.py [--real DIR] [--repeats 5]

Paper: 20.3 ms per image on a Xeon 6138. Target here: <= 10 ms on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from evaluate.benchmark.bragg import BraggParams, segment  # noqa: E402
from grapheneseg.config import default_real_dir  # noqa: E402
from grapheneseg.micrographs import load_labelled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", default=str(default_real_dir()))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    images = load_labelled(args.real).images
    params = BraggParams()
    for image in images[:5]:  # warm caches (window, Bezier basis, FFT plans)
        segment(image, params)
    times = []
    for _ in range(args.repeats):
        for image in images:
            start = time.perf_counter()
            segment(image, params)
            times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    result = {"images": len(images), "calls": len(ms), "shape": list(images[0].shape),
              "ms_per_image_mean": float(ms.mean()), "ms_per_image_median": float(np.median(ms)),
              "ms_per_image_p95": float(np.percentile(ms, 95)), "target_ms": 10.0}
    print(f"Bragg filter (preprocessing included): {result['ms_per_image_mean']:.2f} ms/image mean, "
          f"{result['ms_per_image_median']:.2f} median, {result['ms_per_image_p95']:.2f} p95 "
          f"over {len(ms)} calls on {len(images)} images of {images[0].shape}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
