"""The pixel size of a graphene micrograph read from its own lattice (one reader for predict, sort,
atoms and `simulate calibrate`).

Graphene's Fourier transform shows hexagonal rings of spots at the plane spacings d = 2.13 A /
order, order = 1 ({100}), sqrt 3 ({110}), 2 ({200}), sqrt 7 ({210}), 3 ({300}). A ring at q (1/px)
that is order k gives a pixel size of 2.13 q / k A/px, so one ring alone has several readings.

1. Spots: local maxima of the windowed power spectrum (smoothed by 1 px) over the whole
   spectrum from 3 Fourier pixels to Nyquist. No prior on the scale: at 0.02 A/px
   on 2048 px the {100} ring sits at ~0.01 1/px (19 Fourier pixels), at 1.0 A/px near 0.47 1/px.
   Each spot's strength is its power over the local background (geometric mean over
   `BACKGROUND_PX`), its radius refined to a fraction of a Fourier pixel (parabolic fit). A
   micrograph must span enough lattice periods for its ring to lie `MIN_Q_PX` from the centre.
2. Rings: spots grouped by radius; a ring counts only when another of its spots lies 60 or 120
   degrees from its strongest (a hexagon, not noise, nor the axis-aligned artefacts of
   interpolation). Rings `FAINT_DECADES` of power below the strongest ring, or below the
   spectrum's strongest background level, are dropped: an upsampled micrograph carries faint
   replicas of its spectrum beyond its original Nyquist frequency, which are all that is left
   when its lattice is too weak to show.
3. Readings: every ring as every order in `READ_ORDERS` proposes a pixel size; each reading is
   scored by the strength of the observed rings it explains, minus a penalty when it predicts a
   {100} ring (the innermost and, in graphene HRTEM, nearly always visible one) inside the
   observable band that is not there. The best reading wins; ties go to the lower order. So two
   rings with the ratio 2/sqrt 3 read as {110} + {200} (a CTF zero at {100}), a lone ring reads as
   {100}, and at coarse pixel sizes (> ~0.6 A/px, {110} beyond Nyquist) the {100} ring alone does.
4. The sqrt 3 check (`read_lattice`): a reading that rests on rings of one order only (a lone
   ring) could be that ring as {100} or as {110} (the {100} ring at a CTF zero or too faint for
   step 1). Both hypotheses are weighed by the spectrum at the spots each predicts inside the band
   (looked up where they must be, at a lower threshold than step 1): one that misses clearly fewer
   wins; two within a margin leave the reading `ambiguous`, with the rival pixel size, so that the
   caller warns rather than guesses.

None when no hexagonal ring is found: the caller says so (never a silent guess).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage

from grapheneseg import GRAPHENE_D100 as D100
from grapheneseg.spectrum import frequencies, power_spectrum

ORDERS = (1.0, np.sqrt(3.0), 2.0, np.sqrt(7.0), 3.0)  # q / q{100} of {100} {110} {200} {210} {300}
READ_ORDERS = ORDERS[:3]  # a ring is read as one of these; the outer ones only confirm
MIN_Q_PX = 3.0  # innermost radius searched, Fourier pixels (inside: the image's own envelope)
SPOT_RATIO = 12.0  # a spot's power / its local background
BACKGROUND_PX = 4.0  # width of the local background (geometric mean), Fourier pixels
RING_TOL = 0.03  # relative radius tolerance of one ring (and of a predicted ring matching)
ANGLE_TOL = 4.0  # degrees: two spots of one hexagon lie 60 or 120 degrees apart
MISSING_100 = 0.5  # penalty (times the strongest ring) for a predicted {100} ring that is absent
MAX_SPOTS = 200
FAINT_DECADES = 3.0  # rings this many decades of power below the strongest are ignored
# step 4 (sqrt 3 check of a lone ring order): a predicted ring counts as seen when all three of
# its spots stand TARGET_RATIO over the local background and NOISE_FACTOR x the ring's median;
# a missing {100} weighs 1, a missing {110} or {200} MISSING_OUTER; rings beyond BAND_EDGE (1/px)
# are not checked. The rival wins when its {100} spots are seen or it misses more than
# SWITCH_MARGIN less; a reading that misses some predicted ring itself
# is ambiguous when its rival misses no more than AMBIGUITY_MARGIN more (one absent {100})
TARGET_RATIO = 2.0
NOISE_FACTOR = 2.0
MISSING_OUTER = 0.5
BAND_EDGE = 0.48
SWITCH_MARGIN = 0.5
AMBIGUITY_MARGIN = 1.0


def lattice_spectrum(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(power, local background, fy, fx) of the preprocessed, windowed image: half-plane spectrum
    (grapheneseg.spectrum; rows qy from -1/2 up, columns qx >= 0, 1/px), smoothed by 1 px."""
    from grapheneseg.preprocessing import preprocess

    power = np.fft.fftshift(power_spectrum(preprocess(image)), axes=0)
    power = scipy.ndimage.gaussian_filter(power, 1.0, mode=("wrap", "nearest"))
    fy, fx = frequencies(image.shape)
    fy = np.fft.fftshift(fy, axes=0)
    log_power = np.log(np.maximum(power, 1e-30))
    background = np.exp(scipy.ndimage.gaussian_filter(log_power, BACKGROUND_PX, mode=("wrap", "nearest")))
    return power, background, fy, fx


def lattice_spots(image: np.ndarray, spectrum: tuple | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(radius in 1/px, angle in degrees mod 180, log10 strength, log10 power relative to the
    strongest background level of the searched spectrum) of the spectrum's spots (`spectrum`:
    `lattice_spectrum(image)` when already computed)."""
    h, w = image.shape
    power, background, fy, fx = spectrum if spectrum is not None else lattice_spectrum(image)
    q = np.hypot(fy, fx)
    ratio = power / background
    peak = (power == scipy.ndimage.maximum_filter(power, size=5, mode=("wrap", "nearest")))
    peak &= (ratio > SPOT_RATIO) & (q * min(h, w) >= MIN_Q_PX) & (np.abs(fy) < 0.5) & (fx < 0.5)
    peak &= (fx > 0) | (fy > 0)  # one spot of each symmetric pair
    rows, cols = np.nonzero(peak)
    keep = np.argsort(ratio[rows, cols])[::-1][:MAX_SPOTS]
    rows, cols = rows[keep], cols[keep]
    dy = _vertex(np.log(power[(rows - 1) % h, cols]), np.log(power[rows, cols]), np.log(power[(rows + 1) % h, cols]))
    left = np.log(power[rows, np.abs(cols - 1)])  # column -1 mirrors column 1 (Hermitian symmetry)
    right = np.log(power[rows, np.minimum(cols + 1, power.shape[1] - 1)])
    dx = np.where(cols + 1 < power.shape[1], _vertex(left, np.log(power[rows, cols]), right), 0.0)
    qy, qx = fy[rows, 0] + dy / h, fx[0, cols] + dx / w
    level = background[q * min(h, w) >= MIN_Q_PX].max()  # the spectrum's strongest background
    return (np.hypot(qy, qx), np.degrees(np.arctan2(qy, qx)) % 180.0, np.log10(ratio[rows, cols]),
            np.log10(np.maximum(power[rows, cols], 1e-30) / level))


def _vertex(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Sub-pixel offset of a parabola's vertex through (-1, a), (0, b), (1, c), clipped to +-0.5."""
    denom = a - 2 * b + c
    return np.clip(np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0), -0.5, 0.5)


def lattice_rings(image: np.ndarray, spectrum: tuple | None = None) -> list[tuple[float, float, float, float]]:
    """Hexagonal rings of the spectrum as (radius in 1/px, strength, relative log10 power of the
    strongest spot, see `lattice_spots`, angle of the strongest spot in degrees mod 180), strongest
    first; rings of one radius (grains at other angles) are merged."""
    radius, angle, strength, power = lattice_spots(image, spectrum)
    rings = []
    used = np.zeros(len(radius), bool)
    for i in np.argsort(strength)[::-1]:
        if used[i]:
            continue
        same = ~used & (np.abs(radius - radius[i]) <= RING_TOL * radius[i] + 0.75 / min(image.shape))
        members = np.nonzero(same)[0]
        turn = (angle[members] - angle[i]) % 180.0  # 0, 60 or 120 degrees on a hexagon (half plane)
        hexagon = np.append(members[np.minimum(np.abs(turn - 60.0), np.abs(turn - 120.0)) < ANGLE_TOL], i)
        if len(hexagon) >= 2:
            used[hexagon] = True
            w = strength[hexagon]
            rings.append((float(np.average(radius[hexagon], weights=w)), float(w.sum()), float(power[hexagon].max()),
                          float(angle[i])))
    merged: list[tuple[float, float, float, float]] = []
    for r, s, p, a in sorted(rings):
        if merged and r - merged[-1][0] <= RING_TOL * r + 0.75 / min(image.shape):
            r0, s0, p0, a0 = merged[-1]
            merged[-1] = ((r0 * s0 + r * s) / (s0 + s), s0 + s, max(p0, p), a0 if s0 >= s else a)
        else:
            merged.append((r, s, p, a))
    return sorted(merged, key=lambda r: -r[1])


@dataclass(frozen=True)
class LatticeReading:
    """A lattice reading: the pixel size (A/px; None without a hexagonal ring), whether the
    spectrum leaves it ambiguous by sqrt 3 ({100} and {110} confusable), why, and the rival
    pixel size the spectrum would also allow (None when not ambiguous)."""

    pixel_size: float | None
    ambiguous: bool = False
    reason: str = ""
    rival: float | None = None


def read_lattice(image: np.ndarray) -> LatticeReading:
    """Pixel size of a graphene micrograph from its lattice rings (see module doc), with the
    sqrt 3 check of step 4: when the reading rests on rings of one order only (a lone ring), the
    rival reading (that ring as {110} when read as {100}, or the reverse) is weighed by the
    spectrum at both hypotheses' predicted spots (`_hypothesis_misses`); a rival whose {100}
    spots are there (only too faint for step 1) or that misses clearly fewer wins; when the reading
    itself misses a predicted ring and the rival misses at most one {100} more, the reading is
    ambiguous."""
    image = np.asarray(image, dtype=np.float32)
    spectrum = lattice_spectrum(image)
    rings = lattice_rings(image, spectrum)
    if not rings:
        return LatticeReading(None, reason="no hexagonal lattice ring")
    top = max(0.0, *(p for _, _, p, _ in rings))  # the strongest ring, or the spectrum's background level
    rings = [(r, s, a) for r, s, p, a in rings if p >= top - FAINT_DECADES]  # interpolation replicas are faint
    radii = np.array([r for r, _, _ in rings])
    strength = np.array([s for _, s, _ in rings])
    best, best_key, best_orders = None, None, None
    for q, _, _ in rings:
        for k, order in enumerate(READ_ORDERS):
            predicted = q / order * np.array(ORDERS)
            near = np.abs(radii[:, None] - predicted[None, :]) <= RING_TOL * predicted[None, :]
            explained = near.any(axis=1)
            score = strength[explained].sum()
            if predicted[0] * min(image.shape) >= MIN_Q_PX and not near[:, 0].any():
                score -= MISSING_100 * strength.max()
            key = (round(float(score), 6), -k)
            if best_key is None or key > best_key:
                # refine: every explained ring's own estimate of q{100}, weighted by its strength
                ratios = radii[explained] / np.array(ORDERS)[near[explained].argmax(axis=1)]
                best, best_key = D100 * float(np.average(ratios, weights=strength[explained])), key
                best_orders = set(near[explained].argmax(axis=1).tolist())
    if best is None:
        return LatticeReading(None, reason="only faint rings (interpolation replicas), no lattice ring")
    if len(best_orders) > 1:
        return LatticeReading(best)  # two orders at their ratio: no sqrt 3 ambiguity
    # a lone order: the strongest ring, read as {100} (or {110}/{200}); its rival is sqrt 3 away
    i = int(np.argmax(strength))
    q, angle = radii[i], rings[i][2]
    order = ORDERS[next(iter(best_orders))]
    if order == 2.0:
        return LatticeReading(best)  # read as {200} from a single order: leave as is (rare)
    rival_order = np.sqrt(3.0) if order == 1.0 else 1.0
    # spot angles of the {100} family: the ring's own if it is {100}, 30 degrees off if {110}
    own, _ = _hypothesis_misses(spectrum, image.shape, q / order, angle - (30.0 if order != 1.0 else 0.0), order)
    other, other_seen = _hypothesis_misses(spectrum, image.shape, q / rival_order,
                                           angle - (30.0 if rival_order != 1.0 else 0.0), rival_order)
    rival = float(D100 * q / rival_order)
    # {100} spots inside a ring read as {100} cannot be graphene's unless that ring is {110}
    if other < own - SWITCH_MARGIN or (order == 1.0 and 1.0 in other_seen):
        return LatticeReading(rival, reason=f"the ring at {q:.4f} 1/px read as {_NAMES[rival_order]}: "
                              f"the spectrum there fits it better than as {_NAMES[order]} ({best:.3f} A/px)")
    if own > 0 and other <= own + AMBIGUITY_MARGIN:
        return LatticeReading(best, True, f"one ring order only (at {q:.4f} 1/px), read as {_NAMES[order]} "
                              f"({best:.3f} A/px); as {_NAMES[rival_order]} it would give {rival:.3f} A/px "
                              "(a CTF zero at the missing ring): give the pixel size", rival)
    return LatticeReading(best)


def read_pixel_size(image: np.ndarray) -> float | None:
    """Pixel size (A/px) of a graphene micrograph from its lattice rings, or None (see module doc;
    `read_lattice` also says when the reading is ambiguous by sqrt 3)."""
    return read_lattice(image).pixel_size


def _hypothesis_misses(spectrum: tuple, shape: tuple[int, int], q100: float, angle100: float,
                       observed: float) -> tuple[float, set[float]]:
    """Weighted count of the rings that a reading with {100} at `q100` (1/px; a {100} spot at
    `angle100` degrees) predicts inside the observable band but the spectrum does not show at the
    predicted spots: a ring is seen when all three of its predicted spots (power over local
    background, the most within 2 px) stand above `TARGET_RATIO` and `NOISE_FACTOR` x the median
    over the ring's own pixels (its noise). {100} counts 1 (nearly always visible), {110} and {200} `MISSING_OUTER`
    each; the `observed` order (the ring the reading rests on) is not checked. Returns the misses
    and the orders seen."""
    power, background, fy, fx = spectrum
    h, w = shape
    ratio = scipy.ndimage.maximum_filter(power / background, size=5, mode=("wrap", "nearest"))
    radius = np.hypot(fy, fx)
    misses, seen_orders = 0.0, set()
    for order, weight, turn in ((1.0, 1.0, 0.0), (np.sqrt(3.0), MISSING_OUTER, 30.0), (2.0, MISSING_OUTER, 0.0)):
        q = q100 * order
        if abs(order - observed) < 1e-6 or q * min(h, w) < MIN_Q_PX or q > BAND_EDGE:
            continue
        noise = NOISE_FACTOR * np.median(ratio[np.abs(radius - q) < 1.5 / min(h, w)])
        seen = []
        for j in range(3):
            theta = np.radians(angle100 + turn + 60.0 * j)
            qy, qx = q * np.sin(theta), q * np.cos(theta)
            if qx < 0:  # the half plane holds the symmetric mate
                qy, qx = -qy, -qx
            row = min(max(int(round(qy * h)) + h // 2, 0), h - 1)
            seen.append(ratio[row, min(int(round(qx * w)), ratio.shape[1] - 1)])
        if min(seen) <= max(TARGET_RATIO, noise):
            misses += weight
        else:
            seen_orders.add(order)
    return misses, seen_orders


_NAMES = {1.0: "{100}", float(np.sqrt(3.0)): "{110}", 2.0: "{200}"}
