"""Sampling margins hold over the whole configured range: alias-free wave grid, seam-proof border."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from grapheneseg.config import load_config
from simulate.imaging import Optics, VariantImager, band_limit, configure_abtem, delocalisation, exit_wave, wave_px
from simulate.pipeline import border_px
from simulate.structures import Structure

ENERGY, CUTOFF, IMAGE_PX = 80e3, 45.0, 64


def worst_optics(focal_spread: float = 10.0) -> Optics:
    """Extremes of the default ranges, defocus and Cs displacing the same way."""
    return Optics(defocus=150.0, cs=-1e5, astigmatism=40.0, astigmatism_angle=0.0, focal_spread=focal_spread,
                  angular_spread=0.1, dose=1e4, mtf_c2=0.1, mtf_c3=0.6, mtf_c4=2.0, blur=0.15, gradient=0.0,
                  gradient_angle=0.0, gradient_curvature=0.0, patchiness=0.0, patch_scale=20.0)


def line_image(pixel_size: float, margin: int, x: float | None, oversampling: float | None = None) -> np.ndarray:
    """Noiseless image of a line of carbon atoms along y at x (None: the seam x = 0) in vacuum."""
    configure_abtem("cpu")
    full = IMAGE_PX + 2 * margin
    extent = full * pixel_size
    ys = np.arange(0, extent, 1.42)
    positions = np.column_stack([np.full(len(ys), 0.0 if x is None else x), ys, np.ones(len(ys))])
    structure = Structure(Atoms(f"C{len(ys)}", positions=positions, cell=[extent, extent, 2.0], pbc=True),
                          extent, np.zeros(len(ys), bool), np.zeros((1, 2)), np.zeros(1))
    wave = exit_wave(structure, pixel_size / 3.2, 2.0, 4.0, ENERGY)  # fine enough for 3x oversampling
    return VariantImager(wave, extent, ENERGY, IMAGE_PX, margin, oversampling, CUTOFF).noiseless(worst_optics())


def contrast(image: np.ndarray) -> float:
    return float(np.abs(image - image.mean()).max())


def test_wave_grid_is_alias_free_at_every_pixel_size():
    k = band_limit(ENERGY, CUTOFF)
    lo, hi = load_config("simulate").grid.pixel_size
    for p in np.linspace(min(lo, 0.30), max(hi, 0.62), 18):  # the configured range, at least 0.30-0.62
        full = 288
        n = wave_px(full, p, ENERGY, CUTOFF)
        nyquist, out = n / (2 * full * p), 1 / (2 * p)
        assert 2 * nyquist - 2 * k >= out  # the folded intensity band stays above the kept band
    assert wave_px(288, 0.47, ENERGY, CUTOFF) > 1.5 * 288  # the old fixed 1.5x aliased here


def test_alias_free_image_matches_a_finely_oversampled_one():
    p = 0.47
    fine = line_image(p, 8, x=10.0, oversampling=3.0)
    default = line_image(p, 8, x=10.0)
    assert np.abs(default - fine).max() < 1e-3 * contrast(fine)
    with pytest.raises(ValueError, match="aliases"):
        line_image(p, 8, x=10.0, oversampling=1.5)


def test_border_keeps_the_seam_out_of_the_image():
    """A line of atoms on the cell's seam must not show in the image (it does with a fixed 8 px)."""
    p = 0.30
    cfg = load_config("simulate", ["grid=tiny"])
    margin = border_px([worst_optics()], p, cfg)
    assert margin * p >= delocalisation(worst_optics(), ENERGY, CUTOFF, cfg.grid.envelope_floor) > 15.0
    in_view = contrast(line_image(p, margin, x=(margin + IMAGE_PX / 2) * p))
    assert contrast(line_image(p, margin, x=None)) < 0.03 * in_view
    assert contrast(line_image(p, 8, x=None)) > 0.3 * in_view  # the old fixed border leaked


def test_potential_sampling_keeps_the_objective_aperture_inside_abtems_antialiasing():
    """abTEM zeroes the wave beyond 2/3 of the grid's Nyquist: the default cap must pass the whole
    aperture (soft edge included), and `validate` must refuse a cap that would not."""
    from abtem.waves import _antialias_cutoff_gpts

    from grapheneseg.config import ConfigError
    from simulate.driver import validate

    cfg = load_config("simulate", [])
    validate(cfg)
    cap, n = float(cfg.grid.potential_sampling), 600
    kept = _antialias_cutoff_gpts((n, n), (cap, cap))[0] / 2 / (n * cap)  # 1/A, radius abTEM keeps
    assert kept >= band_limit(cfg.optics.energy, cfg.optics.semiangle_cutoff)
    with pytest.raises(ConfigError, match=r"grid\.potential_sampling = 0\.35: must be <= 0\.29"):
        validate(load_config("simulate", ["grid.potential_sampling=0.35"]))


def test_wave_grid_is_rounded_up_to_a_fast_size_without_changing_the_image():
    from simulate.imaging import fast_even_size

    assert fast_even_size(478, 1000) == 480 and fast_even_size(475, 1000) == 480
    assert fast_even_size(478, 479) == 478  # no fast size fits under the exit-wave grid: the minimum
    p, margin = 0.40, 16
    full = IMAGE_PX + 2 * margin
    need = wave_px(full, p, ENERGY, CUTOFF)
    assert need == 136  # 8 x 17: a slow size, rounded up to 144 = 2^4 x 3^2
    minimum = line_image(p, margin, x=10.0, oversampling=need / full)
    fast = line_image(p, margin, x=10.0)
    assert np.abs(fast - minimum).max() < 1e-3 * contrast(minimum)
