"""A micrograph's scale, decided once: its pixel size, where it came from, and the lattice reading
it rests on (`Scale`, `decide_scale`). The Predictor (evaluate.apply.predictor) decides it for
every micrograph it segments; the atom and structure maps take it from the segmentation instead of
reading the lattice again."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import scipy.ndimage

from grapheneseg import GRAPHENE_D100
from grapheneseg.formats import Micrograph
from grapheneseg.lattice import LatticeReading, read_lattice

MIN_SIDE = 32  # px: a smaller image holds too few lattice periods to say anything about
LATTICE_LIMIT = GRAPHENE_D100 / 2  # A/px: coarser pixels cannot resolve graphene's 2.13 A {100} planes


def pixel_size_text(size: float) -> str:
    """A pixel size in the unit a microscopist would say it in: 0.42 A/px, 6.3 nm/px, 0.169 um/px."""
    if size < 10:
        return f"{size:.3g} \u00c5/px"
    return f"{size / 10:.3g} nm/px" if size < 1e4 else f"{size / 1e4:.3g} \u00b5m/px"


def resample(image: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resample to `shape`; Gaussian anti-aliasing when shrinking."""
    factors = np.array(shape) / np.array(image.shape)
    if np.all(factors == 1):
        return image
    sigma = np.maximum((1 / factors - 1) / 2, 0)
    if np.any(sigma > 0):
        image = scipy.ndimage.gaussian_filter(image, sigma)
    return scipy.ndimage.zoom(image, factors, order=order, grid_mode=True, mode="grid-mirror")


class ScaleSource(str, Enum):
    """Where a micrograph's pixel size came from (written as its value in predictions.csv)."""

    FILE = "file"  # the file's own calibration
    SIGNAL = "signal"  # a HyperSpy signal's axes (evaluate.api)
    GIVEN = "given"  # --pixel-size, or pixel_size= in the API
    LAYER = "layer scale"  # a napari layer's scale, set by the user or another reader
    LATTICE = "lattice"  # read from the graphene lattice's spot rings
    AMBIGUOUS = "lattice (ambiguous)"  # read from the lattice, with a rival reading sqrt 3 apart
    SIMULATED = "simulated"  # a simulated micrograph (its pixel size is the simulation's)
    UNKNOWN = "unknown"  # none of them: segmented at the native scale

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class Scale:
    """A micrograph's pixel size (A/px, None when unknown), where it came from, and the lattice
    reading it rests on (None when the lattice was not read)."""

    pixel_size: float | None
    source: ScaleSource
    reading: LatticeReading | None = None

    @property
    def lattice_found(self) -> bool | None:
        """Whether a graphene lattice was found; None when the lattice was not read."""
        return None if self.reading is None else self.reading.pixel_size is not None

    def text(self) -> str:
        """'0.42 A/px (file)', or 'its native scale (unknown pixel size)'."""
        if self.pixel_size is None:
            return "its native scale (unknown pixel size)"
        return f"{pixel_size_text(self.pixel_size)} ({self.source})"

    def warning(self, name: str) -> str | None:
        """What a user must know about this scale (an unknown or ambiguous one), naming `name`."""
        if self.source is ScaleSource.UNKNOWN:
            return (f"{name}: no pixel size in the file, none given (--pixel-size) and no graphene lattice "
                    "found; segmented at its native scale, which is right only near 0.3-0.5 A/px")
        if self.source is ScaleSource.AMBIGUOUS:
            r = self.reading
            return (f"{name}: the graphene lattice reads {r.pixel_size:.3f} A/px, but {r.rival:.3f} A/px fits its "
                    f"spectrum too (a ring that may be {{100}} or {{110}}: {r.reason}); segmented at "
                    f"{r.pixel_size:.3f}, give --pixel-size if you know it")
        return None


def decide_scale(micrograph: Micrograph, given: float | None = None,
                 given_source: ScaleSource = ScaleSource.GIVEN,
                 calibration_source: ScaleSource = ScaleSource.FILE) -> Scale:
    """The file's calibration (reported as `calibration_source`), else `given` (as
    `given_source`), else the graphene lattice (grapheneseg.lattice.read_lattice; a reading
    ambiguous by sqrt 3 is used and marked), else unknown. Pure: nothing is warned."""
    if micrograph.pixel_size:
        return Scale(micrograph.pixel_size, calibration_source)
    if given:
        return Scale(float(given), given_source)
    if min(micrograph.image.shape) < MIN_SIDE:
        return Scale(None, ScaleSource.UNKNOWN)
    reading = read_lattice(micrograph.image)
    if reading.pixel_size is None:
        return Scale(None, ScaleSource.UNKNOWN, reading)
    return Scale(reading.pixel_size, ScaleSource.AMBIGUOUS if reading.ambiguous else ScaleSource.LATTICE, reading)
