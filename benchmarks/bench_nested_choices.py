"""Choices made on the labelled micrographs, each checked by nested series-grouped CV: the mask's
threshold and a post-processing matched to the labels' style (the human labels are smooth,
generous outlines; the network's masks are tighter, jagged and holed): closing (smoothing) by a
disc, filling enclosed holes, and a margin (dilation), in physical units so that they carry to
other pixel sizes.

For each outer fold (5 folds of whole focal series, the report's), the option with the best pooled
Jaccard on the fold's training images is chosen and scored on its test images; a choice "holds"
when it beats the default (threshold 0.5, no post-processing) on the test images of every outer
fold. The model is fixed (the packaged one, or --model), so only the choice is cross-validated.

    python benchmarks/bench_nested_choices.py --real path/to/images [--model CKPT] [--json OUT]
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from evaluate import api
from evaluate.apply.masks import mask_of
from grapheneseg.metrics import confusion, pooled
from grapheneseg.micrographs import find_pairs, read_label
from grapheneseg.splits import kfold_splits
from grapheneseg.stats import paired_pooled_bootstrap

THRESHOLDS = (0.35, 0.4, 0.45, 0.5, 0.55)
CLOSE_A = (0.0, 5.0, 10.0, 20.0)  # closing radius, A
FILL_NM2 = (0.0, 1.0, 4.0)  # enclosed holes up to this area are filled, nm^2
MARGIN_A = (0.0, 2.0, 4.0, 8.0)  # dilation, A
DEFAULT = (0.5, 0.0, 0.0, 0.0)  # the threshold alone (run with apply.close_A=0 apply.fill_holes_nm2=0 in mind)


def postprocess(prob: np.ndarray, pixel_size: float, threshold: float, close_a: float, fill_nm2: float,
                margin_a: float) -> np.ndarray:
    return mask_of(prob, threshold, pixel_size, close_a, fill_nm2, margin_a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, type=Path)
    parser.add_argument("--model", type=Path, help="checkpoint (default: the packaged model)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    pairs = find_pairs(args.real)
    names = [n for n, _, _ in pairs]
    probs, sizes, truths = {}, {}, {}
    for name, image, label in pairs:
        result = api.segment(image, model=args.model, device="cpu")
        probs[name], sizes[name] = result.probability, result.pixel_size or 0.4
        truths[name] = read_label(label)[0]
    options = list(itertools.product(THRESHOLDS, CLOSE_A, FILL_NM2, MARGIN_A))
    counts = {o: {n: confusion(postprocess(probs[n], sizes[n], *o), truths[n]) for n in names} for o in options}
    splits = kfold_splits(names, 5, 1, 12345, "series")
    folds, chosen_counts, default_counts, order = [], [], [], []
    for split in splits:
        train, test = split["train"], split["test"]
        best = max(options, key=lambda o: pooled([counts[o][n] for n in train])["jaccard"])
        test_best = pooled([counts[best][n] for n in test])["jaccard"]
        test_default = pooled([counts[DEFAULT][n] for n in test])["jaccard"]
        folds.append({"fold": split["fold"], "chosen": dict(zip(("threshold", "close_A", "fill_nm2", "margin_A"), best)),
                      "test_jaccard": round(test_best, 4), "default_test_jaccard": round(test_default, 4),
                      "held": test_best > test_default})
        chosen_counts += [counts[best][n] for n in test]
        default_counts += [counts[DEFAULT][n] for n in test]
        order += test
    gain = paired_pooled_bootstrap(chosen_counts, default_counts, 4000, 0)
    keys = ("threshold", "close_A", "fill_nm2", "margin_A")
    single = {key: sorted({f["chosen"][key] for f in folds}) for key in keys}
    # the choices every outer fold made alike, the others at their defaults: scored on every test fold
    agreed = tuple(single[key][0] if len(single[key]) == 1 else DEFAULT[i] for i, key in enumerate(keys))
    per_fold = [{"fold": split["fold"], "test_jaccard": round(pooled([counts[agreed][n] for n in split["test"]])["jaccard"], 4),
                 "default_test_jaccard": round(pooled([counts[DEFAULT][n] for n in split["test"]])["jaccard"], 4)}
                for split in splits]
    result = {"folds": folds, "held_in": sum(f["held"] for f in folds), "chosen_values": single,
              "nested_jaccard": pooled(chosen_counts)["jaccard"], "default_jaccard": pooled(default_counts)["jaccard"],
              "gain": gain, "n_images": len(order), "options": len(options),
              "agreed": {"option": dict(zip(keys, agreed)), "folds": per_fold,
                         "held_in": sum(f["test_jaccard"] > f["default_test_jaccard"] for f in per_fold),
                         "gain": paired_pooled_bootstrap([counts[agreed][n] for n in order], default_counts, 4000, 0)}}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
