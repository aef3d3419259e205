"""Does the uncertainty tell where the model is wrong, and how many of the 105 get an OOD flag?

Each labelled image is predicted, with the 8 symmetries, from a CV run folder (fold_*/model.ckpt
and splits.json) in two set-ups, both honest under CV:

- fold model: by the one fold model that did not train on it (the figures before the ensemble);
- held-out ensemble: by its own fold model and every other fold model whose checkpoint does not
  list it among its training images (evaluate.benchmark.uncertainty_study.held_out_members); the error is that of
  the ensemble's mean, the prediction `predict --uncertainty` gives.

Prints, per set-up, the Spearman correlation over images between the error 1 - Jaccard (per
image; an image whose label and prediction are both empty has Jaccard 1) and each per-image
score of evaluate.benchmark.uncertainty_study.sample_scores: the Jaccard disagreement (the ensemble's score,
defined before it was measured), the band std (mean std over 0.1 < p < 0.9), the mean pixel std,
the mutual information, and the predicted coverage (a baseline with no uncertainty in it), with
bootstrap 95 % intervals over images (2,000 resamples, seed 0) and the interval of each minus
the disagreement's on the same resamples; and the number of images with an OOD flag
(evaluate.apply.ood.packaged_reference).

    python benchmarks/bench_uncertainty.py --run /work/main/data/measure/ft_K20 --real DIR [--json] [--out FILE]
    python benchmarks/bench_uncertainty.py --model grapheneseg/models/sim_default.ckpt --real DIR
    python benchmarks/bench_uncertainty.py --reference --real DIR [--sim H5] [--write FILE]  # the measures
                          # behind the OOD reference (--write: the packaged grapheneseg/models/ood_reference.json),
                          # and the 105 at 4x their noise
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluate.apply.ood import (MARGIN, check, measures, out_of_range, reference_from, summarise,  # noqa: E402
                                write_reference)
from evaluate.benchmark.uncertainty_study import uncertainty_vs_error  # noqa: E402
from grapheneseg.config import load_config  # noqa: E402
from grapheneseg.micrographs import load_labelled  # noqa: E402


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Spearman correlation of x and y with z's linear part taken out of both ranks: how much of
    the link is not through z (here: does the disagreement rank the error beyond the mask's area?)."""
    from scipy.stats import rankdata

    rz = rankdata(z)
    def residual(a: np.ndarray) -> np.ndarray:
        ra = rankdata(a)
        return ra - np.polyval(np.polyfit(rz, ra, 1), rz)
    return float(np.corrcoef(residual(x), residual(y))[0, 1])


def _one_model(model: Path, data, cfg) -> dict:
    """uncertainty_vs_error of a checkpoint that never trained on `data`, as a one-fold run whose
    test part is every image (a temporary folder linking to it)."""
    import tempfile

    from train.models.checkpoints import MODEL_FILE, read_checkpoint

    seen = set(read_checkpoint(model).get("train_images", [])) & set(data.names)
    if seen:
        sys.exit(f"error: {model} was trained on {len(seen)} of these images ({', '.join(sorted(seen)[:5])}, ...): "
                 "use the CV run folder it came from (--run)")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "fold_0").mkdir()
        (Path(tmp) / "fold_0" / MODEL_FILE).symlink_to(model.resolve())
        return uncertainty_vs_error(Path(tmp), data, [{"repeat": 0, "fold": 0, "train": [], "test": data.names}],
                                    cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--run", type=Path, help="CV run folder: fold_*/model.ckpt and splits.json")
    group.add_argument("--model", type=Path, help="instead: one checkpoint that never trained on --real (e.g. "
                                                  "grapheneseg/models/sim_default.ckpt): every image by it")
    parser.add_argument("--real", type=Path, required=True, help="folder of NAME.png + NAME_LABEL.png")
    parser.add_argument("--reference", action="store_true", help="print the OOD measures of --real and stop")
    parser.add_argument("--sim", type=Path, help="with --reference: also a simulated HDF5 dataset")
    parser.add_argument("--write", type=Path, help="with --reference and --sim: write the reference file (the "
                                                   "packaged one: grapheneseg/models/ood_reference.json)")
    parser.add_argument("--json", action="store_true", help="last stdout line: the figures as JSON (no per-image rows)")
    parser.add_argument("--out", type=Path, help="with --run: also write the figures and per-image rows to this JSON")
    args = parser.parse_args()
    data = load_labelled(args.real)
    if not (args.reference or args.run or args.model):
        parser.error("give --run, --model or --reference")
    if args.reference:
        values = [measures(im) for im in data.images]
        for name in ("noise", "contrast"):
            a = np.array([v[name] for v in values])
            print(f"{name}: min {a.min():.4g} median {np.median(a):.4g} max {a.max():.4g} ({len(a)} real images)")
        print("no lattice:", [n for n, v in zip(data.names, values) if not v["lattice"]])
        if args.sim:
            import h5py

            sim = []
            with h5py.File(args.sim, "r") as f:
                for start in range(0, len(f["images"]), 250):
                    sim += [measures(im) for im in f["images"][start:start + 250]]
            for name in ("noise", "contrast"):
                a = np.array([v[name] for v in sim])
                print(f"{name}: min {a.min():.4g} median {np.median(a):.4g} max {a.max():.4g} "
                      f"({len(a)} simulated images)")
            sources = {"real": {"description": f"{args.real.name}: {len(values)} labelled micrographs",
                                "names_sha256": hashlib.sha256("\n".join(data.names).encode()).hexdigest(),
                                **summarise(values)},
                       "simulated": {"description": f"{args.sim.name}: {len(sim)} simulated images", **summarise(sim)}}
            print(f"REFERENCE (min / {MARGIN}, max * {MARGIN} of both):",
                  {k: tuple(round(x, 4) for x in r) for k, r in reference_from(sources).items()})
            if args.write:
                command = (f"python benchmarks/bench_uncertainty.py --reference --real DIR --sim {args.sim} "
                           f"--write {args.write}")
                print(f"reference file: {write_reference(args.write, sources, command)}")
            print(f"simulated images flagged: {sum(bool(out_of_range(v, reference_from(sources))) for v in sim)} of "
                  f"{len(sim)} ({sum(not v['lattice'] for v in sim)} for no lattice)")
        rng = np.random.default_rng(0)
        flagged = 0
        for image, v in zip(data.images, values):  # white noise added until its level is 4x its own
            sigma = v["noise"] * float(image.mean()) * np.sqrt(4.0**2 - 1)
            flagged += any(f.startswith("noise") for f in check(image + rng.normal(0, sigma, image.shape)))
        print(f"4x each image's own noise level: noise flag on {flagged} of {len(data.images)}")
        return

    cfg = load_config("evaluate").apply
    if args.model:
        result = _one_model(args.model, data, cfg)
    else:
        result = uncertainty_vs_error(args.run, data, json.loads((args.run / "splits.json").read_text()), cfg)
    fold = result["fold_model"]
    print(f"{result['n_images']} images, each by its held-out fold model, 8 symmetries: Spearman(uncertainty, "
          f"1 - Jaccard) over images = {fold['mean_std']['spearman']:.3f} (mean pixel std), "
          f"{fold['band_std']['spearman']:.3f} (mean std over 0.1 < p < 0.9; bootstrap 95 % over images "
          f"{fold['band_std']['ci95'][0]:.2f}-{fold['band_std']['ci95'][1]:.2f}, mean pixel std "
          f"{fold['mean_std']['ci95'][0]:.2f}-{fold['mean_std']['ci95'][1]:.2f}); OOD flags on "
          f"{result['n_ood']} of {result['n_images']}")
    print(f"mean error 1 - Jaccard over images: all {result['mean_error']:.3f}, the 10 highest in band std "
          f"{result['error_top10_uncertain']:.3f}, the 10 worst {result['error_top10_worst']:.3f}")
    for name, flags in result["ood"].items():
        print(f"  ood {name}: {'; '.join(flags)}")
    ens = result["ensemble"]
    print(f"held-out fold ensemble ({ens['members_mean']:.2f} fold models per image on average) x 8 symmetries, "
          f"mean error of its mean prediction {ens['mean_error']:.3f}, of the 10 highest in disagreement "
          f"{ens['error_top10_uncertain']:.3f}, of the 10 worst {ens['error_top10_worst']:.3f}; Spearman over images "
          "(bootstrap 95 %; minus the disagreement's, same resamples):")
    for title, key in (("  error of the ensemble's prediction", "by_ensemble_error"),
                       ("  error of the fold model alone", "by_own_fold_error"), ("  fold model alone (8 "
                       "symmetries), its own error", None)):
        print(title)
        table = ens[key] if key else fold
        for score, v in table.items():
            print(f"    {score:<19} {v['spearman']:+.3f} [{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}]  "
                  f"minus disagreement [{v['minus_disagreement_ci95'][0]:+.2f}, {v['minus_disagreement_ci95'][1]:+.2f}]")
    rows = [r["ensemble"] for r in result["images"]]
    print("  partial Spearman of the ensemble's disagreement and error given its predicted coverage: "
          f"{partial_spearman(*(np.array([r[k] for r in rows]) for k in ('disagreement', 'error', 'coverage'))):.3f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "images"}))


if __name__ == "__main__":
    main()
