"""Test-time augmentation (8 dihedral symmetries): pooled-Jaccard gain and CPU cost per image.

    .venv/bin/python benchmarks/bench_tta.py --model CKPT_OR_RUN_DIR --test DIR [--threads 2]

Scores the model on the labelled folder `--test` without and with TTA: Jaccard pooled over all
pixels of all images, and inference time per 256x256 image (preprocessing excluded, batch 2,
after a warm-up), median of `--repeats`. A run folder is scored as its fold ensemble: do not pass
a CV run folder with its own training images (evaluate score warns about that). Prints one JSON
line last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from grapheneseg.metrics import confusion, pooled
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess
from train.models.runtime import load_models, predict_probability


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint or run folder (fold ensemble)")
    parser.add_argument("--test", required=True, help="labelled folder of NAME.png + NAME_LABEL.png")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats on the first 16 images")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    models = load_models(Path(args.model))
    data = load_labelled(Path(args.test))
    images = np.stack([preprocess(im) for im in data.images])
    result = {"model": args.model, "test": args.test, "n_images": len(data), "n_models": len(models),
              "threads": args.threads}
    for tta in (False, True):
        prob = predict_probability(models, images, batch_size=2, tta=tta)
        metrics = pooled(confusion(p > 0.5, m) for p, m in zip(prob, data.masks))
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            predict_probability(models, images[:16], batch_size=2, tta=tta)
            times.append((time.perf_counter() - t0) / len(images[:16]) * 1e3)
        key = "tta" if tta else "plain"
        result[key] = {"pooled_jaccard": round(metrics["jaccard"], 4), "pooled_f1": round(metrics["f1"], 4),
                       "ms_per_image": round(statistics.median(times), 1)}
        print(f"{key:>5}: pooled Jaccard {metrics['jaccard']:.4f}, F1 {metrics['f1']:.4f}, "
              f"{result[key]['ms_per_image']:.1f} ms/image ({len(models)} model(s), {args.threads} threads)")
    result["jaccard_gain"] = round(result["tta"]["pooled_jaccard"] - result["plain"]["pooled_jaccard"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
