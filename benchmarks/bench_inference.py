"""U-Net inference speed on 256x256 micrographs on the CPU (or a GPU), in batches.

    .venv/bin/python benchmarks/bench_inference.py [--model CKPT_OR_RUN_DIR] [--preset cpu]
        [--threads 2] [--batches 1 4 8 16] [--images 64] [--device cpu|cuda]

On --device cuda the network runs as `evaluate predict --device cuda` runs it (eager, autocast,
batches of at least train.models.runtime.CUDA_BATCH, so smaller --batches values time that floor).

Without --model a randomly initialised network of the preset's architecture is timed (speed does
not depend on the weights). Reports ms per image (median of repeats, preprocessing excluded and
timed separately), images/s and the process's peak resident memory (and the part
already resident before inference). Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from grapheneseg.config import load_config
from train.models.runtime import for_device, for_inference, inference_device, load_models, predict_probability
from grapheneseg.preprocessing import preprocess
from train.models.unet import build_model


def rss_mib() -> float:
    """Current resident memory of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint or run folder (default: untrained preset network)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--images", type=int, default=64, help="images per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = inference_device(args.device)
    if args.model:
        models = load_models(Path(args.model), args.device)
        what = args.model
    else:
        cfg = load_config("train", [f"preset={args.preset}"])
        net = build_model(dict(cfg.model))
        models = [for_inference(net) if device.type == "cpu" else for_device(net, device)]
        what = f"preset {args.preset}: {dict(cfg.model)}"
    raw = np.random.default_rng(0).uniform(0, 255, (args.images, 256, 256)).astype(np.float32)
    t0 = time.perf_counter()
    images = np.stack([preprocess(im) for im in raw])
    prep_ms = (time.perf_counter() - t0) / args.images * 1e3

    base = rss_mib()
    result = {"model": what, "device": args.device, "rss_before_inference_mib": round(base, 1),
              "threads": args.threads, "n_models": len(models),
              "preprocess_ms_per_image": round(prep_ms, 2), "ms_per_image": {}}
    print(f"{what}, {len(models)} model(s), {args.threads} threads; preprocessing {prep_ms:.1f} ms/image")
    for batch in args.batches:
        predict_probability(models, images[:batch], batch_size=batch)  # warm-up (oneDNN kernels)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            predict_probability(models, images, batch_size=batch)
            times.append((time.perf_counter() - t0) / args.images * 1e3)
        ms = statistics.median(times)
        result["ms_per_image"][batch] = round(ms, 2)
        print(f"  batch {batch:3d}: {ms:6.1f} ms/image ({1e3 / ms:5.1f} images/s), "
              f"min {min(times):.1f} max {max(times):.1f}")
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"  peak resident memory {result['peak_rss_mib']:.0f} MiB "
          f"({base:.0f} MiB before inference: torch, model, {args.images} input images)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
