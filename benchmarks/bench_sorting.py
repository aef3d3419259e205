"""Sorting by graphene fraction: how well a model's ranking agrees with the hand labels.

    python benchmarks/bench_sorting.py --model CKPT_OR_RUN_DIR [--real DIR] [--top 10]

Every labelled micrograph of DIR is segmented exactly as `evaluate sort` does
(evaluate.apply.predictor.Predictor.segment_files: pixel size from the lattice, resampling when
outside the trained range); its predicted graphene fraction (1 - predicted contamination share) is
compared with the hand-labelled one (1 - label share). Reductions: Spearman and Kendall rank
correlation over the images (one value per image, no pixel pooling), the mean absolute difference
of the fractions, and how many of the `--top` cleanest images by label are also among the `--top`
cleanest by prediction (ties in the labels, e.g. empty labels, broken by file name). Prints one
JSON line last.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from evaluate.apply.predictor import Predictor
from evaluate.apply.segment import input_files
from grapheneseg.config import load_config, real_dir
from grapheneseg.micrographs import load_labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--real", type=Path, help="labelled folder (default: the configured real folder)")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    cfg = load_config("evaluate")
    folder = args.real or real_dir(cfg)
    data = load_labelled(folder)
    results, failed = Predictor(args.model, cfg.apply).segment_files(input_files([folder]), progress=False)
    if failed:
        raise SystemExit(f"could not segment: {failed}")
    predicted = {r.micrograph.path.stem: r.graphene_fraction for r in results}
    names = data.names
    truth = np.array([1.0 - m.mean() for m in data.masks])
    pred = np.array([predicted[n] for n in names])
    cleanest = lambda values: {names[i] for i in sorted(range(len(names)), key=lambda i: (-values[i], names[i]))[:args.top]}  # noqa: E731
    result = {
        "model": str(args.model), "real": str(folder), "images": len(names),
        "spearman": float(stats.spearmanr(truth, pred).statistic),
        "kendall": float(stats.kendalltau(truth, pred).statistic),
        "mean_abs_fraction_error": float(np.mean(np.abs(truth - pred))),
        "top": args.top, "top_agree": len(cleanest(truth) & cleanest(pred)),
    }
    print(f"{len(names)} images of {folder}, model {args.model}: Spearman {result['spearman']:.3f}, "
          f"Kendall {result['kendall']:.3f} (per-image graphene fractions, predicted vs labelled); "
          f"mean |difference| {result['mean_abs_fraction_error']:.3f}; {result['top_agree']} of the "
          f"{args.top} cleanest by label are among the {args.top} cleanest by prediction")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
