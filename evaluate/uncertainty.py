"""Per-pixel uncertainty of the contamination probability, and its per-image summary.

Each ensemble member (one checkpoint, or every fold of a CV run folder) sees the image under each
of the 8 dihedral symmetries of the square (train.inference.DIHEDRAL), and each prediction is
mapped back: members x 8 samples per pixel. Their mean is the probability (the same as
`predict --tta`); their standard deviation is the uncertainty (at most 0.5 for values in [0, 1]).
With one checkpoint the std measures test-time-augmentation disagreement only; with a fold
ensemble, also the disagreement of models trained on different images.

The per-image score is the mean std over the pixels the model hesitates over (the band
BAND[0] < p < BAND[1] of the mean probability, mostly the edges of the predicted contamination;
0 when there are none): how unsure the model is where it is unsure. Measured on the 105 (each image
by its held-out fold model, benchmarks/bench_uncertainty.py) it ranks the images' error
1 - Jaccard with Spearman 0.54, where the plain mean pixel std, which grows with the amount of
contamination edge rather than with doubt, gives 0.24 (both computed, this one chosen after
seeing them). It needs no threshold, and does not favour heavily covered images.
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


def probability_and_std(models: Sequence[Any], image: np.ndarray, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 over members x symmetries of a preprocessed `image` (see module doc),
    accumulated as sums (two float64 maps, not members x 8 of them: a 2048 px image stays small)."""
    total = np.zeros(image.shape, np.float64)
    squares = np.zeros(image.shape, np.float64)
    n = 0
    for p in probability_samples(models, image, cfg):
        total += p
        squares += np.square(p, dtype=np.float64)
        n += 1
    mean = total / n
    return mean.astype(np.float32), np.sqrt(np.maximum(squares / n - mean**2, 0.0)).astype(np.float32)


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
    score = image_uncertainty(seg.uncertainty, seg.probability)
    axes[1].set_title(f"std of P(contamination); image score {score:.3f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="std over members x symmetries")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def uncertainty_vs_error(run_dir: Path, data: Any, splits: Sequence[dict], cfg: Any,
                         n_boot: int = 2000) -> dict[str, Any]:
    """Does the uncertainty say where the model is wrong? Each image of `data` (a LabelledSet)
    is predicted with its 8 symmetries by the fold model of the CV run folder `run_dir` that did
    not train on it (the first repeat of `splits`); returns the Spearman correlation over images
    of the error 1 - Jaccard with `image_uncertainty` ("spearman_band_std") and with the plain mean
    pixel std, bootstrap 95 % intervals over images, the mean error of the 10 most uncertain and
    of the 10 worst images, and the OOD flags (evaluate.ood) raised."""
    import warnings

    import scipy.stats

    from grapheneseg.metrics import confusion, scores
    from grapheneseg.preprocessing import preprocess
    from train.inference import load_models

    from .ood import OODWarning, check

    index = {name: i for i, name in enumerate(data.names)}
    rows = []
    for split in (s for s in splits if s["repeat"] == 0):
        models = load_models(Path(run_dir) / f"fold_{split['fold']}" / "model.ckpt", "cpu")
        for name in split["test"]:
            i = index[name]
            prob, std = probability_and_std(models, preprocess(data.images[i]), cfg)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OODWarning)
                flags = check(data.images[i], name)
            rows.append({"name": name, "uncertainty": float(std.mean()),
                         "band_uncertainty": image_uncertainty(std, prob),
                         "error": 1.0 - scores(confusion(prob > cfg.threshold, data.masks[i]))["jaccard"],
                         "ood": flags})
    u, b, e = (np.array([r[k] for r in rows]) for k in ("uncertainty", "band_uncertainty", "error"))
    rng = np.random.default_rng(0)
    boot = [rng.integers(0, len(rows), len(rows)) for _ in range(n_boot)]
    ci = {k: np.nanpercentile([scipy.stats.spearmanr(x[i], e[i])[0] for i in boot], [2.5, 97.5]).tolist()
          for k, x in (("mean_std", u), ("band_std", b))}
    top = min(10, len(rows))
    return {"n_images": len(rows), "spearman_mean_std": float(scipy.stats.spearmanr(u, e)[0]),
            "spearman_band_std": float(scipy.stats.spearmanr(b, e)[0]), "spearman_ci95": ci,
            "error_top10_uncertain": float(e[np.argsort(-b)[:top]].mean()),
            "error_top10_worst": float(np.sort(e)[-top:].mean()),
            "n_ood": sum(bool(r["ood"]) for r in rows), "ood": {r["name"]: r["ood"] for r in rows if r["ood"]},
            "mean_error": float(e.mean()), "mean_uncertainty": float(u.mean())}
