"""HRTEM image formation: one abTEM exit wave per structure, then cheap optics/dose variants.

The expensive part (potential + multislice, abTEM 1.0, projection='infinite') runs once per
structure. Each variant then costs a few FFTs on a small grid: the exit wave is Fourier-cropped to
the smallest grid that images without aliasing (`wave_px`, rounded up to a fast FFT size), multiplied by an abTEM CTF (defocus, Cs, two-fold astigmatism,
focal and angular spread, objective aperture), squared, Fourier-cropped to the output pixel size,
multiplied by the detector MTF, lit by a smooth illumination gradient, given Poisson shot noise at
the drawn dose (`poisson_counts`, one normal draw per pixel) and finally blurred (detector point
spread after the noise). FFT plans are estimated, never measured (`configure_abtem`), so the bytes
do not depend on the process. Arrays are indexed
[x, y] as in abTEM; the output image covers x, y in [margin, margin + image_px) * pixel_size.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from .amorphous import smooth_field
from .structures import Structure

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def limit_threads() -> None:
    """One thread per process (set before numba/FFTW start): workers must not oversubscribe 2 cores."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def configure_abtem(device: str = "cpu") -> None:
    """Deterministic, quiet, single-threaded abTEM.

    FFTW_MEASURE plans are chosen by timing, so two processes (or two runs) can pick different
    plans whose results differ in the last bits; that is what made image i depend on the run.
    FFTW_ESTIMATE plans depend only on the transform and the buffer alignment (which abTEM fixes),
    so every process computes the same bytes. Wisdom is forgotten first because FFTW_ESTIMATE
    would otherwise reuse any measured plan already known to the process. The cost is a slower
    transform on some sizes; `GRID_SIZES` keeps to sizes where the estimated plans are fast.
    """
    import abtem
    import pyfftw

    pyfftw.forget_wisdom()
    abtem.config.set(
        {
            "device": device,
            "fft": "fftw",
            "diagnostics.progress_bar": False,
            "fftw.planning_effort": "FFTW_ESTIMATE",
            "fftw.threads": 1,
            "mkl.threads": 1,
        }
    )


# Exit-wave grids are drawn from this list: 2-3-5-7 smooth sizes each faster under FFTW_ESTIMATE than
# every larger size (512 estimates 3x slower than 500; `benchmarks/bench_simulate.py --fft`).
GRID_SIZES = (128, 160, 192, 256, 320, 400, 432, 500, 540, 588, 640, 756, 840, 972, 1008, 1200, 1280, 1440, 1500)
APERTURE_EDGE = 1.05  # the CTF is evaluated out to this multiple of the aperture (its soft edge)
CF_WINDOW, CF_MIN_MEAN = 0.05, 50.0  # `poisson_counts`: exact-CDF check near a step; exact quantile below


def grid_size(extent: float, sampling: float) -> int:
    """Smallest size in GRID_SIZES that samples `extent` at `sampling` or finer."""
    need = int(np.ceil(extent / sampling - 1e-6))
    return next((n for n in GRID_SIZES if n >= need), scipy.fft.next_fast_len(need))


def band_limit(energy: float, semiangle_cutoff: float) -> float:
    """Highest spatial frequency (1/A) the imaged wave holds: the objective aperture plus the 5 %
    soft edge inside which `VariantImager` evaluates the CTF."""
    from abtem.core.energy import energy2wavelength

    return APERTURE_EDGE * semiangle_cutoff * 1e-3 / energy2wavelength(energy)


def wave_px(full_px: int, pixel_size: float, energy: float, semiangle_cutoff: float) -> int:
    """Even size of the Fourier-cropped wave grid that images without aliasing.

    The intensity |psi|^2 holds frequencies up to 2 k (k the band limit); computed on a grid with
    Nyquist N it folds back down to 2 N - 2 k, which must stay above the output Nyquist
    1 / (2 pixel_size) that the final crop keeps: N >= 1 / (4 p) + k, i.e. wave_px >=
    full_px (1/2 + 2 k p). (A fixed 1.5x was alias-free only up to 0.46 A/px at 45 mrad.)
    """
    k = band_limit(energy, semiangle_cutoff)
    return 2 * int(np.ceil(full_px * (0.5 + 2 * k * pixel_size) / 2 - 1e-9))


def fast_even_size(need: int, limit: int) -> int:
    """Smallest even n >= need whose FFT is fast (scipy's `next_fast_len`), at most `limit`.

    A larger wave grid than the alias-free minimum gives the same image up to rounding, and the
    minimum is often a slow size (478 = 2 x 239: 21 ms per 2-D FFT against 2 ms at 480). Falls back
    to `need` when no fast size fits under `limit` (the exit-wave grid)."""
    n = need + need % 2
    while n <= limit:
        if scipy.fft.next_fast_len(n, real=True) == n:  # 2-3-5 smooth: fast for complex and real FFTs
            return n
        n += 2
    return need


def poisson_counts(mean: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Exact Poisson counts of the given means by inverting the CDF at Phi(z), pixel by pixel.

    `z` (standard normal, one per pixel) is drawn independently of the image, so a last-bit change
    in one mean can change at most that pixel's count and never shifts the random stream the way
    a rejection sampler (numpy's `poisson`) does. The quantile comes from the Cornish-Fisher
    expansion; where it lands within 0.05 of an integer step the step is settled with the exact CDF
    (scipy `pdtr`), and means below 50 use scipy's exact quantile: the counts equal
    `scipy.stats.poisson.ppf(ndtr(z), mean)` (tests/simulate/test_simulate_reproducible.py).
    """
    from scipy import special, stats

    mean = np.asarray(mean, dtype=np.float64)
    s = np.sqrt(np.maximum(mean, 1.0))
    x = mean + s * z + (z * z - 1) / 6 + z * (1 - z * z) / (72 * s) + 0.5
    k = np.floor(x)
    frac = (x - k).ravel()
    flat_k, flat_mean, flat_z = k.ravel(), mean.ravel(), z.ravel()
    low = np.flatnonzero(frac < CF_WINDOW)  # step between k - 1 and k nearby
    flat_k[low] -= special.ndtr(flat_z[low]) <= special.pdtr(flat_k[low] - 1, flat_mean[low])
    high = np.flatnonzero(frac > 1 - CF_WINDOW)  # step between k and k + 1 nearby
    flat_k[high] += special.ndtr(flat_z[high]) > special.pdtr(flat_k[high], flat_mean[high])
    small = np.flatnonzero(flat_mean < CF_MIN_MEAN)
    flat_k[small] = stats.poisson.ppf(special.ndtr(flat_z[small]), flat_mean[small])
    return np.maximum(k, 0.0)


@dataclass
class Optics:
    """One variant's microscope and detector settings (lengths in A, angles in mrad/rad)."""

    defocus: float
    cs: float
    astigmatism: float
    astigmatism_angle: float  # rad
    focal_spread: float
    angular_spread: float
    dose: float  # e/A^2
    mtf_c2: float
    mtf_c3: float
    mtf_c4: float
    blur: float  # output px
    gradient: float  # relative amplitude of the illumination gradient
    gradient_angle: float  # rad
    gradient_curvature: float  # share of the gradient that is quadratic
    patchiness: float  # relative std of a smooth random illumination/thickness field (not flat-fieldable)
    patch_scale: float  # its correlation length, output px

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def draw_optics(rng: np.random.Generator, cfg) -> Optics:
    """Draw a variant from the `optics` config (dose log-uniform, everything else uniform)."""
    u = lambda key: float(rng.uniform(*cfg[key]))  # noqa: E731
    return Optics(
        defocus=u("defocus"),
        cs=u("cs"),
        astigmatism=u("astigmatism"),
        astigmatism_angle=float(rng.uniform(0, np.pi)),
        focal_spread=u("focal_spread"),
        angular_spread=u("angular_spread"),
        dose=float(np.exp(rng.uniform(np.log(cfg.dose[0]), np.log(cfg.dose[1])))),
        mtf_c2=u("mtf_c2"),
        mtf_c3=u("mtf_c3"),
        mtf_c4=u("mtf_c4"),
        blur=u("blur"),
        gradient=u("gradient"),
        gradient_angle=float(rng.uniform(0, 2 * np.pi)),
        gradient_curvature=float(rng.uniform(-1, 1)),
        patchiness=u("patchiness"),
        patch_scale=u("patch_scale"),
    )


def make_ctf(optics: Optics, energy: float, semiangle_cutoff: float):
    """abTEM CTF of one variant (defocus = -C10, Cs = C30, two-fold astigmatism C12 at phi12)."""
    from abtem import CTF

    return CTF(
        energy=energy,
        semiangle_cutoff=semiangle_cutoff,
        focal_spread=optics.focal_spread,
        angular_spread=optics.angular_spread,
        aberration_coefficients={"C10": -optics.defocus, "C30": optics.cs, "C12": optics.astigmatism, "phi12": optics.astigmatism_angle},
    )


class AngularGrid:
    """Scattering angles (rad, float32) at which CTFs are evaluated, with what every variant
    shares: the powers of alpha and abTEM's (hard) objective aperture."""

    def __init__(self, alpha: np.ndarray, phi: np.ndarray, semiangle_cutoff: float):
        self.alpha, self.phi = alpha, phi
        self.alpha2, self.alpha3, self.alpha4 = alpha**2, alpha**3, alpha**4
        self.aperture = (alpha <= np.asarray(semiangle_cutoff) * 1e-3).astype(np.float32)


def ctf_kernel(optics: Optics, energy: float, grid: AngularGrid) -> np.ndarray:
    """The CTF of `make_ctf` on `grid`, equal to abTEM's `CTF._evaluate_from_angular_grid` to the bit.

    abTEM evaluates every aberration of order <= 5 in both the phase and the spatial envelope; here
    all but C10, C12 (phi12) and C30 are zero, so their terms (exact zeros, added or multiplied by
    zeros) are left out and the others are written in abTEM's own float32 operations and order:
    aberration phase x spatial envelope x temporal envelope x aperture (the aperture is hard:
    the kernel has no grid). tests/simulate/test_simulate.py compares the two.
    """
    from abtem.core.complex import complex_exponential
    from abtem.core.energy import energy2wavelength

    wavelength = energy2wavelength(energy)
    alpha, phi = grid.alpha, grid.phi
    c10, c12, phi12, c30 = -optics.defocus, optics.astigmatism, optics.astigmatism_angle, optics.cs
    cos2 = np.cos(2 * (phi - phi12))
    chi = np.zeros(alpha.shape, dtype=np.float32)  # abtem.transfer.Aberrations
    if c10 != 0.0 or c12 != 0.0 or phi12 != 0.0:
        chi = chi + (1 / 2 * grid.alpha2 * (c10 + c12 * cos2))
    if c30 != 0.0:
        chi = chi + (1 / 4 * grid.alpha4 * np.float32(c30))
    chi *= np.array(2 * np.pi / wavelength, dtype=np.float32)
    kernel = complex_exponential(-chi)
    if optics.angular_spread != 0.0:  # abtem.transfer.SpatialEnvelope
        spread = np.asarray(optics.angular_spread / 1e3, dtype=np.float32)
        dchi_dk = 2 * np.pi / wavelength * ((c12 * cos2 + c10) * alpha + c30 * grid.alpha3)
        dchi_dphi = -2 * np.pi / wavelength * (1 / 2.0 * (2.0 * c12 * np.sin(2.0 * (phi - phi12))) * alpha)
        kernel = kernel * np.exp(-np.sign(spread) * (spread / 2) ** 2 * (dchi_dk**2 + dchi_dphi**2))
    if optics.focal_spread != 0.0:  # abtem.transfer.TemporalEnvelope
        kernel = kernel * np.exp(-((0.5 * np.pi / wavelength * optics.focal_spread * grid.alpha2) ** 2)).astype(np.float32)
    return kernel * grid.aperture


@functools.lru_cache(maxsize=4)
def _polar_grid(semiangle_cutoff: float) -> AngularGrid:
    """64 x 32 (alpha, phi) samples of the aperture and its soft edge (`delocalisation`)."""
    alpha = np.linspace(0, APERTURE_EDGE * semiangle_cutoff * 1e-3, 64, dtype=np.float32)[:, None]
    phi = np.linspace(0, np.pi, 32, endpoint=False, dtype=np.float32)[None, :]
    return AngularGrid(*np.broadcast_arrays(alpha, phi), semiangle_cutoff)


def delocalisation(optics: Optics, energy: float, semiangle_cutoff: float, envelope_floor: float) -> float:
    """How far (A) the CTF spreads a point's contrast: the largest beam displacement grad chi / 2 pi
    (radial C10 a + C30 a^3 + C12 a cos 2(phi - phi12), tangential -C12 a sin 2(phi - phi12); a the
    scattering angle, C10 = -defocus) over the part of the aperture where the coherence envelopes
    still pass >= `envelope_floor` of the amplitude."""
    grid = _polar_grid(semiangle_cutoff)
    alpha, phi = grid.alpha, grid.phi
    passed = np.abs(ctf_kernel(optics, energy, grid)) >= envelope_floor
    twice = 2 * (phi - optics.astigmatism_angle)
    radial = -optics.defocus * alpha + optics.cs * alpha**3 + optics.astigmatism * alpha * np.cos(twice)
    shift = np.hypot(radial, optics.astigmatism * alpha * np.sin(twice))
    return float(shift[passed].max()) if passed.any() else 0.0


def slice_edges(structure: Structure, graphene_slice: float, amorphous_slice: float) -> tuple[float, ...]:
    """Slice thicknesses: a thin slice around the graphene plane, thicker ones through the weakly
    scattering amorphous layers (their sub-slice defocus is far below the focal spread)."""
    z = structure.atoms.positions[:, 2]
    depth = float(structure.atoms.cell[2, 2])
    z_sheet = float(np.median(z[~structure.amorphous])) if (~structure.amorphous).any() else depth / 2
    below = max(z_sheet - graphene_slice / 2, 0.0)
    above = max(depth - below - graphene_slice, 0.0)
    split = lambda h: [h / n] * n if (n := int(np.ceil(h / amorphous_slice - 1e-9))) else []  # noqa: E731
    return tuple(split(below) + [graphene_slice] + split(above))


def exit_wave(structure: Structure, sampling: float, graphene_slice: float, amorphous_slice: float, energy: float) -> np.ndarray:
    """Plane-wave exit wave (complex64, [x, y]) of the structure on an FFT-friendly grid."""
    import abtem

    gpts = grid_size(structure.extent, sampling)
    potential = abtem.Potential(
        structure.atoms,
        gpts=gpts,
        projection="infinite",
        slice_thickness=slice_edges(structure, graphene_slice, amorphous_slice),
    )
    wave = abtem.PlaneWave(energy=energy).multislice(potential, lazy=False)
    wave = wave.to_cpu() if hasattr(wave, "to_cpu") else wave
    return np.asarray(wave.array, dtype=np.complex64)


def fourier_crop(spectrum: np.ndarray, n: int) -> np.ndarray:
    """Keep the n x n lowest frequencies of an unshifted 2-D spectrum."""
    half = n // 2
    idx = np.r_[0 : n - half, spectrum.shape[0] - half : spectrum.shape[0]]
    return spectrum[np.ix_(idx, idx)]


class VariantImager:
    """Turns one exit wave into many images with different optics, dose and detector draws."""

    def __init__(self, wave: np.ndarray, extent: float, energy: float, image_px: int, margin_px: int,
                 oversampling: float | None, semiangle_cutoff: float):
        """`oversampling`: wave px per output px; None = the alias-free minimum (`wave_px`), rounded
        up to a fast FFT size within the exit wave's grid."""
        from abtem.core.energy import energy2wavelength

        self.image_px, self.margin_px = image_px, margin_px
        self.full_px = image_px + 2 * margin_px  # output grid including the margin
        self.pixel_size = extent / self.full_px
        need = wave_px(self.full_px, self.pixel_size, energy, semiangle_cutoff)
        self.wave_px = fast_even_size(need, wave.shape[0]) if oversampling is None else 2 * int(np.ceil(oversampling * self.full_px / 2))
        if self.wave_px < need:
            raise ValueError(f"oversampling {oversampling} aliases at {self.pixel_size:.3f} A/px: needs {need / self.full_px:.3f}")
        self.energy, self.semiangle_cutoff = energy, semiangle_cutoff
        spectrum = scipy.fft.fft2(wave, norm="forward")
        if self.wave_px > wave.shape[0]:
            raise ValueError(f"potential sampling too coarse: {wave.shape[0]} px < {self.wave_px} px needed")
        k = scipy.fft.fftfreq(self.wave_px, extent / self.wave_px)
        kx, ky = np.meshgrid(k, k, indexing="ij")
        alpha = np.hypot(kx, ky) * energy2wavelength(energy)  # rad
        # the CTF is only evaluated inside the objective aperture (soft edge included): ~6x cheaper
        self.inside = np.flatnonzero(alpha < APERTURE_EDGE * semiangle_cutoff * 1e-3)  # flat indices
        self.angles = AngularGrid(alpha.ravel()[self.inside].astype(np.float32),
                                  np.arctan2(ky.ravel()[self.inside], kx.ravel()[self.inside]).astype(np.float32), semiangle_cutoff)
        self.spectrum = fourier_crop(spectrum, self.wave_px).ravel()[self.inside]
        q = scipy.fft.fftfreq(self.full_px) * 2  # output frequencies in units of Nyquist (rfft layout)
        self.q = np.hypot(q[:, None], scipy.fft.rfftfreq(self.full_px)[None, :] * 2).astype(np.float32)
        half = self.full_px // 2  # rows of the wave-grid intensity spectrum kept on the output grid
        self.rows = np.r_[0 : self.full_px - half, self.wave_px - half : self.wave_px]
        c = (np.arange(image_px) + 0.5) / image_px * 2 - 1
        self.x, self.y = np.meshgrid(c, c, indexing="ij")
        self.bowl = self.x**2 + self.y**2 - 2 / 3  # the quadratic part of the illumination, zero mean

    def ctf(self, optics: Optics) -> np.ndarray:
        """abTEM's CTF kernel (aberrations x envelopes x soft aperture) on the cropped wave grid."""
        return ctf_kernel(optics, self.energy, self.angles)

    def noiseless(self, optics: Optics) -> np.ndarray:
        """Intensity after the CTF and detector MTF on the output grid (mean ~1), margin cropped."""
        filtered = np.zeros((self.wave_px, self.wave_px), dtype=np.complex64)
        filtered.ravel()[self.inside] = self.spectrum * self.ctf(optics)
        wave = scipy.fft.ifft2(filtered, norm="forward")
        intensity = (wave.real**2 + wave.imag**2).astype(np.float32)
        spectrum = scipy.fft.rfft2(intensity, norm="forward")[self.rows, : self.full_px // 2 + 1]  # Fourier crop
        mtf = (1 - optics.mtf_c2) / (1 + (self.q / (2 * optics.mtf_c3)) ** optics.mtf_c4) + optics.mtf_c2
        image = scipy.fft.irfft2(spectrum * mtf.astype(np.float32), s=(self.full_px, self.full_px), norm="forward")
        m = self.margin_px
        return image[m : m + self.image_px, m : m + self.image_px]

    def illumination(self, optics: Optics, rng: np.random.Generator) -> np.ndarray:
        """Smooth multiplicative illumination: a tilt plus a quadratic bowl (peak deviation
        `gradient`, removed by the Bezier flat-field) times large random patches (`patchiness`,
        which real images also keep after flat-fielding)."""
        ramp = np.cos(optics.gradient_angle) * self.x + np.sin(optics.gradient_angle) * self.y
        shape = (1 - abs(optics.gradient_curvature)) * ramp + optics.gradient_curvature * self.bowl
        patches = optics.patchiness * smooth_field(rng, self.image_px, optics.patch_scale)
        return (1 + optics.gradient * shape / max(np.abs(shape).max(), 1e-9)) * np.exp(patches)

    def image(self, optics: Optics, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
        """One recorded image (float32, counts / (dose * pixel area), mean ~1) and stage timings."""
        t0 = time.perf_counter()
        clean = self.noiseless(optics)
        t1 = time.perf_counter()
        image = self.record(clean, optics, rng)
        return image, {"ctf": t1 - t0, "noise": time.perf_counter() - t1}

    def record(self, clean: np.ndarray, optics: Optics, rng: np.random.Generator) -> np.ndarray:
        """The detector's view of a noiseless image: illumination, shot noise at the dose, blur."""
        lit = clean * self.illumination(optics, rng)
        per_pixel = optics.dose * self.pixel_size**2
        counts = poisson_counts(np.clip(lit, 0, None) * per_pixel, rng.standard_normal(lit.shape))
        return ndimage.gaussian_filter(counts / per_pixel, optics.blur, mode="reflect").astype(np.float32)
