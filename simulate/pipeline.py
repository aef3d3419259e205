"""From (seed, image index) to a labelled image: the unit of work of every driver.

Image i is variant i % V of structure i // V (V = variants_per_structure). The structure and its
pixel size come from SeedSequence(seed, spawn_key=(0, s)), each variant's optics and noise from
SeedSequence(seed, spawn_key=(1, s, v)), so an image depends only on (seed, i): never on which
process computed it, in which order, or how many other images were asked for. The exit wave is
planned with deterministic FFTs and the shot noise inverts the Poisson CDF at one normal draw per
pixel, so the bytes do not depend on the process either (imaging.configure_abtem, poisson_counts).

The border around the image hides the periodic seam of the cell: it is sized per structure from the
optics drawn for all of its variants (`border_px`), so no CTF delocalisation reaches the seam.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .imaging import Optics, VariantImager, delocalisation, draw_optics, exit_wave, wave_px
from .labels import StructureTruth, atom_map, grain_truth, make_labels, pixel_centres
from .structures import Structure, build_structure

STRUCTURE_FIELDS = (
    "pixel_size", "extent", "potential_sampling", "n_grains", "n_holes", "n_adatoms", "n_atoms",
    "n_amorphous", "coverage_target", "amorphous_density", "amorphous_thickness",
)
OPTICS_FIELDS = tuple(Optics.__dataclass_fields__)
META_DTYPE = np.dtype(
    [("index", "i8"), ("seed", "i8"), ("structure", "i8"), ("variant", "i4")]
    + [(name, "f8") for name in STRUCTURE_FIELDS + OPTICS_FIELDS]
    + [("contamination_fraction", "f8"), ("vacuum_fraction", "f8"), ("boundary_fraction", "f8")]
)
STAGES = ("structure", "exit_wave", "labels", "ctf", "noise")


@dataclass
class Sample:
    """One finished image with its labels and metadata row."""

    index: int
    image: np.ndarray  # float32 (H, W), mean ~1
    mask: np.ndarray  # uint8, 1 = contamination
    classes: np.ndarray  # uint8 class map
    meta: np.ndarray  # one META_DTYPE record
    atoms: np.ndarray  # uint8 map of the sheet's atoms (255 = on an atom), labels.atom_map
    truth: StructureTruth | None = None  # grains, orientations, boundaries, rings (labels.grain_truth)


class PlainConfig(dict):
    """A resolved config as nested dicts read by attribute (cfg.grid.image_px) or key: the same
    values as the DictConfig it came from, without OmegaConf's per-access checks (drawing one
    variant's optics: 0.4 ms from a DictConfig, 0.04 ms from this)."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    @classmethod
    def of(cls, cfg) -> "PlainConfig":
        from omegaconf import OmegaConf

        def wrap(value):
            if isinstance(value, dict):
                return cls({k: wrap(v) for k, v in value.items()})
            return [wrap(v) for v in value] if isinstance(value, list) else value

        return wrap(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg)


def structure_rng(seed: int, s: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, s)))


def variant_rng(seed: int, s: int, v: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, s, v)))


def border_px(optics: list[Optics], pixel_size: float, cfg) -> int:
    """Border (output px, each side) wider than the largest delocalisation among `optics`, at
    least `grid.margin_px`."""
    reach = max(delocalisation(o, cfg.optics.energy, cfg.optics.semiangle_cutoff, cfg.grid.envelope_floor) for o in optics)
    return max(int(cfg.grid.margin_px), int(np.ceil(reach / pixel_size)))


def structure_for(cfg, seed: int, s: int) -> tuple[Structure, float, int]:
    """Structure s of a run, its pixel size and its border (output px each side): the image covers
    cell coordinates [border, border + image_px) * pixel_size."""
    rng = structure_rng(seed, s)
    pixel_size = float(rng.uniform(*cfg.grid.pixel_size))
    every = [draw_optics(variant_rng(seed, s, v), cfg.optics) for v in range(cfg.variants_per_structure)]
    margin = border_px(every, pixel_size, cfg)
    return build_structure(rng, (cfg.grid.image_px + 2 * margin) * pixel_size, cfg.structure), pixel_size, margin


def simulate_structure(cfg, seed: int, s: int, variants: list[int]) -> tuple[list[Sample], dict[str, float]]:
    """Build structure s, compute its exit wave once and image the requested variants.

    `cfg` is the resolved simulate config (DictConfig or plain dict wrapped by the caller).
    Returns the samples in variant order and the seconds spent per stage.
    """
    grid, timing = cfg.grid, dict.fromkeys(STAGES, 0.0)
    t0 = time.perf_counter()
    structure, pixel_size, margin = structure_for(cfg, seed, s)
    full_px = grid.image_px + 2 * margin
    t1 = time.perf_counter()
    need = wave_px(full_px, pixel_size, cfg.optics.energy, cfg.optics.semiangle_cutoff)
    sampling = min(float(grid.potential_sampling), structure.extent / need)
    wave = exit_wave(structure, sampling, grid.slice_thickness, grid.amorphous_slice_thickness, cfg.optics.energy)
    imager = VariantImager(wave, structure.extent, cfg.optics.energy, grid.image_px, margin, None, cfg.optics.semiangle_cutoff)
    t2 = time.perf_counter()
    mask, classes = make_labels(structure, grid.image_px, margin, cfg.label)
    atoms = atom_map(structure, pixel_centres(grid.image_px, margin, pixel_size), cfg.label.atom_sigma)
    truth = grain_truth(structure, grid.image_px, margin)
    t3 = time.perf_counter()
    timing.update(structure=t1 - t0, exit_wave=t2 - t1, labels=t3 - t2)

    info = dict(structure.info, pixel_size=pixel_size, extent=structure.extent, potential_sampling=structure.extent / wave.shape[0])
    fractions = {
        "contamination_fraction": float(mask.mean()),
        "vacuum_fraction": float((classes == 2).mean()),
        "boundary_fraction": float((classes == 3).mean()),
    }
    samples = []
    for v in variants:
        vrng = variant_rng(seed, s, v)
        optics = draw_optics(vrng, cfg.optics)
        image, stage = imager.image(optics, vrng)
        for key, value in stage.items():
            timing[key] += value
        index = s * cfg.variants_per_structure + v
        meta = np.zeros((), dtype=META_DTYPE)
        for key, value in {**info, **optics.as_dict(), **fractions}.items():
            meta[key] = value
        meta["index"], meta["seed"], meta["structure"], meta["variant"] = index, seed, s, v
        samples.append(Sample(index, image, mask, classes, meta, atoms, truth))
    return samples, timing
