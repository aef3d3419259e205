"""Out-of-distribution flags: is a micrograph like what the model was trained on?

U-Nets trained at one magnification or dose do not transfer to another, so each micrograph is
measured as the network sees it (after any resampling to its scale, evaluate.apply.predictor.Predictor.plan):

- `lattice`: a graphene lattice is found (grapheneseg.lattice.read_pixel_size); without one the
  scale is unknown and the image may not be graphene at all;
- `noise`: the white-noise level relative to the mean intensity, from the median power of the
  spectrum's corners (beyond 0.5 1/px: above the {100}, {110} and {200} rings at 0.28-0.50 A/px;
  the median ignores the few outer spots), i.e. ~1/sqrt(dose per pixel) for shot noise. It is
  measured on the file's own grid, where the noise is white, and carried to the network's grid by
  the resampling factor (averaging n x n pixels divides white noise by n; resampling itself
  would empty or blur the spectrum's corners and read as no noise);
- `contrast`: the standard deviation of the flat-fielded image (mean 1): the intensity
  statistic that preprocessing's standardisation hides from the network.

A measure outside its reference range [lo, hi] is flagged, and the segmentation carries a notice
naming the file, the measure and the range (`evaluate.api` issues it as an `OODWarning`). The reference (`packaged_reference()`) covers what this project's
models are trained on: the 105 public labelled micrographs (real-only and fine-tuned models) and
the default simulation
(`simulate generate --n 5000`, the default model's and the pretraining data), their joint min-max
widened by `MARGIN` on a log scale. The measured summaries live in the packaged file
`REFERENCE_FILE` (grapheneseg/models/ood_reference.json), written by `python
benchmarks/bench_uncertainty.py --reference --real DIR --sim data/sim/sim_5000_seed0.h5 --write
grapheneseg/models/ood_reference.json`, never copied by hand (tests/evaluate/apply/test_ood_reference.py ties the
file to the command on the 105). The two differ: the default simulations' medians are about 4x
quieter and 3-4x lower in contrast than the real images' (the file holds both summaries), so
ranges from one alone would flag most of the other. Ranges per model, carried in its checkpoint,
would be tighter: not done yet.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grapheneseg.lattice import read_pixel_size
from grapheneseg.preprocessing import flat_field
from grapheneseg.spectrum import frequencies, power_spectrum
from train.models import registry

MARGIN = 1.5  # reference ranges: [min / MARGIN, max * MARGIN] of the training images' measures
MEASURES = ("noise", "contrast")
REFERENCE_FILE = registry.ood_reference()  # packaged with the models (train.models.registry)


def summarise(values: Sequence[dict[str, float]]) -> dict[str, Any]:
    """{"n", "no_lattice", and per measure [min, median, max]} of the `measures` of a set of images."""
    return {"n": len(values), "no_lattice": int(sum(not v["lattice"] for v in values)),
            **{m: [float(np.min([v[m] for v in values])), float(np.median([v[m] for v in values])),
                   float(np.max([v[m] for v in values]))] for m in MEASURES}}


def reference_from(sources: dict[str, dict[str, Any]], margin: float = MARGIN) -> dict[str, tuple[float, float]]:
    """{measure: (lo, hi)}: the joint min-max of the `summarise`d `sources`, widened by `margin`."""
    return {m: (min(s[m][0] for s in sources.values()) / margin, max(s[m][2] for s in sources.values()) * margin)
            for m in MEASURES}


def write_reference(path: Path, sources: dict[str, dict[str, Any]], command: str, margin: float = MARGIN) -> Path:
    """The reference file: each source's summary (with its description) and the ranges it gives."""
    ranges = reference_from(sources, margin)
    path.write_text(json.dumps({"command": command, "margin": margin, "sources": sources,
                                "ranges": {m: list(r) for m, r in ranges.items()}}, indent=1) + "\n")
    return path


@functools.cache
def packaged_reference(path: Path = REFERENCE_FILE) -> dict[str, tuple[float, float]]:
    """{measure: (lo, hi)} of a reference file (default: the packaged one), recomputed from its
    summaries, so the ranges can never disagree with the measurements they come from."""
    record = json.loads(Path(path).read_text())
    return reference_from(record["sources"], float(record["margin"]))


def noise_level(image: np.ndarray) -> float:
    """Relative white-noise std of the flat-fielded `image` from the median power of the
    spectrum's corners (|q| > 0.5 1/px), Hann-windowed and normalised so that white noise of
    std s gives s (the median of exponentially distributed power is ln 2 x its mean)."""
    flat = flat_field(image)
    flat = flat / np.float32(flat.mean()) - np.float32(1.0)
    power = power_spectrum(flat, normalise=True)
    q = np.hypot(*frequencies(flat.shape))
    return float(np.sqrt(np.median(power[q > 0.5]) / np.log(2)))


def measures(image: np.ndarray, zoom: float = 1.0, lattice: bool | None = None) -> dict[str, float]:
    """{lattice: 1.0 or 0.0, noise, contrast} of a raw micrograph on its own grid; `zoom` = network
    grid size / file grid size (1 when not resampled) carries the noise level to the network's grid;
    `lattice` True when the caller already read the lattice (saves a second read)."""
    flat = flat_field(image)
    found = lattice if lattice is not None else read_pixel_size(image) is not None
    return {"lattice": float(found), "noise": noise_level(image) * zoom,
            "contrast": float(flat.std() / max(float(flat.mean()), 1e-12))}


def reference_ranges(images: Iterable[np.ndarray], margin: float = MARGIN) -> dict[str, tuple[float, float]]:
    """{measure: (lo, hi)} of training `images`: their range widened by `margin` on a log scale."""
    return reference_from({"images": summarise([measures(im) for im in images])}, margin)


def out_of_range(values: dict[str, float], reference: dict[str, tuple[float, float]]) -> list[str]:
    """Descriptions of the measures outside `reference` (and `no lattice`), empty when none."""
    found = [] if values["lattice"] else ["no lattice"]
    for name, (lo, hi) in reference.items():
        if not lo <= values[name] <= hi:
            found.append(f"{name} {values[name]:.3g} outside {lo:.3g}-{hi:.3g}")
    return found


def check(image: np.ndarray, reference: dict[str, tuple[float, float]] | None = None,
          zoom: float = 1.0, lattice: bool | None = None) -> list[str]:
    """The OOD flags of one raw micrograph (`zoom`, `lattice`: see `measures`), empty when none;
    against the packaged reference unless `reference` is given."""
    return out_of_range(measures(image, zoom, lattice), packaged_reference() if reference is None else reference)


def message(name: str, flags: Sequence[str]) -> str:
    """What a user is told about a micrograph `name` with OOD `flags`."""
    return f"{name}: out of the training distribution ({'; '.join(flags)}); the segmentation may be wrong"
