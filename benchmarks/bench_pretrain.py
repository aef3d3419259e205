"""Pretraining throughput on the CPU: streaming simulated images from HDF5, and training steps.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_pretrain.py --data data/sim/FILE.h5
        [--preset cpu] [--threads 2] [--steps 100] [key=value ...]

Times (1) reading + flat-fielding + augmenting samples from the file (the data-loader's work,
in the main process) and (2) `--steps` optimisation steps of the preset's network and batch on
such samples (data loading included), and reports images/s of each, seconds per step and the
peak resident memory (a file of any size costs only the rows read). `key=value` overrides
configs/pretrain.yaml, e.g. `--preset gpu loop.batch_size=1` for the paper network on one whole
256 px image per step. Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from grapheneseg.config import load_config, to_plain
from train.datasets import sim_pairs
from train.loops import ce_dice_loss, make_optimizer, set_threads
from train.models.unet import build_model
from train.pretrain import sim_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args()
    set_threads(args.threads)
    config = to_plain(load_config("pretrain", [f"pretrain_preset={args.preset}", *args.overrides]))
    loop = config["loop"]
    rows = sim_rows([args.data])
    dataset = sim_pairs([args.data], rows, augment=config["augment"], crop=loop["crop"], seed=0)
    batch = int(loop["batch_size"])

    t0 = time.perf_counter()
    n_read = 4 * batch
    for i in range(n_read):
        dataset[(i * 997) % len(dataset)]
    read_s = time.perf_counter() - t0

    torch.manual_seed(0)
    model = build_model(config["model"]).train()
    optimizer = make_optimizer(model, config["optim"])
    t0 = time.perf_counter()
    for step in range(args.steps):
        items = [dataset[((step * batch + j) * 7919) % len(dataset)] for j in range(batch)]
        image, mask = torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
        loss = ce_dice_loss(model(image), mask, float(loop["dice_weight"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train_s = time.perf_counter() - t0
    result = {
        "file_images": len(rows), "preset": args.preset, "threads": args.threads,
        "crop": loop["crop"], "batch_size": batch, "model": config["model"],
        "read_augment_images_per_s": round(n_read / read_s, 1),
        "train_images_per_s": round(args.steps * batch / train_s, 1),
        "seconds_per_step": round(train_s / args.steps, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(f"read+augment {result['read_augment_images_per_s']} images/s, training "
          f"{result['train_images_per_s']} images/s ({args.steps} steps of {batch}, "
          f"{result['seconds_per_step']} s/step), "
          f"peak memory {result['peak_rss_mib']} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
