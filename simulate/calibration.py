"""Fit the simulator's ranges to a folder of micrographs (`simulate calibrate`).

The statistics are those `simulate compare` shows, computed after the same preprocessing as the
network's input: the {100} lattice-spot radius (sets the pixel size), the radially averaged power
spectrum (dose, detector blur, defocus), the intensity histogram and, with labels, the labelled
contamination fraction and the contamination-to-lattice contrast. Each becomes a distance that is 0
for identical sets (`distances`).

The micrographs may be of any supported format, size and pixel size: `simulate.real_micrographs`
(`load_real`) brings them to the simulated scale and cuts them into image_px x image_px tiles.

The fit is cheap and deterministic:
1. the pixel-size range comes straight from the real micrographs' pixel sizes: the file's, else the
   lattice read by the same reader as `evaluate predict` (`grapheneseg.lattice.read_lattice`; tiles
   with neither count only for the other statistics);
2. a pool of exit waves is simulated once at that pixel size; every candidate re-images the same
   variants with the same noise draws, only with the dose scaled, the blur shifted and the defocus
   range scaled (common random numbers keep the search smooth); a coordinate search over a few
   values per parameter, twice round, keeps the best total distance;
3. with labels, the contamination coverage median is scaled until the simulated label fractions
   match the real ones (labels need no imaging, so this is cheap).
The result is a small YAML of overrides that `simulate generate --calibration FILE` merges onto the
config; it records the distances before and after and the folder it was fitted to, and
`calibration_figure` draws the fitted ranges against the real statistics beside it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from grapheneseg.lattice import read_pixel_size
from grapheneseg.preprocessing import preprocess

from .imaging import VariantImager, configure_abtem, draw_optics, exit_wave, wave_px
from .labels import make_labels
from .pipeline import border_px, structure_rng, variant_rng
from .real_micrographs import load_real
from .report import HIST_BINS, contrast_ratio, radial_spectrum, spot_radius
from .structures import build_structure

DOSE_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
BLUR_SHIFTS = (-0.15, 0.0, 0.15, 0.3, 0.45)  # px added to both ends of optics.blur (clipped at 0)
DEFOCUS_SCALES = (0.5, 0.75, 1.0, 1.5)
COVERAGE_SCALES = (0.5, 0.7, 1.0, 1.4, 2.0)


@dataclasses.dataclass
class Statistics:
    """What `simulate compare` measures, per image, after preprocessing."""

    spots: np.ndarray
    pixel_sizes: np.ndarray  # A/px: given, else the lattice's (`grapheneseg.lattice.read_pixel_size`); nan: none
    spectrum: np.ndarray  # median radial power spectrum
    hist: np.ndarray
    fractions: np.ndarray | None = None
    contrast: np.ndarray | None = None


def measure(images: list[np.ndarray], masks: list[np.ndarray] | None = None,
            pixel_sizes: np.ndarray | None = None) -> Statistics:
    """The statistics of `images` (and `masks`); `pixel_sizes` (A/px, nan: unknown) when they are
    known, else read from each image's lattice."""
    pre = [preprocess(im) for im in images]
    spectra = np.array([radial_spectrum(p) for p in pre])
    stats = Statistics(
        spots=np.array([spot_radius(s) for s in spectra]),
        pixel_sizes=(np.array([read_pixel_size(im) or np.nan for im in images]) if pixel_sizes is None
                     else np.asarray(pixel_sizes, dtype=float)),
        spectrum=np.median(spectra, axis=0),
        hist=np.histogram(np.concatenate([p.ravel() for p in pre]), HIST_BINS, density=True)[0],
    )
    if masks is not None:
        stats.fractions = np.array([m.mean() for m in masks])
        contrast = np.array([contrast_ratio(p, m.astype(bool)) for p, m in zip(pre, masks)])
        stats.contrast = contrast[np.isfinite(contrast)]
    return stats


def _wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    q = np.linspace(0.02, 0.98, 49)
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q)))) if len(a) and len(b) else float("nan")


def distances(sim: Statistics, real: Statistics) -> dict[str, float]:
    """Per-statistic distances (0 = same): spot-radius and label-fraction quantile distances (in
    1/256 px^-1 and fraction units), mean |log10| ratio of the median spectra over radii 5-120 and
    |mean log10 ratio| over 80-120 (radii scaled to 256 px), 1 - histogram overlap, |log| ratio of
    the median contrasts; `total` sums the dimensionless ones plus the spot distance / 5 and the
    fraction distance / 0.05."""
    scale = (len(real.spectrum) - 1) / 128
    band = slice(int(5 * scale), int(120 * scale) + 1)
    high = slice(int(80 * scale), int(120 * scale) + 1)
    ratio = np.log10(sim.spectrum / real.spectrum)
    d = {
        "spot_radius": _wasserstein(sim.spots, real.spots) / scale,
        "spectrum": float(np.mean(np.abs(ratio[band]))),
        "high_frequency": float(abs(np.mean(ratio[high]))),
        "histogram": float(1 - np.sum(np.minimum(sim.hist, real.hist)) * np.diff(HIST_BINS)[0]),
    }
    total = d["spot_radius"] / 5 + d["spectrum"] + d["high_frequency"] + d["histogram"]
    if sim.fractions is not None and real.fractions is not None:
        d["label_fraction"] = _wasserstein(sim.fractions, real.fractions)
        both = len(sim.contrast) and len(real.contrast)
        d["contrast"] = float(abs(np.log(np.median(sim.contrast) / np.median(real.contrast)))) if both else float("nan")
        total += d["label_fraction"] / 0.05 + np.nan_to_num(d["contrast"])
    d["total"] = float(total)
    return {k: round(v, 4) for k, v in d.items()}


def pixel_range(pixel_sizes: np.ndarray) -> list[float]:
    """Pixel-size range (A/px) covering 5-95 % of the real micrographs' lattice pixel sizes."""
    lo, hi = np.nanpercentile(pixel_sizes, [5, 95])
    return [round(float(lo), 3), round(float(hi), 3)]


class Pool:
    """Exit waves of `structures` structures, `variants` optics draws each, re-imaged per candidate
    with the dose, blur and defocus transformed (the draws and noise stay the same)."""

    def __init__(self, cfg: DictConfig, seed: int, structures: int, variants: int):
        configure_abtem(cfg.device)
        self.cfg, self.items = cfg, []
        for s in range(structures):
            rng = structure_rng(seed, s)
            pixel_size = float(rng.uniform(*cfg.grid.pixel_size))
            every = [draw_optics(variant_rng(seed, s, v), cfg.optics) for v in range(variants)]
            margin = border_px([dataclasses.replace(o, defocus=o.defocus * max(DEFOCUS_SCALES)) for o in every], pixel_size, cfg)
            full = cfg.grid.image_px + 2 * margin
            structure = build_structure(rng, full * pixel_size, cfg.structure)
            sampling = min(float(cfg.grid.potential_sampling), structure.extent / wave_px(full, pixel_size, cfg.optics.energy, cfg.optics.semiangle_cutoff))
            wave = exit_wave(structure, sampling, cfg.grid.slice_thickness, cfg.grid.amorphous_slice_thickness, cfg.optics.energy)
            imager = VariantImager(wave, structure.extent, cfg.optics.energy, cfg.grid.image_px, margin, None, cfg.optics.semiangle_cutoff)
            mask = make_labels(structure, cfg.grid.image_px, margin, cfg.label)[0]
            for v, optics in enumerate(every):
                self.items.append((imager, optics, mask, seed, s, v))
        self._noiseless: dict = {}

    def images(self, dose: float, blur: float, defocus: float) -> list[np.ndarray]:
        out = []
        for k, (imager, optics, _, seed, s, v) in enumerate(self.items):
            key = (k, defocus)
            if key not in self._noiseless:
                self._noiseless[key] = imager.noiseless(dataclasses.replace(optics, defocus=optics.defocus * defocus))
            o = dataclasses.replace(optics, dose=optics.dose * dose, blur=max(optics.blur + blur, 0.0))
            rng = variant_rng(seed + 1, s, v)  # noise draws shared by every candidate
            out.append(imager.record(self._noiseless[key], o, rng))
        return out

    def masks(self) -> list[np.ndarray]:
        return [item[2] for item in self.items]


def label_fractions(cfg: DictConfig, seed: int, structures: int) -> np.ndarray:
    """Labelled contamination fractions of `structures` structures (no imaging needed)."""
    fractions = []
    for s in range(structures):
        rng = structure_rng(seed, s)
        pixel_size = float(rng.uniform(*cfg.grid.pixel_size))
        full = cfg.grid.image_px + 2 * cfg.grid.margin_px
        structure = build_structure(rng, full * pixel_size, cfg.structure)
        fractions.append(make_labels(structure, cfg.grid.image_px, cfg.grid.margin_px, cfg.label)[0].mean())
    return np.array(fractions)


def calibrate(cfg: DictConfig, real: Path, labelled: bool = False, structures: int = 16, variants: int = 4,
              log=print) -> dict:
    """Fit the ranges to the micrographs in `real` (`load_real` brings them to the simulated scale);
    returns {"overrides", "before", "after", "ranges", "micrographs", "skipped", ...} and, under
    "statistics", the real and simulated `Statistics` that `calibration_figure` draws."""
    real_set = load_real(real, labelled, int(cfg.grid.image_px), tuple(float(v) for v in cfg.grid.pixel_size))
    rescaled = [u for u in real_set.used if u["bin"] != 1]
    log(f"{len(real_set.used)} micrographs, {len(real_set.images)} tiles of {cfg.grid.image_px} px"
        + (f" ({len(rescaled)} binned or upsampled to the simulated scale)" if rescaled else "")
        + (f"; {len(real_set.skipped)} left out" if real_set.skipped else ""))
    images, masks = real_set.images, real_set.masks
    target = measure(images, masks, real_set.pixel_sizes)
    seed = int(cfg.seed)
    base = Pool(cfg, seed, structures, variants)
    start = measure(base.images(1.0, 0.0, 1.0), base.masks() if labelled else None)
    before = distances(start, target)
    log(f"before: {before}")

    if np.isfinite(target.pixel_sizes).any():
        overrides: dict = {"grid": {"pixel_size": pixel_range(target.pixel_sizes)}}
    else:
        overrides = {"grid": {"pixel_size": [float(v) for v in cfg.grid.pixel_size]}}
        log("no pixel size known (none in the files, no lattice found): the pixel-size range is left as it is")
    coverage = 1.0
    if labelled:
        real_median = float(np.median(target.fractions))
        best = None
        for scale in COVERAGE_SCALES:
            trial = OmegaConf.merge(cfg, overrides, {"structure": {"amorphous": {"coverage_median": cfg.structure.amorphous.coverage_median * scale}}})
            gap = _wasserstein(label_fractions(trial, seed, 3 * structures), target.fractions)
            log(f"coverage x{scale}: label-fraction distance {gap:.4f} (real median {real_median:.3f})")
            if best is None or gap < best[0]:
                best, coverage = (gap, scale), scale
        overrides["structure"] = {"amorphous": {"coverage_median": round(float(cfg.structure.amorphous.coverage_median * coverage), 4)}}
    fitted = OmegaConf.merge(cfg, overrides)
    pool = Pool(fitted, seed, structures, variants)
    pool_masks = pool.masks() if labelled else None

    def score(p: dict) -> float:
        return distances(measure(pool.images(p["dose"], p["blur"], p["defocus"]), pool_masks), target)["total"]

    params = {"dose": 1.0, "blur": 0.0, "defocus": 1.0}
    best = score(params)
    log(f"fitted pixel size {overrides['grid']['pixel_size']}, start: total {best:.4f}")
    for sweep in range(2):
        for name, values in (("defocus", DEFOCUS_SCALES), ("dose", DOSE_SCALES), ("blur", BLUR_SHIFTS)):
            for value in values:
                if value == params[name]:
                    continue
                trial = dict(params, **{name: value})
                total = score(trial)
                log(f"  {name} {value}: total {total:.4f}")
                if total < best - 1e-4:
                    best, params = total, trial
            log(f"sweep {sweep + 1} {name}: {params} total {best:.4f}")
    o = cfg.optics
    overrides["optics"] = {
        "dose": [round(float(o.dose[0] * params["dose"]), 1), round(float(o.dose[1] * params["dose"]), 1)],
        "blur": [round(max(float(o.blur[0]) + params["blur"], 0.0), 3), round(max(float(o.blur[1]) + params["blur"], 0.0), 3)],
        "defocus": [round(float(o.defocus[0] * params["defocus"]), 1), round(float(o.defocus[1] * params["defocus"]), 1)],
    }
    end = measure(pool.images(params["dose"], params["blur"], params["defocus"]), pool_masks)
    after = distances(end, target)
    log(f"after: {after}")
    ranges = {"pixel_size": [[float(v) for v in cfg.grid.pixel_size], overrides["grid"]["pixel_size"]]}
    ranges.update({k: [[float(v) for v in o[k]], overrides["optics"][k]] for k in ("dose", "blur", "defocus")})
    if labelled:
        ranges["coverage_median"] = [float(cfg.structure.amorphous.coverage_median),
                                     overrides["structure"]["amorphous"]["coverage_median"]]
    return {"overrides": overrides, "before": before, "after": after, "real": str(real), "n_real": len(real_set.used),
            "n_tiles": len(images), "image_px": int(cfg.grid.image_px), "labelled": labelled,
            "pool": {"structures": structures, "variants": variants, "seed": seed},
            "ranges": {k: {"before": b, "after": a} for k, (b, a) in ranges.items()},
            "micrographs": real_set.used, "skipped": real_set.skipped,
            "statistics": {"real": target, "before": start, "after": end}}


def summary(result: dict) -> dict:
    """`result` without its statistics (what `--json` prints)."""
    return {k: v for k, v in result.items() if k != "statistics"}


# ------------------------------------------------------------------ outputs

def calibration_figure(result: dict, path: Path) -> Path:
    """The fitted ranges against the real statistics calibration matched (a PNG): the real pixel
    sizes with the range before and after; the {100} spot radius, the radial power spectrum and the
    intensity histogram of the real tiles and of the simulated pool before and after the fit; with
    labels, the contamination fractions; and the table of ranges and distances."""
    from matplotlib.figure import Figure

    from .report import SPOT_SEARCH

    stats, ranges = result["statistics"], result["ranges"]
    real, start, end = stats["real"], stats["before"], stats["after"]
    sides = ((real, "real", "k", "-"), (start, "simulated, before", "C0", "--"), (end, "simulated, fitted", "C3", "-"))
    fig = Figure(figsize=(15, 8.5))
    ax = fig.subplots(2, 3)

    a = ax[0, 0]
    sizes = real.pixel_sizes[np.isfinite(real.pixel_sizes)]
    (lo0, hi0), (lo1, hi1) = ranges["pixel_size"]["before"], ranges["pixel_size"]["after"]
    a.axvspan(lo0, hi0, color="C0", alpha=0.12, label=f"before {lo0:g}-{hi0:g}")
    a.axvspan(lo1, hi1, facecolor="none", edgecolor="C3", hatch="//", lw=1.5, label=f"fitted {lo1:g}-{hi1:g}")
    if len(sizes):
        a.hist(sizes, bins=min(30, max(5, len(sizes) // 3)), color="k", alpha=0.6, label=f"real tiles ({len(sizes)})")
    a.set(xlabel="pixel size (\u00c5/px)", ylabel="tiles", title="pixel size: real vs range (5-95 %)")

    a = ax[0, 1]
    scale = (len(real.spectrum) - 1) / 128
    bins = np.arange(SPOT_SEARCH[0], SPOT_SEARCH[1] + 2, 2) * scale
    for st, name, colour, style in sides:
        a.hist(st.spots, bins=bins, density=True, histtype="step", color=colour, ls=style, lw=1.5, label=name)
    a.set(xlabel=f"{{100}} spot radius (1/{result['image_px']} px$^{{-1}}$)", ylabel="density",
          title="lattice spot radius (sets the scale)")

    a = ax[0, 2]
    radii = np.arange(len(real.spectrum))
    for st, name, colour, style in sides:
        a.plot(radii, st.spectrum, color=colour, ls=style, label=name)
    a.axvspan(5 * scale, 120 * scale, color="grey", alpha=0.07, label="fitted band")
    a.set(yscale="log", xlabel=f"radius (1/{result['image_px']} px$^{{-1}}$)", ylabel="power (median)",
          title="radial power spectrum (dose, blur, defocus)")

    a = ax[1, 0]
    centres = 0.5 * (HIST_BINS[1:] + HIST_BINS[:-1])
    for st, name, colour, style in sides:
        a.plot(centres, st.hist, color=colour, ls=style, label=name)
    a.set(yscale="log", xlabel="preprocessed intensity", ylabel="density", title="intensity histogram")

    a = ax[1, 1]
    if real.fractions is not None:
        edges = np.linspace(0, 1, 21)
        for st, name, colour, style in sides:
            a.hist(st.fractions, bins=edges, density=True, histtype="step", color=colour, ls=style, lw=1.5, label=name)
        a.set(xlabel="labelled contamination fraction", ylabel="density", title="contamination per tile (coverage)")
    else:
        a.axis("off")
        a.text(0.5, 0.5, "no labels: the contamination\ncoverage is not fitted (--labelled)", ha="center",
               va="center", transform=a.transAxes)

    a = ax[1, 2]
    a.axis("off")
    lines = [f"{'range':16s}{'before':>20s}{'fitted':>20s}"]
    for key, value in ranges.items():
        b, f = value["before"], value["after"]
        text = (lambda v: f"{v[0]:g}-{v[1]:g}") if isinstance(b, list) else (lambda v: f"{v:g}")
        lines.append(f"{key:16s}{text(b):>20s}{text(f):>20s}")
    lines += ["", f"{'distance':16s}{'before':>20s}{'fitted':>20s}"]
    lines += [f"{k:16s}{result['before'][k]:>20.3f}{result['after'][k]:>20.3f}" for k in result["after"]]
    binned = sum(u["bin"] != 1 for u in result["micrographs"])
    lines += ["", f"{result['n_real']} micrographs -> {result['n_tiles']} tiles of {result['image_px']} px",
              f"{binned} binned or upsampled to scale, {len(result['skipped'])} left out"]
    a.text(0, 1, "\n".join(lines), family="monospace", fontsize=8.5, va="top", transform=a.transAxes)
    for a in ax.ravel()[:5]:
        if a.has_data():
            a.legend(fontsize=7.5)
    fig.suptitle(f"simulate calibrate: fitted ranges vs {result['real']}", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def write_calibration(result: dict, path: Path) -> Path:
    """The overrides as YAML, headed by comments saying what they were fitted to and how well; with
    the statistics in `result` (as `calibrate` returns it), the figure beside it (`calibration_figure`,
    the YAML's name with .png)."""
    binned = [u for u in result.get("micrographs", []) if u["bin"] != 1]
    lines = [f"# simulate calibrate: fitted to {result['n_real']} micrographs in {result['real']}"
             f"{' (with labels)' if result['labelled'] else ''}"
             + (f", {result['n_tiles']} tiles of {result['image_px']} px" if "n_tiles" in result else ""),
             f"# pool: {result['pool']}",
             f"# distances before: {result['before']}",
             f"# distances after:  {result['after']}"]
    if binned:
        factors = sorted({u["bin"] for u in binned})
        lines.append(f"# brought to the simulated scale: {len(binned)} micrographs binned (bin < 1: upsampled) by "
                     + ", ".join(f"{f:g}" for f in factors))
    for s in result.get("skipped", [])[:10]:
        lines.append(f"# left out: {s['file']}: {s['reason']}")
    if len(result.get("skipped", [])) > 10:
        lines.append(f"# ... and {len(result['skipped']) - 10} more left out")
    lines.append("# use: simulate generate --calibration THIS_FILE [key=value ...]")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + OmegaConf.to_yaml(OmegaConf.create(result["overrides"])), encoding="utf-8")
    if "statistics" in result:
        calibration_figure(result, path.with_suffix(".png"))
    return path


def read_calibration(path: Path) -> list[str]:
    """Hydra overrides (key=value) from a calibration YAML; an unreadable file names itself."""
    from grapheneseg.config import ConfigError, load_config

    path = Path(path)
    try:
        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: calibration file not found") from None
    except Exception as err:  # YAML parser errors come in many types
        raise ConfigError(f"{path}: not a readable calibration YAML ({err})") from None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{path}: expected a mapping of config overrides (as `simulate calibrate` writes)")
    overrides = [f"{key}={_hydra_value(value)}" for key, value in _flatten(tree).items()]
    try:
        load_config("simulate", overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return overrides


def _hydra_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)
