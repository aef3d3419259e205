"""Does the uncertainty say where the model is wrong? The per-image scores of
evaluate.apply.uncertainty against the error 1 - Jaccard, under cross-validation.

Under cross-validation (`uncertainty_vs_error`) the ensemble of an image is its own fold model
and every other fold model that never trained on it (`held_out_members`); Spearman correlations
with bootstrap intervals over images (grapheneseg.stats).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluate.apply.uncertainty import image_uncertainty, jaccard_disagreement
from grapheneseg.stats import bootstrap_indices, interval


def mutual_information(samples: np.ndarray) -> float:
    """Mean over pixels of H(mean p) - mean H(p) in bits over (S, H, W) probability samples (BALD):
    the part of the predictive entropy that is disagreement between samples."""
    def entropy(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return float((entropy(samples.mean(0)) - entropy(samples).mean(0)).mean())


def sample_scores(samples: np.ndarray, threshold: float) -> dict[str, float]:
    """Per-image scores of (S, H, W) probability samples: `jaccard_disagreement` of the thresholded
    samples with the thresholded mean (the held-out ensemble's score, chosen before measuring it),
    `image_uncertainty` (band std), the mean pixel std, `mutual_information` and the predicted
    coverage (the share of pixels in the mean's mask: a baseline with no uncertainty in it)."""
    mean, std = samples.mean(0), samples.std(0)
    mask = mean > threshold
    return {"disagreement": jaccard_disagreement(samples > threshold, mask),
            "band_std": image_uncertainty(std, mean), "mean_std": float(std.mean()),
            "mutual_information": mutual_information(samples), "coverage": float(mask.mean())}


def held_out_members(train_images: Sequence[set[str]], own: int, name: str) -> list[int]:
    """Indices of the fold models an image of fold `own` may be judged by honestly: its own fold
    model and every other whose recorded training images (`train_images`, one set per fold) do
    not hold `name`."""
    return [own] + [g for g, seen in enumerate(train_images) if g != own and name not in seen]


def _spearman_table(rows: Sequence[dict[str, Any]], error: str, scores: Sequence[str], n_boot: int,
                    primary: str) -> dict[str, Any]:
    """Spearman over rows of rows[error] with each of rows[score], bootstrap 95 % intervals over
    rows (seeded), and the interval of each score's Spearman minus `primary`'s on the same resamples."""
    import warnings

    import scipy.stats

    e = np.array([r[error] for r in rows])
    x = {k: np.array([r[k] for r in rows]) for k in scores}
    boot = bootstrap_indices(len(rows), n_boot)
    with warnings.catch_warnings():  # a resample of a few tiny images can be constant: nan, left out
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
        rho = {k: np.array([scipy.stats.spearmanr(v[i], e[i])[0] for i in boot]) for k, v in x.items()}
    return {k: {"spearman": float(scipy.stats.spearmanr(v, e)[0]),
                "ci95": list(interval(rho[k])), f"minus_{primary}_ci95": list(interval(rho[k] - rho[primary]))}
            for k, v in x.items()}


def uncertainty_vs_error(run_dir: Path, data: Any, splits: Sequence[dict], cfg: Any,
                         n_boot: int = 2000) -> dict[str, Any]:
    """Does the uncertainty say where the model is wrong? Over the images of `data` (a LabelledSet)
    under the first repeat of `splits` of the CV run folder `run_dir`, two set-ups, each giving the
    Spearman correlation over images of the error 1 - Jaccard with each per-image score of
    `sample_scores`, bootstrap 95 % intervals over images:

    - "fold_model": each image by its own fold model x 8 symmetries (also error_top10_*, the mean
      error of the 10 images of highest band std and of the 10 worst: the figures before the ensemble);
    - "ensemble": by the held-out fold ensemble (`held_out_members`) x 8 symmetries; the error is
      that of the ensemble's mean, the prediction the scores describe, as `predict --uncertainty`
      gives it ("by_own_fold_error": the same scores against the fold model's error), and the mean
      error of the 10 images of highest disagreement and of the 10 worst.

    Also the OOD flags (evaluate.ood) raised."""
    from grapheneseg.formats import Micrograph
    from grapheneseg.metrics import confusion, scores
    from train.models.checkpoints import read_checkpoint

    from evaluate.apply.ood import check
    from evaluate.apply.predictor import Predictor
    from evaluate.apply.scale import decide_scale

    def error(prob: np.ndarray, label: np.ndarray) -> float:
        return 1.0 - scores(confusion(prob > cfg.threshold, label))["jaccard"]

    first = sorted((s for s in splits if s["repeat"] == 0), key=lambda s: s["fold"])
    paths = [Path(run_dir) / f"fold_{s['fold']}" / "model.ckpt" for s in first]
    predictors = [Predictor(p, cfg, "cpu") for p in paths]
    seen = [set(read_checkpoint(p).get("train_images", [])) for p in paths]
    index = {name: i for i, name in enumerate(data.names)}
    rows = []
    for f, split in enumerate(first):
        for name in split["test"]:
            i = index[name]
            micrograph = Micrograph(Path(name), data.images[i], None)
            scale = decide_scale(micrograph)
            members = held_out_members(seen, f, name)
            samples = {g: predictors[g].samples(micrograph, scale) for g in members}
            own = samples[f]
            both = np.concatenate([samples[g] for g in members])
            flags = check(data.images[i], lattice=scale.lattice_found)
            row = {"name": name, "fold": split["fold"], "members": [first[g]["fold"] for g in members],
                   "error": error(own.mean(0), data.masks[i]), "ood": flags,
                   **sample_scores(own, cfg.threshold),
                   "ensemble": {"error": error(both.mean(0), data.masks[i]), **sample_scores(both, cfg.threshold)}}
            rows.append(row)
    names = ("disagreement", "band_std", "mean_std", "mutual_information", "coverage")
    ensemble = [{**r["ensemble"], "error_own_fold": r["error"]} for r in rows]
    e = np.array([r["error"] for r in rows])
    b = np.array([r["band_std"] for r in rows])
    ens_e, ens_d = (np.array([r[k] for r in ensemble]) for k in ("error", "disagreement"))
    fold = _spearman_table(rows, "error", names, n_boot, "disagreement")
    top = min(10, len(rows))
    return {"n_images": len(rows), "fold_model": fold,
            "error_top10_uncertain": float(e[np.argsort(-b)[:top]].mean()),
            "error_top10_worst": float(np.sort(e)[-top:].mean()),
            "ensemble": {"members_mean": float(np.mean([len(r["members"]) for r in rows])),
                         "error_top10_uncertain": float(ens_e[np.argsort(-ens_d)[:top]].mean()),
                         "error_top10_worst": float(np.sort(ens_e)[-top:].mean()),
                         "by_ensemble_error": _spearman_table(ensemble, "error", names, n_boot, "disagreement"),
                         "by_own_fold_error": _spearman_table(ensemble, "error_own_fold", names, n_boot,
                                                              "disagreement"),
                         "mean_error": float(ens_e.mean())},
            "n_ood": sum(bool(r["ood"]) for r in rows), "ood": {r["name"]: r["ood"] for r in rows if r["ood"]},
            "mean_error": float(e.mean()), "mean_uncertainty": float(np.mean([r["mean_std"] for r in rows])),
            "images": rows}
