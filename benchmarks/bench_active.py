"""Active labelling simulated on the 105: fine-tune on the K images `suggest` picks vs K at random.

On the folds of `train real` (cv.folds and cv.split_seed of configs/train.yaml, first repeat),
each fold's training part is ranked by `evaluate suggest` with the simulation checkpoint as if
unlabelled; the top K, and K drawn at random with each seed, are fine-tuned from that checkpoint
(cpu preset; inner validation off unless --guard, the same for every arm) and scored on the fold's
test part (evaluate/benchmark/active.py). Prints, per K, the Jaccard pooled over all test pixels of the folds
run for each arm, the mean, sd and range of the random arms, suggest minus the random mean, and
the per-image difference with a paired bootstrap 95 % interval, and the same split by the test
images' labelled contamination area (empty, then thirds). Finished folds are reused.

    python benchmarks/bench_active.py --real DIR --out data/measure/active [--ks 10 20] [--seeds 0 1 2]
        [--folds 0 1 2 3 4] [--model CKPT] [--guard] [--json] [key=value train overrides]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluate.benchmark.active import active_markdown, run_active  # noqa: E402
from grapheneseg.config import load_config  # noqa: E402
from grapheneseg.micrographs import find_pairs  # noqa: E402
from grapheneseg.splits import kfold_splits  # noqa: E402
from train.models.registry import packaged  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help="folder of NAME.png + NAME_LABEL.png")
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders and active.json")
    parser.add_argument("--model", type=Path, help="simulation checkpoint (default: the shipped sim_default.ckpt)")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random arms' cv.subset_seed")
    parser.add_argument("--folds", type=int, nargs="+", help="run only these folds (default: all)")
    parser.add_argument("--guard", action="store_true", help="keep the inner validation (select) on")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("overrides", nargs="*", help="train config key=value for every arm")
    args = parser.parse_args()
    cv = load_config("train").cv
    splits = [s for s in kfold_splits([n for n, _, _ in find_pairs(args.real)], int(cv.folds), 1, int(cv.split_seed),
                                      cv.grouping, cv.series_pattern)
              if args.folds is None or s["fold"] in args.folds]
    model = args.model or packaged("contamination")
    start = time.perf_counter()
    results = run_active(args.real, model, args.out, splits, args.ks, args.seeds,
                         [*([] if args.guard else ["select.enabled=false"]), *args.overrides], device="cpu",
                         progress=True)
    print(f"active labelling, folds {results['folds']}, fine-tuned from {model} "
          f"({'with' if args.guard else 'without'} inner validation); Jaccard pooled over the test pixels "
          f"of these folds; {time.perf_counter() - start:.0f} s (finished folds reused)")
    print(active_markdown(results))
    for k, r in results["by_k"].items():
        print(f"K = {k}, test images by labelled area:", "; ".join(
            f"{g['group']} ({g['images']} images, {g['label_pixels_mean']:.0f} px): per image "
            f"{g['per_image_suggest_minus_random']:+.3f}, pooled {g['suggest_pooled']:.3f} vs {g['random_pooled_mean']:.3f}"
            for g in r["by_label_area"]))
    if args.json:
        print(json.dumps(results["by_k"]))


if __name__ == "__main__":
    main()
