"""Per-pixel uncertainty of the contamination probability, and its per-image summary.

Each ensemble member (one checkpoint, or every fold of a CV run folder) sees the image under each
of the 8 dihedral symmetries of the square (train.inference.DIHEDRAL), and each prediction is
mapped back: members x 8 samples per pixel. Their mean is the probability (the same as
`predict --tta`); their standard deviation is the uncertainty (at most 0.5 for values in [0, 1]).
With one checkpoint the std measures test-time-augmentation disagreement only; with a fold
ensemble, also the disagreement of models trained on different images.

Two per-image scores summarise the maps. The Jaccard disagreement (`jaccard_disagreement`; the
`uncertainty` column of `predict`) is the mean over the samples (members x symmetries) of
1 - Jaccard between the sample's mask and the mask of their mean, the prediction given. It was
defined before it was measured: the error to predict is 1 - Jaccard of that prediction against
the truth; if the truth lay among the samples like one more of them, the samples' Jaccard
distance to the prediction would estimate it, in the same units, normalised by the predicted
area as the error is, and with the same rule for empty masks (a clean image whose samples mark
nothing scores 0; one where some mark a speck scores high, as its error would be). The band std
(`image_uncertainty`: the mean std over the pixels with BAND[0] < mean p < BAND[1]) is what
`suggest` ranks by. On the 105 (benchmarks/bench_uncertainty.py, README) the disagreement ranks
the error with Spearman 0.60-0.84, the band std with 0.26-0.49 (the same five set-ups).

Under cross-validation (`uncertainty_vs_error`) the ensemble of an image is its own fold model
and every other fold model that never trained on it (`held_out_members`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BAND = (0.1, 0.9)  # mean probabilities counted as hesitant by the per-image score
MAX_STD = 0.5  # the largest std of values in [0, 1]: every map shares this colour scale
CMAP = "magma"


def probability_samples(models: Sequence[Any], image: np.ndarray, cfg: Any) -> Iterator[np.ndarray]:
    """The (H, W) contamination probabilities of a preprocessed `image`, one per (member,
    symmetry), each mapped back onto the image's grid (tiled as in evaluate.apply)."""
    from train.inference import DIHEDRAL

    from .apply import tiled_probability

    for model in models:
        for k, flip in DIHEDRAL:
            seen = np.rot90(image, k)
            seen = np.ascontiguousarray(seen[:, ::-1] if flip else seen)
            p = tiled_probability([model], seen, cfg.tile, cfg.overlap, cfg.batch_size, tta=False)
            yield np.rot90(p[:, ::-1] if flip else p, -k)


def probability_and_std(models: Sequence[Any], image: np.ndarray, cfg: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, std, disagreement) over members x symmetries of a preprocessed `image` (see module
    doc): float32 maps and the `jaccard_disagreement` of the samples' masks at `cfg.threshold`.
    Accumulated as sums (two float64 maps) and bit-packed masks, not members x 8 float maps: a
    2048 px image stays small."""
    total = np.zeros(image.shape, np.float64)
    squares = np.zeros(image.shape, np.float64)
    packed = []
    for p in probability_samples(models, image, cfg):
        total += p
        squares += np.square(p, dtype=np.float64)
        packed.append(np.packbits(p > cfg.threshold))
    mean = total / len(packed)
    consensus = mean > cfg.threshold
    disagreement = float(np.mean([jaccard_disagreement(
        np.unpackbits(m, count=image.size).reshape(1, *image.shape).astype(bool), consensus) for m in packed]))
    std = np.sqrt(np.maximum(squares / len(packed) - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32), disagreement


def image_uncertainty(std: np.ndarray, probability: np.ndarray) -> float:
    """The per-image score: mean std over pixels with BAND[0] < probability < BAND[1], 0 when none
    (see module doc)."""
    band = (probability > BAND[0]) & (probability < BAND[1])
    return float(std[band].mean()) if band.any() else 0.0


def uncertainty_rgb(image: np.ndarray, std: np.ndarray) -> np.ndarray:
    """RGB float in [0, 1]: the grey micrograph blended with the std in `CMAP` (alpha = std / 0.5)."""
    lo, hi = np.percentile(image, [1, 99])
    grey = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)[..., None].repeat(3, axis=2)
    colour = plt.get_cmap(CMAP)(np.clip(std / MAX_STD, 0, 1))[..., :3]
    alpha = np.clip(std / MAX_STD * 2, 0, 1)[..., None]  # half the maximum std is fully coloured
    return np.clip((1 - alpha) * grey + alpha * colour, 0.0, 1.0)


def plot_uncertainty(seg: Any, path: Path) -> Path:
    """<stem>_uncertainty.png: the std map in `CMAP` on the fixed scale 0-0.5, with a colorbar,
    beside the micrograph with the uncertainty overlaid."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4))
    axes[0].imshow(uncertainty_rgb(seg.micrograph.image, seg.uncertainty), interpolation="lanczos")
    axes[0].set_title(seg.micrograph.path.name, fontsize=8)
    shown = axes[1].imshow(seg.uncertainty, cmap=CMAP, vmin=0, vmax=MAX_STD, interpolation="nearest")
    axes[1].set_title(f"std of P(contamination); Jaccard disagreement {seg.disagreement:.3f}, "
                      f"band std {image_uncertainty(seg.uncertainty, seg.probability):.3f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="std over members x symmetries")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def jaccard_disagreement(masks: np.ndarray, consensus: np.ndarray) -> float:
    """Mean over samples of 1 - Jaccard(sample mask, consensus mask), (S, H, W) and (H, W) booleans;
    two empty masks agree (Jaccard 1), as in grapheneseg.metrics. The members' scatter around the
    prediction, measured in the units of the error it stands in for (see module doc)."""
    inter = (masks & consensus).sum(axis=(1, 2))
    union = (masks | consensus).sum(axis=(1, 2))
    return float(np.mean(np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0)))


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
    rng = np.random.default_rng(0)
    boot = [rng.integers(0, len(rows), len(rows)) for _ in range(n_boot)]
    with warnings.catch_warnings():  # a resample of a few tiny images can be constant: nan, left out
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
        rho = {k: np.array([scipy.stats.spearmanr(v[i], e[i])[0] for i in boot]) for k, v in x.items()}
    return {k: {"spearman": float(scipy.stats.spearmanr(v, e)[0]),
                "ci95": np.nanpercentile(rho[k], [2.5, 97.5]).tolist(),
                f"minus_{primary}_ci95": np.nanpercentile(rho[k] - rho[primary], [2.5, 97.5]).tolist()}
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
    import warnings

    from grapheneseg.metrics import confusion, scores
    from grapheneseg.preprocessing import preprocess
    from train.checkpoints import read_checkpoint
    from train.inference import load_models

    from .ood import OODWarning, check

    def error(prob: np.ndarray, label: np.ndarray) -> float:
        return 1.0 - scores(confusion(prob > cfg.threshold, label))["jaccard"]

    first = sorted((s for s in splits if s["repeat"] == 0), key=lambda s: s["fold"])
    paths = [Path(run_dir) / f"fold_{s['fold']}" / "model.ckpt" for s in first]
    models = [load_models(p, "cpu")[0] for p in paths]
    seen = [set(read_checkpoint(p).get("train_images", [])) for p in paths]
    index = {name: i for i, name in enumerate(data.names)}
    rows = []
    for f, split in enumerate(first):
        for name in split["test"]:
            i = index[name]
            image = preprocess(data.images[i])
            members = held_out_members(seen, f, name)
            samples = {g: np.stack(list(probability_samples([models[g]], image, cfg))) for g in members}
            own = samples[f]
            both = np.concatenate([samples[g] for g in members])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OODWarning)
                flags = check(data.images[i], name)
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
