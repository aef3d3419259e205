"""Fit the simulator's ranges to a folder of micrographs (`simulate calibrate`).

The statistics are those `simulate compare` shows, computed after the same preprocessing as the
network's input: the {100} lattice-spot radius (sets the pixel size), the radially averaged power
spectrum (dose, detector blur, defocus), the intensity histogram and, with labels, the labelled
contamination fraction and the contamination-to-lattice contrast. Each becomes a distance that is 0
for identical sets (`distances`).

The fit is cheap and deterministic:
1. the pixel-size range comes straight from the real lattice, read by the same reader as
   `evaluate predict` (`grapheneseg.lattice.read_pixel_size`; images without a lattice are left out);
2. a pool of exit waves is simulated once at that pixel size; every candidate re-images the same
   variants with the same noise draws, only with the dose scaled, the blur shifted and the defocus
   range scaled (common random numbers keep the search smooth); a coordinate search over a few
   values per parameter, twice round, keeps the best total distance;
3. with labels, the contamination coverage median is scaled until the simulated label fractions
   match the real ones (labels need no imaging, so this is cheap).
The result is a small YAML of overrides that `simulate generate --calibration FILE` merges onto the
config; it records the distances before and after and the folder it was fitted to.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from grapheneseg.formats import SUPPORTED, read_micrograph
from grapheneseg.lattice import read_pixel_size
from grapheneseg.micrographs import LABEL_SUFFIX, DataError, load_labelled
from grapheneseg.preprocessing import preprocess

from .imaging import VariantImager, configure_abtem, draw_optics, exit_wave, wave_px
from .labels import make_labels
from .pipeline import border_px, structure_rng, variant_rng
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
    pixel_sizes: np.ndarray  # from the lattice (`grapheneseg.lattice.read_pixel_size`; nan: none found)
    spectrum: np.ndarray  # median radial power spectrum
    hist: np.ndarray
    fractions: np.ndarray | None = None
    contrast: np.ndarray | None = None


def measure(images: list[np.ndarray], masks: list[np.ndarray] | None = None) -> Statistics:
    pre = [preprocess(im) for im in images]
    spectra = np.array([radial_spectrum(p) for p in pre])
    stats = Statistics(
        spots=np.array([spot_radius(s) for s in spectra]),
        pixel_sizes=np.array([read_pixel_size(im) or np.nan for im in images]),
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


def load_real(folder: Path, labelled: bool, image_px: int) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The folder's micrographs (and masks with `labelled`); all must be image_px x image_px."""
    folder = Path(folder)
    if labelled:
        data = load_labelled(folder)
        images, masks, names = data.images, data.masks, [folder / f"{n}.png" for n in data.names]
    else:
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder of micrographs")
        names = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED and not p.stem.endswith(LABEL_SUFFIX))
        if not names:
            raise DataError(f"{folder}: no micrographs ({', '.join(SUPPORTED)}) found")
        images, masks = [read_micrograph(p).image for p in names], None
    for path, image in zip(names, images):
        if image.shape != (image_px, image_px):
            raise DataError(f"{path}: size {image.shape[1]}x{image.shape[0]}, calibration needs {image_px}x{image_px} "
                            f"(the simulator's grid.image_px) at the simulated pixel-size scale")
    return images, masks




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
    """Fit the ranges to the micrographs in `real`; returns {"overrides", "before", "after", ...}."""
    images, masks = load_real(real, labelled, int(cfg.grid.image_px))
    target = measure(images, masks)
    seed = int(cfg.seed)
    base = Pool(cfg, seed, structures, variants)
    before = distances(measure(base.images(1.0, 0.0, 1.0), base.masks() if labelled else None), target)
    log(f"before: {before}")

    overrides: dict = {"grid": {"pixel_size": pixel_range(target.pixel_sizes)}}
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
    after = distances(measure(pool.images(params["dose"], params["blur"], params["defocus"]), pool_masks), target)
    log(f"after: {after}")
    return {"overrides": overrides, "before": before, "after": after, "real": str(real), "n_real": len(images),
            "labelled": labelled, "pool": {"structures": structures, "variants": variants, "seed": seed}}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def write_calibration(result: dict, path: Path) -> Path:
    """The overrides as YAML, headed by comments saying what they were fitted to and how well."""
    lines = [f"# simulate calibrate: fitted to {result['n_real']} micrographs in {result['real']}"
             f"{' (with labels)' if result['labelled'] else ''}",
             f"# pool: {result['pool']}",
             f"# distances before: {result['before']}",
             f"# distances after:  {result['after']}",
             "# use: simulate generate --calibration THIS_FILE [key=value ...]"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + OmegaConf.to_yaml(OmegaConf.create(result["overrides"])))
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
