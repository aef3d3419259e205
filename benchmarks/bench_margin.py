"""The label margin by cross-validation, without retraining: shift a model's predicted masks.

    python benchmarks/bench_margin.py [--model CKPT_OR_RUN_DIR] [--real DIR] [--shifts -4 -3.5 ... 4]
        [--folds 5] [--seed 12345] [--device auto] [--versus CKPT [--versus-shift -2.5]] [--json]

How far a simulated contamination label reaches beyond the amorphous atoms (`label.margin_px`,
2.5 px) was set by hand. Retraining one simulation-only model per margin is too costly, so this
script asks the cheaper question: would the model's masks agree better with the hand labels if they
reached d px further (d > 0) or less far (d < 0)? The model (default: the packaged simulation-only
model, trained at margin 2.5 px) segments every labelled micrograph as `evaluate score` does,
through the Predictor (evaluate.apply.predictor: pixel size from the lattice, resampled outside
the model's recorded pixel range; before, at the native scale); each mask is then grown or
shrunk by d px through its Euclidean distance transform (d > 0: pixels within d of the mask join
it; d < 0: pixels within |d| of the background leave it; pixel distances are square roots of
integers, so |d| < 1 changes nothing and -2.5 removes the pixels within 2.24 px of the
background). Folds are the project's (`grapheneseg.splits.kfold_splits`, split seed 12345, whole
focal series per fold unless `--grouping image`): on
each fold d is chosen to maximise the pooled Jaccard of the training images and scored on the
test images. A CV-chosen shift near 0 means the hand-set margin already matches the
hand labels; else the simulator's margin should move to 2.5 + d (a model trained at the new margin
would then need retraining to show it).

Printed: the curve (pooled Jaccard over all images and its fold mean, per shift), each fold's
chosen shift with train and test Jaccard, the CV Jaccard (test counts pooled over the folds, and the
mean of the fold-pooled Jaccards) next to d = 0 on the same folds, and the per-image Jaccard
difference CV-chosen minus d = 0 with a paired bootstrap 95 % interval over images. `--versus CKPT`
also compares the model (unshifted) with another one, unshifted and with its masks shifted by
`--versus-shift`: pooled Jaccard of both and per-image differences with their intervals (e.g. a
model trained at a new margin against the old model with the shift chosen here). `--json`: one
JSON line last.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from grapheneseg.config import default_real_dir
from grapheneseg.margins import cross_validate, jaccard, per_image_jaccard, shift_counts
from grapheneseg.micrographs import find_pairs, load_labelled
from grapheneseg.splits import kfold_splits
from grapheneseg.stats import paired_bootstrap

DEFAULT_SHIFTS = [x / 2 for x in range(-8, 9)]  # -4 .. +4 px in half-pixel steps


def predicted_masks(model: Path, folder: Path, names: list[str], device: str) -> list[np.ndarray]:
    """The masks of the labelled micrographs `names` of `folder`, segmented by `model` exactly as
    `evaluate score` segments them (Predictor.segment_files: every file read, its scale decided)."""
    from evaluate.apply.predictor import Predictor
    from grapheneseg.config import load_config

    paths = {name: image for name, image, _ in find_pairs(folder)}
    done, skipped = Predictor(model, load_config("evaluate").apply, device).segment_files(
        [paths[n] for n in names], progress=False)
    if skipped:
        raise SystemExit(f"error: {len(skipped)} labelled micrograph(s) could not be segmented: "
                         + "; ".join(str(s) for s in skipped.values()))
    return [seg.mask for seg in done]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint or run folder (default: the packaged default model)")
    parser.add_argument("--real", default=str(default_real_dir()))
    parser.add_argument("--shifts", type=float, nargs="+", default=DEFAULT_SHIFTS, help="px; must include 0")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12345, help="split seed (grapheneseg.splits)")
    parser.add_argument("--grouping", choices=["series", "image"], default="series",
                        help="folds of whole focal series (default) or image-wise (the paper's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--versus", help="another checkpoint or run folder to compare the model with, per image")
    parser.add_argument("--versus-shift", type=float, default=-2.5, help="px shift of the --versus masks")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from train.models.registry import packaged

    shifts = sorted(set(args.shifts) | {0.0})
    model = Path(args.model) if args.model else packaged("contamination")
    data = load_labelled(Path(args.real))
    masks = predicted_masks(model, Path(args.real), data.names, args.device)
    counts = shift_counts(masks, data.masks, shifts)
    splits = kfold_splits(data.names, args.folds, 1, args.seed, args.grouping)
    index = {n: i for i, n in enumerate(data.names)}
    curve = [{"shift": d, "pooled": jaccard(counts[:, k]),
              "fold_mean": float(np.mean([jaccard(counts[[index[n] for n in s["test"]], k]) for s in splits]))}
             for k, d in enumerate(shifts)]
    cv = cross_validate(counts, data.names, shifts, args.folds, args.seed, args.grouping)

    print(f"model {model}; {len(data)} images of {args.real}; segmented as `evaluate score` (the Predictor)")
    print(f"{'shift px':>8s} {'pooled J':>8s} {'fold mean':>9s}   (all images, no choice made)")
    for row in curve:
        print(f"{row['shift']:+8.1f} {row['pooled']:8.4f} {row['fold_mean']:9.4f}")
    print(f"{'fold':>4s} {'chosen':>6s} {'train J':>7s} {'test J':>7s} {'test J at 0':>11s}")
    for r in cv["folds"]:
        print(f"{r['fold']:4d} {r['shift']:+6.1f} {r['train_jaccard']:7.4f} {r['test_jaccard']:7.4f} "
              f"{r['test_jaccard_zero']:11.4f}")
    b = cv["per_image_cv_minus_zero"]
    print(f"CV-chosen shift: pooled J {cv['cv_pooled']:.4f} (fold mean {cv['cv_fold_mean']:.4f}); "
          f"shift 0: {cv['zero_pooled']:.4f} ({cv['zero_fold_mean']:.4f}); per image CV - 0: "
          f"{b['mean']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}] (paired bootstrap 95 %)")
    versus = {}
    if args.versus:
        other = predicted_masks(Path(args.versus), Path(args.real), data.names, args.device)
        theirs = shift_counts(other, data.masks, [0.0, args.versus_shift])
        mine = per_image_jaccard(counts[:, shifts.index(0.0)], data.names)
        for k, d in enumerate((0.0, args.versus_shift)):
            diff = paired_bootstrap(mine, per_image_jaccard(theirs[:, k], data.names))
            versus[f"shift {d:+.1f}"] = {"pooled": jaccard(theirs[:, k]), "model_minus_versus": diff}
            print(f"versus {args.versus} shifted {d:+.1f}: pooled J {jaccard(theirs[:, k]):.4f} (model "
                  f"{jaccard(counts[:, shifts.index(0.0)]):.4f}); per image model - versus: {diff['mean']:+.4f} "
                  f"[{diff['low']:+.4f}, {diff['high']:+.4f}]")
    if args.json:
        print(json.dumps({"model": str(model), "curve": curve, **cv, "versus": versus}))


if __name__ == "__main__":
    main()
