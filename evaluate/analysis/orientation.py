"""Local lattice orientation of graphene (angle mod 60 degrees), grains and grain boundaries.

The physics: a graphene grain's lattice image is a sum of plane waves at its six {100}
reciprocal vectors, |q| = 1 / 2.13 A, at its own angle. The local strength of the wave at
wavevector q is the amplitude of the image demodulated at q and smoothed by a Gaussian window
(complex demodulation, as in geometric phase analysis): g_q(x) = sum_k F(k) G(k - q) e^{2 pi i k x}.
Done for `n` angles phi over 180 degrees on the {100} ring (the lattice parameter the lattice reader
measures), the windowed power P(x, phi) = |g(x, phi)|^2 peaks at the grain's three {100} angles,
which repeat every 60 degrees; its sixth angular harmonic, the hexagonal order parameter

    psi6(x) = sum_phi P(x, phi) e^{6 i phi},

has the phase 6 theta (theta: the lattice's orientation mod 60 degrees) and, over sum_phi P, a
modulus near 1 for one grain, lower where two orientations share the window (a boundary) or where
the power is isotropic (amorphous carbon, noise). This is the windowed-Fourier equivalent of the
paper's order parameter (a ring of atoms convolved over a set of orientations). Each demodulated
map is band-limited, so it is computed on a coarse grid from a crop of the spectrum (cheap even at
2048 px) and interpolated back.

Angles are those of the {100} reflections in the image's (row, column) frame,
atan2(q_row, q_col) as in `grapheneseg.lattice`: with rows pointing down, a positive angle turns
clockwise on screen. The window is `window_periods` {100} plane spacings (sigma).

Grains and boundaries (`grains_of`): where the orientation across one window differs by more than
`jump_deg` a boundary band lies; grains are the connected lattice regions outside the bands, grown
back across them until they meet; boundary lines are where two grains meet, so each lies midway
through its band; touching grains misoriented by less than `merge_deg` are one grain.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import scipy.ndimage

from grapheneseg import GRAPHENE_D100 as D100
from grapheneseg.preprocessing import preprocess

WINDOW_PERIODS = 2.0  # Gaussian window sigma in {100} plane spacings
# chosen against the simulator's structure truth (benchmarks/bench_structure.py sim; were 5, 3 and 4)
JUMP_DEG = 3.0  # an orientation change across one window above this marks a boundary
MERGE_DEG = 2.0  # touching grains misoriented less than this are one grain
VACUUM_FRACTION = 0.2  # lattice power below this share of the resolved lattice's level: no lattice
VACUUM_REFERENCE_CONFIDENCE = 0.4  # the lattice level is read where the lattice is resolved (confidence above)
VACUUM_GROW_A = 1.5  # vacuum reaches this far past where the windowed power crosses its threshold
MIN_RESOLVED_SHARE = 0.2  # below this share of resolved lattice outside the mask (noise alone: ~10 %), no vacuum
MIN_GRAIN_WINDOWS = 1.0  # a grain must cover at least this many window areas (2 sigma)^2
VACUUM_WINDOW_PERIODS = 1.0  # vacuum is read from a map this sharp (hole edges), `evaluate structure`


@dataclass
class OrientationMap:
    """Per-pixel lattice orientation of a micrograph (all arrays on its grid)."""

    angle: np.ndarray  # degrees mod 60 (float32)
    confidence: np.ndarray  # |psi6| / sum P, 0-1: ~1 for one grain, low at boundaries and without lattice
    strength: np.ndarray  # sum P: power at the {100} ring in the window (arbitrary units)
    psi: np.ndarray  # complex psi6 / sum P (unit phase 6 theta, modulus = confidence)
    window_px: float  # window sigma, px
    pixel_size: float  # A/px the map was computed at


def misorientation(a, b):
    """Smallest angle (degrees, 0-30) between hexagonal orientations `a` and `b` (degrees mod 60)."""
    d = np.abs((np.asarray(a) - np.asarray(b)) % 60.0)
    return np.minimum(d, 60.0 - d)


def orientation_map(image: np.ndarray, pixel_size: float, window_periods: float = WINDOW_PERIODS,
                    n_angles: int | None = None) -> OrientationMap:
    """The local orientation of the graphene lattice in `image` at `pixel_size` A/px (module doc).
    `n_angles`: demodulation angles over 180 degrees (default: one per angular width of the window)."""
    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape
    q100 = pixel_size / D100  # 1/px
    sigma = window_periods / q100  # px
    pre = preprocess(image)
    pre = pre - pre.mean()
    pad = int(np.ceil(2 * sigma))
    ny, nx = scipy.fft.next_fast_len(h + 2 * pad), scipy.fft.next_fast_len(w + 2 * pad)
    padded = np.zeros((ny, nx), np.float32)
    padded[pad:pad + h, pad:pad + w] = pre
    spectrum = scipy.fft.fft2(padded, workers=1)
    s = 1.0 / (2 * np.pi * sigma)  # the window's width in Fourier space, 1/px
    hy, hx = int(np.ceil(3 * s * ny)), int(np.ceil(3 * s * nx))
    my, mx = scipy.fft.next_fast_len(4 * hy + 2), scipy.fft.next_fast_len(4 * hx + 2)
    if n_angles is None:
        n_angles = int(np.ceil(np.pi / (s / q100)))  # spacing <= the window's angular width
    dy, dx = np.meshgrid(np.arange(-hy, hy + 1), np.arange(-hx, hx + 1), indexing="ij")
    psi = np.zeros((my, mx), complex)
    total = np.zeros((my, mx))
    for phi in np.arange(n_angles) * np.pi / n_angles:
        cy, cx = q100 * np.sin(phi) * ny, q100 * np.cos(phi) * nx  # Fourier pixels
        iy, ix = int(round(cy)), int(round(cx))
        gauss = np.exp(-0.5 * (((dy + iy - cy) / (s * ny)) ** 2 + ((dx + ix - cx) / (s * nx)) ** 2))
        small = np.zeros((my, mx), complex)
        small[dy % my, dx % mx] = spectrum[(iy + dy) % ny, (ix + dx) % nx] * gauss
        power = np.abs(scipy.fft.ifft2(small, workers=1)) ** 2
        psi += power * np.exp(6j * phi)
        total += power
    # back to the image grid: coarse sample j sits at padded pixel j * n / m
    rows = (np.arange(h) + pad) * my / ny
    cols = (np.arange(w) + pad) * mx / nx
    coords = np.meshgrid(rows, cols, indexing="ij")

    def up(a: np.ndarray) -> np.ndarray:
        return scipy.ndimage.map_coordinates(a, coords, order=1, mode="grid-wrap").astype(np.float32)

    total_full = np.maximum(up(total), 1e-30)
    psi_full = (up(psi.real) + 1j * up(psi.imag)) / total_full
    angle = (np.degrees(np.angle(psi_full)) / 6.0) % 60.0
    return OrientationMap(angle.astype(np.float32), np.abs(psi_full).astype(np.float32), total_full,
                          psi_full.astype(np.complex64), float(sigma), float(pixel_size))


def lattice_and_vacuum(omap: OrientationMap, mask: np.ndarray | None = None,
                       vacuum_fraction: float = VACUUM_FRACTION,
                       reference_confidence: float = VACUUM_REFERENCE_CONFIDENCE,
                       grow_A: float = VACUUM_GROW_A) -> tuple[np.ndarray, np.ndarray]:
    """(lattice, vacuum) boolean maps outside the contamination `mask`: vacuum where the power at
    the {100} ring is below `vacuum_fraction` of the resolved lattice's level, grown by `grow_A`;
    lattice elsewhere.

    The level is the median power where the lattice is resolved (hexagonal confidence above
    `reference_confidence`), not a percentile of all the power: amorphous edges and grain
    boundaries the mask leaves out carry strong, isotropic power at the ring and would raise it,
    turning a weakly imaged grain into vacuum. Where under `MIN_RESOLVED_SHARE` (20 %) of the field
    shows a resolved lattice (`lattice_resolved`), a hole cannot be told from graphene whose lattice
    the imaging conditions wash out: no vacuum is called. The window blurs a hole's edge into the
    lattice's power, so the threshold crossing lies inside the hole; `grow_A` puts it back (both
    chosen on held-out simulations against their truth, benchmarks/bench_structure.py sim)."""
    outside = np.ones(omap.strength.shape, bool) if mask is None else ~np.asarray(mask, bool)
    if not lattice_resolved(omap, mask, reference_confidence):
        return outside, np.zeros(outside.shape, bool)
    level = np.median(omap.strength[outside & (omap.confidence > reference_confidence)])
    vacuum = outside & (omap.strength < vacuum_fraction * level)
    # no specks: a vacuum region must be at least a window (sigma) across; a lattice speck inside
    # one is vacuum (opening and closing by a disc, through distance transforms: fast at any size)
    r = max(1.0, omap.window_px / 2)
    vacuum = _dilate(_erode(vacuum, r), r) & outside
    vacuum = _erode(_dilate(vacuum, r), r) & outside
    if grow_A > 0:
        vacuum = _dilate(vacuum, grow_A / omap.pixel_size) & outside
    return outside & ~vacuum, vacuum


def lattice_resolved(omap: OrientationMap, mask: np.ndarray | None = None,
                     reference_confidence: float = VACUUM_REFERENCE_CONFIDENCE) -> bool:
    """Whether at least `MIN_RESOLVED_SHARE` of the field outside the contamination `mask` shows a
    resolved lattice (hexagonal confidence above `reference_confidence`): without it no vacuum is
    called (`lattice_and_vacuum`), and a structure map says so instead of reporting none."""
    outside = np.ones(omap.strength.shape, bool) if mask is None else ~np.asarray(mask, bool)
    resolved = outside & (omap.confidence > reference_confidence)
    return bool(outside.any()) and bool(resolved.sum() >= MIN_RESOLVED_SHARE * outside.sum())


def _erode(region: np.ndarray, radius: float) -> np.ndarray:
    return scipy.ndimage.distance_transform_edt(np.pad(region, 1, constant_values=True))[1:-1, 1:-1] > radius


def _dilate(region: np.ndarray, radius: float) -> np.ndarray:
    return scipy.ndimage.distance_transform_edt(~region) <= radius if region.any() else region


def jump_map(omap: OrientationMap, distance: float | None = None) -> np.ndarray:
    """Largest orientation change (degrees) between the points `distance` px (default: the
    window sigma) either side of each pixel, along rows and along columns."""
    d = max(1, int(round(distance or omap.window_px)))
    u = omap.psi / np.maximum(np.abs(omap.psi), 1e-12)
    pad = np.pad(u, d, mode="edge")
    h, w = u.shape
    jump = np.zeros(u.shape, np.float32)
    for a, b in ((pad[:h, d:d + w], pad[2 * d:, d:d + w]), (pad[d:d + h, :w], pad[d:d + h, 2 * d:])):
        jump = np.maximum(jump, np.abs(np.angle(a * np.conj(b))) / 6.0 * 180.0 / np.pi)
    return jump


@dataclass
class Grains:
    """Grains of a micrograph: `labels` (0 = no grain: vacuum, contamination, boundary specks),
    per-grain orientation (degrees mod 60) and area (px), the 1-px boundary lines where two grains
    meet, and the touching pairs with their misorientation and boundary length (px)."""

    labels: np.ndarray
    orientation: dict[int, float]
    area: dict[int, int]
    boundary: np.ndarray
    pairs: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)

    def neighbours(self, grain: int) -> list[int]:
        return sorted({b if a == grain else a for a, b in self.pairs if grain in (a, b)})


def grains_of(omap: OrientationMap, lattice: np.ndarray, jump_deg: float = JUMP_DEG,
              merge_deg: float = MERGE_DEG, min_grain_windows: float = MIN_GRAIN_WINDOWS) -> Grains:
    """Grains and boundary lines of the `lattice` region (module doc)."""
    from skimage.segmentation import expand_labels

    band = jump_map(omap) > jump_deg
    cores, n = scipy.ndimage.label(lattice & ~band)
    min_area = min_grain_windows * (2 * omap.window_px) ** 2
    sizes = np.bincount(cores.ravel(), minlength=n + 1)
    keep = sizes >= min_area
    keep[0] = False
    relabel = np.zeros(n + 1, int)
    relabel[keep] = np.arange(1, keep.sum() + 1)
    cores = relabel[cores]
    orientation = _mean_orientation(omap, cores)
    # merge touching cores of one orientation (a noisy band splitting a grain)
    grown = expand_labels(cores, distance=3 * omap.window_px) * lattice
    parent = list(range(cores.max() + 1))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in _touching(grown):
        if misorientation(orientation[a], orientation[b]) < merge_deg:
            parent[find(a)] = find(b)
    roots = np.array([find(i) for i in range(len(parent))])
    _, dense = np.unique(roots, return_inverse=True)  # root 0 (background) stays 0
    cores = dense[cores]
    grown = dense[grown]
    orientation = _mean_orientation(omap, cores)
    boundary = np.zeros(lattice.shape, bool)
    pairs: dict[tuple[int, int], dict[str, float]] = {}
    for axis in (0, 1):
        a = grown if axis == 0 else grown.T
        left, right = a[:-1], a[1:]
        meet = (left > 0) & (right > 0) & (left != right)
        line = np.zeros(a.shape, bool)
        line[:-1] |= meet
        boundary |= line if axis == 0 else line.T
        for i, j in zip(left[meet], right[meet]):
            key = (min(i, j), max(i, j))
            pairs.setdefault(key, {"edges": 0})["edges"] += 1
    for (i, j), pair in pairs.items():
        pair["misorientation"] = float(misorientation(orientation[i], orientation[j]))
    boundary &= lattice
    lengths = _line_lengths(grown)
    for key, pair in pairs.items():
        pair["length_px"] = lengths.get(key, 0.0)
        del pair["edges"]
    area = {int(g): int(c) for g, c in enumerate(np.bincount(grown.ravel(), minlength=grown.max() + 1)) if g}
    return Grains(grown, {g: orientation[g] for g in area}, area, boundary, pairs)


def _mean_orientation(omap: OrientationMap, labels: np.ndarray) -> dict[int, float]:
    """Circular mean orientation (degrees mod 60) of each label, weighted by confidence."""
    n = labels.max() + 1
    re = np.bincount(labels.ravel(), omap.psi.real.ravel().astype(float), n)
    im = np.bincount(labels.ravel(), omap.psi.imag.ravel().astype(float), n)
    return {g: float((np.degrees(np.arctan2(im[g], re[g])) / 6.0) % 60.0) for g in range(1, n)}


def _touching(labels: np.ndarray) -> set[tuple[int, int]]:
    out = set()
    for a, b in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:])):
        meet = (a > 0) & (b > 0) & (a != b)
        out |= {(int(min(i, j)), int(max(i, j))) for i, j in set(zip(a[meet].tolist(), b[meet].tolist()))}
    return out


def _line_lengths(labels: np.ndarray) -> dict[tuple[int, int], float]:
    """Length (px) of the boundary line between each pair of touching labels: the number of pixel
    edges between them times pi/4 (the mean ratio of a line's length to its staircase's for
    lines at uniformly random angles), per pair."""
    counts: dict[tuple[int, int], float] = {}
    for a, b in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:])):
        meet = (a > 0) & (b > 0) & (a != b)
        for i, j in zip(a[meet].tolist(), b[meet].tolist()):
            key = (min(i, j), max(i, j))
            counts[key] = counts.get(key, 0.0) + np.pi / 4
    return counts
