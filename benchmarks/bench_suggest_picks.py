"""What `suggest` picks from each fold's training part, with and without the coverage picks.

No training: the picks of the active-labelling study (evaluate/benchmark/active.py: the shipped
simulation model, 1 member x 8 symmetries, the folds of `train real`, first repeat) are made with
`evaluate.apply.suggest.choose` for every --coverage-every value, and described by the labels the
picks hold: per fold and K, how many have an empty label, and the labelled contamination fraction
of the picks (min, median, max) against that of the fold's whole training part. Whether the picks
train better models is what bench_active.py measures (not run here).

    python benchmarks/bench_suggest_picks.py --real DIR [--model CKPT] [--ks 10 20] [--every 0 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluate.apply.predictor import Predictor  # noqa: E402
from evaluate.apply.suggest import choose  # noqa: E402
from grapheneseg.config import load_config  # noqa: E402
from grapheneseg.micrographs import find_pairs, load_labelled  # noqa: E402
from grapheneseg.splits import kfold_splits  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help="folder of NAME.png + NAME_LABEL.png")
    parser.add_argument("--model", type=Path, help="checkpoint (default: the shipped sim_default.ckpt)")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--every", type=int, nargs="+", default=[0, 5], help="coverage_every values to compare")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = load_labelled(args.real)
    label = {n: float(m.mean()) for n, m in zip(data.names, data.masks)}
    cv = load_config("train").cv
    splits = kfold_splits([n for n, _, _ in find_pairs(args.real)], int(cv.folds), 1, int(cv.split_seed),
                          cv.grouping, cv.series_pattern)
    start = time.perf_counter()
    predictor = Predictor(args.model, load_config("evaluate").apply, "cpu")  # None: the shipped sim_default.ckpt
    results, failed = predictor.segment_files([p for _, p, _ in find_pairs(args.real)], uncertainty=True,
                                              progress=False)
    if failed:
        sys.exit(f"error: could not segment {sorted(failed)}")
    by_name = {seg.micrograph.path.stem: seg for seg in results}
    print(f"{len(results)} images segmented with uncertainty in {time.perf_counter() - start:.0f} s")
    table = []
    for every in args.every:
        for split in splits:
            picks = [c.segmentation.micrograph.path.stem
                     for c in choose([by_name[n] for n in split["train"]], max(args.ks), every)]
            part = np.array([label[n] for n in split["train"]])
            for k in args.ks:
                got = np.array([label[n] for n in picks[:k]])
                row = {"every": every, "fold": split["fold"], "k": k, "empty_label_picks": int((got == 0).sum()),
                       "empty_label_in_part": int((part == 0).sum()),
                       "label_fraction_picks": [float(np.min(got)), float(np.median(got)), float(np.max(got))],
                       "label_fraction_part": [float(np.min(part)), float(np.median(part)), float(np.max(part))]}
                table.append(row)
                print(f"coverage_every {every} fold {split['fold']} K {k}: {row['empty_label_picks']} empty-label "
                      f"picks ({row['empty_label_in_part']} in the part); labelled fraction of the picks min/median/max "
                      + "/".join(f"{v:.3f}" for v in row["label_fraction_picks"]) + " (part "
                      + "/".join(f"{v:.3f}" for v in row["label_fraction_part"]) + ")")
    if args.json:
        print(json.dumps(table))


if __name__ == "__main__":
    main()
