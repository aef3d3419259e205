"""Bragg-filter baseline (Sadre et al. 2021, eqs. 4-6): contamination = what the lattice does not explain.

1. G(q) = |q| |FFT(I W)| on the padded, preprocessed image (W a Hann window), smoothed by a
   Gaussian of `peak_smoothing` px; up to `max_peaks` local maxima above `g_thresh` are the Bragg
   spots q_n (taken in symmetric pairs, q_n and -q_n).
2. I_Bragg = IFFT(FFT(I) * M(q)) with M = sum_n exp(-|q - q_n|^2 / 2 sigma^2), clipped to 1.
3. residual = GaussianLowPass_lowpass(|I - I_Bragg - mean|); contamination = residual > m_thresh.

G is divided by its mean, so g_thresh is in units of the typical spectrum level; q is in 1/px. `fit` chooses sigma and g_thresh on a grid and m_thresh exactly (the
threshold that maximises the pooled Jaccard of the training images).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage
from tqdm import tqdm

from grapheneseg.config import real_dir, save_config, to_plain, write_json
from grapheneseg.metrics import confusion, mean_and_spread, per_image, pooled
from grapheneseg.micrographs import DataError, load_labelled
from grapheneseg.preprocessing import preprocess
from grapheneseg.splits import SERIES_PATTERN, adopt_splits, load_or_make_splits

HIST_RANGE = (0.0, 4.0)  # residual values covered by the threshold search (beyond: top bin)
HIST_BINS = 4000


@dataclass
class BraggParams:
    """Every parameter of the filter; the last three are the ones fitted on training data."""

    max_peaks: int = 24
    peak_smoothing: float = 2.0
    lowpass: float = 5.0
    pad: int = 32
    min_q: float = 0.06
    sigma: float = 0.004
    g_thresh: float = 2.0
    m_thresh: float = 0.81

    @classmethod
    def from_config(cls, cfg: Any) -> "BraggParams":
        """From the `bragg` config group (extra keys such as `fit` are ignored)."""
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@lru_cache(maxsize=8)
def _peak_grids(shape: tuple[int, int], ext: int) -> tuple[np.ndarray, np.ndarray]:
    """|q| (1/px) on the rfft2 grid extended by `ext` columns of negative qx, and the Hann window."""
    qx = np.arange(-ext, shape[1] // 2 + 1) / shape[1]
    q = np.hypot(scipy.fft.fftfreq(shape[0])[:, None], qx[None, :])
    window = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    return q.astype(np.float32), window.astype(np.float32)


@lru_cache(maxsize=8)
def _lowpass_tf(shape: tuple[int, int], width: float) -> np.ndarray:
    """Transfer function of a Gaussian low-pass of std `width` px on the rfft2 grid of `shape`."""
    qy = scipy.fft.fftfreq(shape[0])[:, None]
    qx = scipy.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2 * (np.pi * width) ** 2 * (qy**2 + qx**2)).astype(np.float32)


def find_peaks(image: np.ndarray, params: BraggParams) -> np.ndarray:
    """Bragg spots as (qy, qx) in 1/px, symmetric pairs, strongest first.

    Works on the half plane of the real FFT, extended by a few columns of qx < 0 taken from the
    Hermitian symmetry G(qy, -qx) = G(-qy, qx), so smoothing and peak tests see true neighbours.
    G is divided by its mean: g_thresh means "times the typical spectrum level", whatever the
    image's size, contrast or noise.
    """
    ext = int(np.ceil(3 * params.peak_smoothing)) + 2
    q, window = _peak_grids(image.shape, ext)
    half = np.abs(scipy.fft.rfft2(image * window, workers=1))
    mirror = np.roll(half[::-1, 1 : ext + 1][:, ::-1], 1, axis=0)  # columns qx = -ext .. -1
    g = q * np.concatenate([mirror, half], axis=1)
    g = scipy.ndimage.gaussian_filter(g, params.peak_smoothing, mode=("wrap", "nearest"), truncate=3.0)
    g /= max(float(g.mean()), 1e-12)
    rows, cols = np.nonzero((g > params.g_thresh) & (q > params.min_q))
    # keep candidates that are the maximum of their 5x5 neighbourhood (rows wrap, columns clip)
    d = np.arange(-2, 3)
    nb_rows = (rows[:, None, None] + d[None, :, None]) % g.shape[0]
    nb_cols = np.clip(cols[:, None, None] + d[None, None, :], 0, g.shape[1] - 1)
    is_max = g[rows, cols] >= g[nb_rows, nb_cols].reshape(len(rows), 25).max(axis=1, initial=-np.inf)
    rows, cols = rows[is_max], cols[is_max]
    fy = scipy.fft.fftfreq(image.shape[0])[rows]
    fx = (cols - ext) / image.shape[1]
    upper = (fx > 0) | ((fx == 0) & (fy > 0))  # one of each symmetric pair
    fy, fx, strength = fy[upper], fx[upper], g[rows[upper], cols[upper]]
    keep = np.argsort(strength)[::-1][: params.max_peaks // 2]
    qs = np.stack([fy[keep], fx[keep]], axis=1)
    return np.concatenate([qs, -qs])


def bragg_mask(shape: tuple[int, int], peaks: np.ndarray, sigma: float) -> np.ndarray:
    """M(q) on the rfft2 grid of `shape`: Gaussian apertures of width `sigma` (1/px), clipped to 1.

    Each aperture is separable, exp(-dqy^2/2s^2) exp(-dqx^2/2s^2) with periodic distances, so the
    sum over peaks is one small matrix product (n0 x P) @ (P x n1/2+1).
    """
    if len(peaks) == 0:
        return np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.float32)
    qy = scipy.fft.fftfreq(shape[0])[None, :]
    qx = scipy.fft.rfftfreq(shape[1])[None, :]
    dy = (qy - peaks[:, :1] + 0.5) % 1.0 - 0.5  # periodic distance in 1/px
    dx = (qx - peaks[:, 1:] + 0.5) % 1.0 - 0.5
    gy = np.exp(-(dy**2) / (2 * sigma**2)).astype(np.float32)
    gx = np.exp(-(dx**2) / (2 * sigma**2)).astype(np.float32)
    return np.minimum(gy.T @ gx, 1.0)


def residual_map(image: np.ndarray, params: BraggParams, preprocessed: bool = False) -> np.ndarray:
    """Low-passed |I - I_Bragg - mean| on the image grid (the quantity thresholded by m_thresh).

    Peaks are found on the unpadded image; the lattice is subtracted on the reflect-padded one.
    """
    image = (image if preprocessed else preprocess(image)).astype(np.float32)
    peaks = find_peaks(image, params)
    p = params.pad
    padded = np.pad(image, p, mode="reflect") if p else image
    spectrum = scipy.fft.rfft2(padded, workers=1)
    keep = 1.0 - bragg_mask(padded.shape, peaks, params.sigma)  # I - I_Bragg = IFFT(F (1 - M))
    keep[0, 0] = 0.0  # ... minus its mean
    deviation = np.abs(scipy.fft.irfft2(spectrum * keep, s=padded.shape, workers=1))
    lowpass = _lowpass_tf(padded.shape, params.lowpass)
    smooth = scipy.fft.irfft2(scipy.fft.rfft2(deviation, workers=1) * lowpass, s=padded.shape, workers=1)
    return smooth[p : p + image.shape[0], p : p + image.shape[1]] if p else smooth


def segment(image: np.ndarray, params: BraggParams, preprocessed: bool = False) -> np.ndarray:
    """Boolean contamination mask of one raw (or already preprocessed) micrograph."""
    return residual_map(image, params, preprocessed) > params.m_thresh


def _histograms(residual: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(2, HIST_BINS) counts of residual values for truth=False / truth=True pixels."""
    edges = np.linspace(*HIST_RANGE, HIST_BINS + 1)
    idx = np.clip(np.searchsorted(edges, residual.ravel(), side="right") - 1, 0, HIST_BINS - 1)
    return np.stack([np.bincount(idx[~truth.ravel()], minlength=HIST_BINS),
                     np.bincount(idx[truth.ravel()], minlength=HIST_BINS)])


def best_threshold(hist: np.ndarray) -> tuple[float, float]:
    """(m_thresh, pooled Jaccard) maximising Jaccard of `residual > m_thresh` over summed histograms."""
    neg, pos = hist[0].astype(np.float64), hist[1].astype(np.float64)
    # predicted positive = bins strictly above the threshold edge
    fp = np.concatenate([np.cumsum(neg[::-1])[::-1][1:], [0.0]])
    tp = np.concatenate([np.cumsum(pos[::-1])[::-1][1:], [0.0]])
    jaccard = tp / np.maximum(pos.sum() + fp, 1.0)
    best = int(np.argmax(jaccard))
    edges = np.linspace(*HIST_RANGE, HIST_BINS + 1)
    return float(edges[best + 1]), float(jaccard[best])


@dataclass
class Grid:
    """Residual-map histograms of every image for every (sigma, g_thresh) on the search grid."""

    candidates: list[tuple[float, float]]
    hists: np.ndarray  # (n_candidates, n_images, 2, HIST_BINS)


def grid_histograms(images: list[np.ndarray], masks: list[np.ndarray], base: BraggParams,
                    sigmas: list[float], g_threshs: list[float], progress: Any = None) -> Grid:
    """Compute once, reuse for every fold: fitting a fold only sums its training images' histograms."""
    pre = [preprocess(im) for im in images]
    candidates = [(s, g) for s in sigmas for g in g_threshs]
    hists = np.zeros((len(candidates), len(images), 2, HIST_BINS), dtype=np.int32)
    for c, (sigma, g) in enumerate(candidates):
        params = BraggParams(**{**base.to_dict(), "sigma": sigma, "g_thresh": g})
        for i, (image, mask) in enumerate(zip(pre, masks)):
            hists[c, i] = _histograms(residual_map(image, params, preprocessed=True), mask)
        if progress is not None:
            progress.update(1)
    return Grid(candidates, hists)


def fit_from_grid(grid: Grid, train_idx: list[int] | np.ndarray, base: BraggParams) -> tuple[BraggParams, float]:
    """Best (sigma, g_thresh, m_thresh) on the training images; also returns their pooled Jaccard."""
    best = (-1.0, 0, 0.0)
    for c in range(len(grid.candidates)):
        thresh, jac = best_threshold(grid.hists[c, train_idx].sum(axis=0))
        if jac > best[0]:
            best = (jac, c, thresh)
    sigma, g = grid.candidates[best[1]]
    return BraggParams(**{**base.to_dict(), "sigma": sigma, "g_thresh": g, "m_thresh": best[2]}), best[0]


def evaluate(images: list[np.ndarray], masks: list[np.ndarray], params: BraggParams) -> tuple[dict, list[np.ndarray]]:
    """Pooled metrics of the filter on labelled images, and the per-image confusion counts."""
    counts = [confusion(segment(im, params), m) for im, m in zip(images, masks)]
    return pooled(counts), counts


def cross_validate(images: list[np.ndarray], masks: list[np.ndarray], names: list[str],
                   splits: list[dict], base: BraggParams, sigmas: list[float], g_threshs: list[float],
                   progress: Any = None) -> list[dict]:
    """Fit on each split's training images, score its test images; one result dict per split."""
    grid = grid_histograms(images, masks, base, sigmas, g_threshs, progress)
    index = {name: i for i, name in enumerate(names)}
    results = []
    for split in splits:
        train_idx = [index[n] for n in split["train"]]
        test_idx = [index[n] for n in split["test"]]
        params, train_jaccard = fit_from_grid(grid, train_idx, base)
        metrics, counts = evaluate([images[i] for i in test_idx], [masks[i] for i in test_idx], params)
        results.append({
            "repeat": split["repeat"], "fold": split["fold"], "params": params.to_dict(),
            "train_jaccard": train_jaccard, "pooled": metrics,
            "per_image": {n: c.tolist() for n, c in zip(split["test"], counts)},
        })
    return results


def run_bragg_cv(cfg: Any, out_dir: Path, progress: bool = True, splits: list[dict] | None = None) -> dict[str, Any]:
    """k-fold CV of the Bragg filter (parameters fitted on training folds); writes bragg_cv.json.
    `splits`: folds handed over by a comparison (else made from cfg.cv and cfg.seed)."""
    data = load_labelled(real_dir(cfg))
    if splits is None:
        splits = load_or_make_splits(out_dir / "splits.json", data.names, cfg.cv.folds, cfg.cv.repeats, cfg.seed,
                                     cfg.cv.get("grouping", "series"), cfg.cv.get("series_pattern", SERIES_PATTERN))
    else:
        splits = adopt_splits(out_dir / "splits.json", splits, data.names)
    save_config(cfg, out_dir)
    base = BraggParams.from_config(cfg.bragg)
    n_grid = len(cfg.bragg.fit.sigma_grid) * len(cfg.bragg.fit.g_thresh_grid)
    start = time.perf_counter()
    with tqdm(total=n_grid, desc="bragg grid", unit="params", disable=not progress) as bar:
        results = cross_validate(data.images, data.masks, data.names, splits, base,
                                 list(cfg.bragg.fit.sigma_grid), list(cfg.bragg.fit.g_thresh_grid), bar)
    summary = {
        "method": "bragg", "real_dir": str(real_dir(cfg)), "n_images": len(data),
        "folds": cfg.cv.folds, "repeats": cfg.cv.repeats, "grouping": splits[0].get("grouping", "image"),
        "series_pattern": splits[0].get("series_pattern"), "seconds": time.perf_counter() - start,
        "pooled_mean": {m: v["mean"] for m, v in mean_and_spread([r["pooled"] for r in results]).items()},
        "pooled_spread": mean_and_spread([r["pooled"] for r in results]),
        "splits": results,
    }
    write_json(out_dir / "bragg_cv.json", summary)
    return summary


def fit_bragg(cfg: Any, out: Path, progress: bool = True) -> dict[str, Any]:
    """Fit sigma, g_thresh and m_thresh on every labelled image; writes the parameters as JSON."""
    data = load_labelled(real_dir(cfg))
    base = BraggParams.from_config(cfg.bragg)
    sigmas, gs = list(cfg.bragg.fit.sigma_grid), list(cfg.bragg.fit.g_thresh_grid)
    with tqdm(total=len(sigmas) * len(gs), desc="bragg grid", unit="params", disable=not progress) as bar:
        grid = grid_histograms(data.images, data.masks, base, sigmas, gs, bar)
    params, jaccard = fit_from_grid(grid, list(range(len(data))), base)
    result = {"method": "bragg", "params": params.to_dict(), "train_pooled_jaccard": jaccard,
              "real_dir": str(real_dir(cfg)), "n_images": len(data), "config": to_plain(cfg)}
    write_json(out, result)
    save_config(cfg, out.parent, f"{out.stem}.config.yaml")
    return result


def load_bragg_params(path: Path) -> BraggParams:
    """Parameters written by `evaluate bragg-fit` (clear error for anything else)."""
    try:
        data = json.loads(Path(path).read_text())
        return BraggParams(**data["params"])
    except FileNotFoundError:
        raise DataError(f"{path}: parameter file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a Bragg parameter file from `evaluate bragg-fit` ({err})") from None


def score_bragg(params: BraggParams, test_dir: Path) -> dict[str, Any]:
    """Pooled and per-image metrics of the Bragg filter on a labelled folder."""
    data = load_labelled(test_dir)
    metrics, counts = evaluate(data.images, data.masks, params)
    return {"pooled": metrics, "per_image": per_image(counts), "n_images": len(data),
            "counts": {n: c.tolist() for n, c in zip(data.names, counts)}}
