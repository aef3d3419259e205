"""Looking at simulated data: contact sheets, dataset summaries, and sim-vs-real statistics.

`compare` puts simulated and real micrographs through the same preprocessing
(grapheneseg.preprocessing.preprocess) and compares what the segmentation network sees: radially
averaged power spectra, the radius of the graphene {100} lattice spots (sets the pixel size; real
images sit at 36-56 in 1/256 px^-1 units), intensity histograms, contamination fractions, the
contamination-to-lattice contrast (std inside / outside the mask) and the ellipticity of the
amorphous carbon's Thon rings (two-fold astigmatism).
"""
from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
import numpy as np  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from scipy import ndimage  # noqa: E402

from grapheneseg import GRAPHENE_D100  # noqa: E402
from grapheneseg.lattice import read_pixel_size  # noqa: E402
from grapheneseg.spectrum import band_means, frequencies, power_spectrum  # noqa: E402
from grapheneseg.micrographs import load_labelled  # noqa: E402
from grapheneseg.preprocessing import preprocess  # noqa: E402

from .dataset import open_dataset  # noqa: E402

SPOT_SEARCH = (25, 75)  # radii (1/256 px^-1 units) searched for the lattice ring
HIST_BINS = np.linspace(-5, 5, 101)


# ------------------------------------------------------------------ preview

def preview(cfg: DictConfig, n: int, out: Path, source: Path | None = None) -> Path:
    """Contact sheet of n images (pairs of variants of n/2 structures) with contamination outlines."""
    if n < 1:
        raise ValueError(f"preview --n {n}: must be >= 1")
    if source is not None:
        with open_dataset(source) as f:
            k = min(n, f["images"].shape[0])
            images, masks, classes, meta = f["images"][:k], f["masks"][:k], f["classes"][:k], f["meta"][:k]
    else:
        from omegaconf import OmegaConf

        from .driver import init_worker, physics_config, validate
        from .imaging import limit_threads
        from .pipeline import simulate_structure

        validate(cfg)
        limit_threads()
        init_worker(OmegaConf.to_yaml(physics_config(cfg)), cfg.device)
        samples = []
        for s in range((n + 1) // 2):
            samples += simulate_structure(cfg, int(cfg.seed), s, [0, 1][: n - len(samples)])[0]
        images = np.stack([s.image for s in samples])
        masks = np.stack([s.mask for s in samples])
        classes = np.stack([s.classes for s in samples])
        meta = np.stack([s.meta for s in samples])
    cols = min(4, len(images))
    rows = int(np.ceil(len(images) / cols))
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, mask, cls, m in zip(axes.ravel(), images, masks, classes, meta):
        ax.imshow(preprocess(image), cmap="gray", vmin=-3, vmax=3)
        if mask.any():
            ax.contour(mask, levels=[0.5], colors="red", linewidths=0.7)
        if (cls == 2).any():
            ax.contour(cls == 2, levels=[0.5], colors="cyan", linewidths=0.7)
        ax.set_title(f"#{m['index']} {m['pixel_size']:.2f} A/px, df {m['defocus']:+.0f} A\n"
                     f"dose {m['dose']:.0f}, {int(m['n_grains'])} grain(s), cont {m['contamination_fraction']:.2f}", fontsize=7)
    fig.suptitle("simulated HRTEM (preprocessed); red: contamination label, cyan: holes", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


# ------------------------------------------------------------------ inspect

def inspect_dataset(path: Path) -> dict:
    """Counts, schema, parameter ranges and contamination statistics of a dataset file."""
    with open_dataset(path) as f:
        meta = f["meta"][:]
        n = len(meta)
        summary = {
            "file": str(path),
            "schema_version": int(f.attrs["schema_version"]),
            "package_version": str(f.attrs["package_version"]),
            "images": n,
            "n_target": int(f.attrs["n_target"]),
            "complete": bool(f.attrs["complete"]),
            "shape": list(f["images"].shape),
            "structures": int(len(np.unique(meta["structure"]))) if n else 0,
            "variants_per_structure": int(f.attrs["variants_per_structure"]),
        }
        skip = {"index", "seed", "structure", "variant"}
        summary["ranges"] = {
            name: [float(meta[name].min()), float(meta[name].max()), float(meta[name].mean())]
            for name in meta.dtype.names if name not in skip and n
        }
        fractions = meta["contamination_fraction"] if n else np.zeros(0)
        summary["contamination"] = _distribution(fractions) | {"empty_share": float(np.mean(fractions == 0)) if n else 0.0}
        summary["image_mean"] = float(np.mean([f["images"][i].mean() for i in range(0, n, max(1, n // 100))])) if n else 0.0
    return summary


def _distribution(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"n": 0}
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {"n": int(len(values)), "mean": float(np.mean(values)), "min": float(q[0]), "q25": float(q[1]),
            "median": float(q[2]), "q75": float(q[3]), "max": float(q[4])}


# ------------------------------------------------------------------ compare

def radial_spectrum(image: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of a 256 px preprocessed image (Hann window), radius 0..128."""
    n, w = image.shape
    qy, qx = frequencies(image.shape, half=False)
    r = np.hypot(qy * n, qx * w).round().astype(int)
    return band_means(power_spectrum(image.astype(np.float64), half=False), r, n // 2 + 1)


def spot_radius(spectrum: np.ndarray) -> float:
    """Radius of the strongest lattice ring: peak of log spectrum over a smooth background
    (in 1/n px^-1 units for an n px image; the search range scales from 256 px)."""
    log = np.log(spectrum + 1e-12)
    scale = (len(spectrum) - 1) / 128
    background = ndimage.median_filter(log, size=max(3, int(round(15 * scale)) | 1), mode="nearest")
    lo, hi = (int(round(r * scale)) for r in SPOT_SEARCH)
    return float(lo + np.argmax((log - background)[lo:hi]))


def contrast_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    """Std of the preprocessed image inside contamination over std outside (nan if either < 5%)."""
    share = mask.mean()
    if share < 0.05 or share > 0.95:
        return float("nan")
    smooth = ndimage.gaussian_filter(image, 2.0)  # local contrast at the contamination's length scale
    return float(smooth[mask].std() / smooth[~mask].std())


THON_BAND = (0.15, 0.9)  # 1/A: past the illumination's slow variations, inside the information limit
LATTICE_RINGS = tuple(np.sqrt(m) / GRAPHENE_D100 for m in (1, 3, 4))  # {100}, {110}, {200}, 1/A


def thon_anisotropy(image: np.ndarray, mask: np.ndarray, pixel_size: float) -> float:
    """Two-fold anisotropy of the Thon rings inside `mask` (the amorphous carbon): the power
    spectrum of the masked region (soft edge, mean removed) sampled on circles of 0.15-0.9 1/A,
    its cos 2 theta amplitude over its mean, averaged over the circles. Two-fold astigmatism makes
    the rings elliptical, which raises it; isotropic rings leave the noise floor. The graphene
    lattice's rings are left out and its spots removed by a median over 5 degree arcs. nan when
    the mask covers < 5 % of the image. Scale-free in the image's gain; `pixel_size` in A."""
    if mask.mean() < 0.05:
        return float("nan")
    n = image.shape[0]
    im = image.astype(np.float64) - ndimage.gaussian_filter(image.astype(np.float64), 20)
    weight = ndimage.gaussian_filter(mask.astype(np.float64), 4)
    x = (im - (im * weight).sum() / weight.sum()) * weight
    power = ndimage.gaussian_filter(np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2, 1.0)
    k = np.linspace(THON_BAND[0], min(THON_BAND[1], 0.45 / pixel_size), 48)
    k = k[np.all([np.abs(k - ring) > 0.035 for ring in LATTICE_RINGS], axis=0)]
    theta = (np.arange(144) + 0.5) * np.pi / 144  # half circle: the power spectrum is centrosymmetric
    r = k[:, None] * n * pixel_size
    circles = ndimage.map_coordinates(power, [n / 2 + r * np.sin(theta), n / 2 + r * np.cos(theta)], order=1)
    circles = np.median(circles.reshape(len(k), 36, 4), axis=2)
    harmonics = np.fft.rfft(circles, axis=1)  # harmonic 1 over a half circle = cos 2 theta
    return float(np.mean(np.abs(harmonics[:, 1]) / np.abs(harmonics[:, 0])))


def _set_stats(images: list[np.ndarray], masks: list[np.ndarray], pixel_sizes: np.ndarray) -> dict:
    pre = [preprocess(im) for im in images]
    thon = [thon_anisotropy(im, m.astype(bool), a) if np.isfinite(a) else np.nan  # raw, as bench_astigmatism
            for im, m, a in zip(images, masks, pixel_sizes)]
    spectra = np.array([radial_spectrum(p) for p in pre])
    hist = np.histogram(np.concatenate([p.ravel() for p in pre]), HIST_BINS, density=True)[0]
    return {
        "spectra": spectra,
        "spots": np.array([spot_radius(s) for s in spectra]),
        "hist": hist,
        "fractions": np.array([m.mean() for m in masks]),
        "contrast": np.array([contrast_ratio(p, m.astype(bool)) for p, m in zip(pre, masks)]),
        "thon": np.array(thon),
    }


def compare(sim: Path, real: Path, out: Path, max_sim: int = 500) -> dict:
    """Statistics and figures of simulated vs real images; writes compare.json and compare.png."""
    real_set = load_labelled(real)
    with open_dataset(sim) as f:
        k = min(max_sim, f["images"].shape[0])
        if k == 0:
            raise ValueError(f"{sim}: holds no images")
        take = np.linspace(0, f["images"].shape[0] - 1, k).astype(int)
        sim_images, sim_masks, meta = list(f["images"][take]), list(f["masks"][take]), f["meta"][take]
    if sim_images[0].shape != real_set.images[0].shape:
        raise ValueError(f"{sim}: image size {sim_images[0].shape} differs from the real {real_set.images[0].shape}")
    real_pixel_sizes = np.array([read_pixel_size(im) or np.nan for im in real_set.images])
    s = _set_stats(sim_images, sim_masks, meta["pixel_size"])
    r = _set_stats(real_set.images, real_set.masks, real_pixel_sizes)
    radii = np.arange(s["spectra"].shape[1])
    band = (radii >= 5) & (radii <= 120)
    mean_s, mean_r = s["spectra"].mean(0), r["spectra"].mean(0)
    result = {
        "n_sim": k,
        "n_real": len(real_set),
        "spot_radius": {"sim": _distribution(s["spots"]), "real": _distribution(r["spots"]),
                        "sim_expected_from_pixel_size": _distribution(256 * meta["pixel_size"] / GRAPHENE_D100)},
        "histogram_overlap": float(np.sum(np.minimum(s["hist"], r["hist"])) * np.diff(HIST_BINS)[0]),
        "spectrum_log10_ratio": {
            "mean_abs": float(np.mean(np.abs(np.log10(mean_s[band] / mean_r[band])))),
            "high_freq_80_120": float(np.mean(np.log10(mean_s[80:121] / mean_r[80:121]))),
            "low_freq_5_30": float(np.mean(np.log10(mean_s[5:31] / mean_r[5:31]))),
        },
        "contamination_fraction": {"sim": _distribution(s["fractions"]), "real": _distribution(r["fractions"])},
        "contrast_ratio": {"sim": _distribution(s["contrast"][np.isfinite(s["contrast"])]),
                           "real": _distribution(r["contrast"][np.isfinite(r["contrast"])])},
        # Thon-ring ellipticity inside the labelled contamination (images with >= 5 %; real ones need a
        # readable lattice for their scale): real above simulated = more two-fold astigmatism than
        # `optics.astigmatism` draws (benchmarks/bench_astigmatism.py fits the range)
        "thon_anisotropy": {"sim": _distribution(s["thon"][np.isfinite(s["thon"])]),
                            "real": _distribution(r["thon"][np.isfinite(r["thon"])])},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    _compare_figure(s, r, radii, out / "compare.png")
    return result


def _compare_figure(s: dict, r: dict, radii: np.ndarray, path: Path) -> None:
    fig = Figure(figsize=(10, 8))
    ax = fig.subplots(2, 2)
    for stats, name, colour in ((s, "simulated", "C0"), (r, "real", "C3")):
        q = np.percentile(stats["spectra"], [25, 50, 75], axis=0)
        ax[0, 0].fill_between(radii, q[0], q[2], color=colour, alpha=0.25)
        ax[0, 0].plot(radii, q[1], color=colour, label=f"{name} (median, IQR)")
        ax[0, 1].hist(stats["spots"], bins=np.arange(*SPOT_SEARCH, 2), alpha=0.5, color=colour, density=True, label=name)
        ax[1, 0].plot(0.5 * (HIST_BINS[1:] + HIST_BINS[:-1]), stats["hist"], color=colour, label=name)
        ax[1, 1].hist(stats["fractions"], bins=np.linspace(0, 1, 21), alpha=0.5, color=colour, density=True, label=name)
    ax[0, 0].set(yscale="log", xlabel="radius (1/256 px$^{-1}$)", ylabel="power", title="radial power spectrum")
    lo, hi = np.min(r["spots"]), np.max(r["spots"])
    ax[0, 1].axvspan(lo, hi, color="grey", alpha=0.15)
    ax[0, 1].set(xlabel="lattice-spot radius (1/256 px$^{-1}$)", title=f"{{100}} spot radius (grey: real {lo:.0f}-{hi:.0f})")
    ax[1, 0].set(yscale="log", xlabel="preprocessed intensity", title="intensity histogram")
    ax[1, 1].set(xlabel="contamination fraction", title="labelled contamination per image")
    for a in ax.ravel():
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def ctf_100_table(cfg: DictConfig, draws: int, seed: int = 0) -> list[dict]:
    """Per defocus bin (6 over `cfg.optics.defocus`): the simulator's CTF sin(chi) at the {100} ring of
    one grain's three reflection pairs over `draws` optics: its median |value|, the share with one
    pair near a CTF zero (< 0.2) and the share whose three signs differ (`mixed_share`: images whose
    lattice is also the half-lattice-shifted sheet's; evaluate.analysis.registration.ring_signs)."""
    from abtem.core.energy import energy2wavelength

    from .imaging import draw_optics

    rng = np.random.default_rng(seed)
    wavelength = energy2wavelength(cfg.optics.energy)
    alpha = wavelength / GRAPHENE_D100
    out = []
    for _ in range(draws):
        o = draw_optics(rng, cfg.optics)
        phi = rng.uniform(0, np.pi / 3) + np.array([0.0, np.pi / 3, 2 * np.pi / 3])  # a grain's three pairs
        c10 = -o.defocus + o.astigmatism * np.cos(2 * (phi - o.astigmatism_angle))
        out.append((o.defocus, np.sin(2 * np.pi / wavelength * (0.5 * alpha ** 2 * c10 + 0.25 * o.cs * alpha ** 4))))
    defocus = np.array([d for d, _ in out])
    sines = np.array([s for _, s in out])
    edges = np.linspace(*cfg.optics.defocus, 7)
    table = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (defocus >= lo) & ((defocus < hi) | (k == len(edges) - 2))
        s = sines[inside]
        table.append({"defocus_A": [float(lo), float(hi)], "draws": int(inside.sum()),
                      "median_abs_sin_chi": float(np.median(np.abs(s).mean(axis=1))),
                      "near_zero_share": float(np.mean(np.abs(s).min(axis=1) < 0.2)),
                      "mixed_share": float(np.mean(np.abs(np.sign(s).sum(axis=1)) < 3))})
    return table
