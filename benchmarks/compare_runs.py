"""Two CV run folders on the same folds (e.g. fine-tuned vs real-only at one K), and optionally
a single model scored on the same images (e.g. the simulation-only checkpoint): pooled Jaccard,
fold means, each fold's inner-validation choice and paired bootstrap 95% intervals of the
per-image Jaccard differences.

    .venv/bin/python benchmarks/compare_runs.py --a RUN_FT --b RUN_REAL [--model sim.ckpt] [--real DIR]

Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from evaluate.benchmark.report import arm_from_train_cv
from grapheneseg.stats import paired_bootstrap
from grapheneseg.config import default_real_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="CV run folder (the arm tested for a gain)")
    parser.add_argument("--b", required=True, help="CV run folder on the same splits")
    parser.add_argument("--model", help="a checkpoint never trained on these images (scored on them)")
    parser.add_argument("--real", help="labelled folder for --model (default: the configured real folder)")
    args = parser.parse_args()

    a, b = arm_from_train_cv(Path(args.a), args.a), arm_from_train_cv(Path(args.b), args.b)
    if set(a.counts) != set(b.counts):
        raise SystemExit("the two runs scored different test images (different splits?)")
    arms = [a, b]
    if args.model:
        from evaluate.benchmark.arms import sim_only_arm

        ran = {(f["repeat"], f["fold"]) for f in a.per_fold}  # a run of some folds (cv.only_folds) tests fewer
        splits = [s for s in json.loads((Path(args.a) / "splits.json").read_text()) if (s["repeat"], s["fold"]) in ran]
        arm = sim_only_arm(Path(args.model), Path(args.real) if args.real else default_real_dir(), splits)
        arms.append(dataclasses.replace(arm, name=args.model))
    result = {"arms": {}, "intervals": {}}
    for arm in arms:
        choices = []
        for path in sorted(Path(arm.source).glob("fold_*/metrics.json")):  # none for a checkpoint
            sel = json.loads(path.read_text()).get("selection") or {}
            choices.append(f"{sel.get('choice')}:{sel.get('epochs')}/{sel.get('of_epochs')}")
        result["arms"][arm.name] = {"pooled_jaccard": round(arm.pooled_all["jaccard"], 4),
                                    "fold_mean_jaccard": round(arm.summary["jaccard"]["mean"], 4),
                                    "choices": choices}
        print(f"{arm.name}: pooled Jaccard {arm.pooled_all['jaccard']:.4f} (all test pixels), fold mean "
              f"{arm.summary['jaccard']['mean']:.4f}" + (f"; inner choices {choices}" if choices else ""))
    for other in arms[1:]:
        d = paired_bootstrap(a.image_scores(), other.image_scores())
        result["intervals"][f"{a.name} - {other.name}"] = d
        print(f"per-image Jaccard {a.name} - {other.name}: mean {d['mean']:+.4f}, 95% [{d['low']:+.4f}, "
              f"{d['high']:+.4f}] over {d['n_images']} images")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
