"""Which micrographs to label next: the most uncertain ones, spread over the kinds of image.

Candidates are the micrographs of the input with no `NAME_LABEL.png` beside them. Each is
segmented with its uncertainty (evaluate.uncertainty: members x 8 symmetries). The choice is
greedy: at each step take the candidate with the highest

    score = uncertainty x (1 - max similarity to those already chosen),

the uncertainty being the band std (evaluate.uncertainty.image_uncertainty), the score the active
labelling study measured (evaluate.active), not the Jaccard disagreement of `predict`'s
uncertainty column, which ranks the error better but was not tried as a choice of what to label;
and the similarity of two images is exp(-d^2 / median d^2), d the Euclidean distance of their
standardised feature vectors (log radial power spectrum of the preprocessed image in 11 of 12
bands up to Nyquist, the innermost left out,
and the 8-bin histogram of the contamination probability). So ten frames of one series, which
share spectrum and coverage, are not all chosen: after the first the rest score near zero.

Every COVERAGE_EVERY-th pick (5th, 10th, ...) is made by predicted coverage instead: the
candidate whose coverage quantile (its rank among the candidates' contamination fractions) lies
farthest from those already chosen. The uncertain images are mostly the contaminated ones: a
clean image has few hesitant pixels and a band std near 0, so the greedy rule hardly ever picks
one (in the active-labelling study it never did, and the models fine-tuned on its picks marked
contamination on clean test images, README). The picks stay nested (the first 10 of 20 are the
choice for 10).
"""
from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.stats

from grapheneseg.config import ConfigError
from grapheneseg.micrographs import LABEL_SUFFIX
from grapheneseg.preprocessing import preprocess
from grapheneseg.spectrum import band_means, frequencies

from .segment import Segmentation, input_files
from .sorting import thumbnail_sheet
from .uncertainty import image_uncertainty, uncertainty_rgb

SPECTRUM_BANDS = 12
HISTOGRAM_BINS = 8
COVERAGE_EVERY = 5  # every 5th pick by predicted coverage (coverage_pick), so clean images are not all passed over


@dataclass
class Suggestion:
    """One chosen micrograph: its rank, greedy score and the reason in words."""

    rank: int
    segmentation: Segmentation
    score: float
    why: str


def unlabelled(inputs: Sequence[Path | str]) -> list[Path]:
    """The micrographs named by `inputs` that have no NAME_LABEL.png (any case of suffix) beside them."""
    def labelled(path: Path) -> bool:
        return any(p.exists() for p in (path.with_name(f"{path.stem}{LABEL_SUFFIX}.png"),
                                        path.with_name(f"{path.stem}{LABEL_SUFFIX}{path.suffix}")))
    return [p for p in input_files(inputs) if not labelled(p)]


def features(seg: Segmentation) -> np.ndarray:
    """Log mean power in radial bands 1 .. SPECTRUM_BANDS - 1 of SPECTRUM_BANDS up to Nyquist (band 0,
    the flat-field residue, and the corners beyond Nyquist left out) of the preprocessed image and
    the HISTOGRAM_BINS-bin histogram of its contamination probability."""
    image = preprocess(seg.micrograph.image)
    power = np.abs(scipy.fft.fft2(image.astype(np.float64), workers=-1)) ** 2  # unwindowed: the whole field counts
    q = np.hypot(*frequencies(image.shape, half=False))
    bands = np.minimum((q / 0.5 * SPECTRUM_BANDS).astype(int), SPECTRUM_BANDS)
    spectrum = np.log10(band_means(power, bands, SPECTRUM_BANDS + 1)[1:SPECTRUM_BANDS] + 1e-12)
    hist = np.histogram(seg.probability, bins=HISTOGRAM_BINS, range=(0, 1))[0] / seg.probability.size
    return np.concatenate([spectrum, hist])


def similarity(feats: np.ndarray) -> np.ndarray:
    """(N, N) exp(-d^2 / median d^2) of standardised feature rows (1 on the diagonal)."""
    z = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-9)
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    off = d2[~np.eye(len(z), dtype=bool)]
    scale = float(np.median(off)) if off.size and np.median(off) > 0 else 1.0
    return np.exp(-d2 / scale)


def coverage_pick(quantile: np.ndarray, taken: Sequence[int], score: np.ndarray) -> int:
    """The untaken candidate whose predicted-coverage quantile lies farthest from every taken
    one's (ties: the highest greedy `score`)."""
    gap = np.abs(quantile[:, None] - quantile[list(taken)][None]).min(axis=1)
    gap[list(taken)] = -np.inf
    return int(np.argmax(np.where(gap == gap.max(), score, -np.inf)))


def check_coverage_every(value: int, name: str = "coverage_every") -> None:
    """ConfigError (a ValueError) naming `name` unless `value` is 0 (no coverage picks) or >= 2."""
    if value == 1 or value < 0:
        raise ConfigError(f"{name} must be 0 (never) or at least 2, not {value}")


def choose(results: Sequence[Segmentation], n: int, coverage_every: int = COVERAGE_EVERY) -> list[Suggestion]:
    """Greedy uncertainty x diversity choice of up to `n` distinct micrographs, every
    `coverage_every`-th by `coverage_pick` (0: none; see module doc)."""
    check_coverage_every(coverage_every)
    if not results:
        return []
    u = np.array([image_uncertainty(s.uncertainty, s.probability) for s in results])
    sim = similarity(np.stack([features(s) for s in results]))
    coverage = np.array([s.contamination_fraction for s in results])
    quantile = (scipy.stats.rankdata(coverage) - 1) / max(len(results) - 1, 1)
    by_u = {i: r for r, i in enumerate(np.argsort(-u, kind="stable"), 1)}
    chosen: list[Suggestion] = []
    taken: list[int] = []
    nearest = np.zeros(len(results))
    nearest_of = [""] * len(results)
    for rank in range(1, min(n, len(results)) + 1):
        score = u * (1 - nearest)
        score[taken] = -np.inf
        by_coverage = bool(coverage_every) and rank % coverage_every == 0
        i = coverage_pick(quantile, taken, score) if by_coverage else int(np.argmax(score))
        taken.append(i)
        seg = results[i]
        why = ((f"coverage pick: predicted coverage {coverage[i]:.4f} (quantile {quantile[i]:.2f}), the farthest "
                "from those chosen; " if by_coverage else "")
               + f"band std {u[i]:.4f} (#{by_u[i]} of {len(results)})"
               + (f"; most like {nearest_of[i]} (similarity {nearest[i]:.2f})" if chosen else "")
               + (f"; out of distribution: {', '.join(seg.ood)}" if seg.ood else ""))
        chosen.append(Suggestion(rank, seg, float(score[i]), why))
        closer = sim[i] > nearest
        nearest = np.where(closer, sim[i], nearest)
        nearest_of = [seg.micrograph.path.name if c else o for c, o in zip(closer, nearest_of)]
    return chosen


def write_suggestions(chosen: Sequence[Suggestion], path: Path) -> Path:
    """suggestions.csv: rank, file, score, band_std (the uncertainty ranked by), disagreement (the
    Jaccard disagreement, as `predict`'s uncertainty column), contamination_fraction, ood, why.
    A choice is made over one run's images (each pick depends on the ones before it), so it is not
    merged with another run's: when `path` exists, this run's goes beside it as
    suggestions-<UTC time>-<pid>.csv (returned), and the earlier one is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path = path.with_name(f"{path.stem}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}{path.suffix}")
    with path.open("x", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "file", "score", "band_std", "disagreement", "contamination_fraction", "ood", "why"])
        for c in chosen:
            seg = c.segmentation
            writer.writerow([c.rank, str(seg.micrograph.path), f"{c.score:.5f}",
                             f"{image_uncertainty(seg.uncertainty, seg.probability):.5f}", f"{seg.disagreement:.5f}",
                             f"{seg.contamination_fraction:.5f}",
                             ";".join(seg.ood), c.why])
    return path


def suggestion_sheet(chosen: Sequence[Suggestion], path: Path, columns: int = 5, thumb_inches: float = 2.0) -> Path:
    """PNG grid in rank order: each micrograph with its uncertainty overlaid (magma, 0-0.25+)."""
    tiles = [(uncertainty_rgb(c.segmentation.micrograph.image, c.segmentation.uncertainty),
              f"#{c.rank} {c.segmentation.micrograph.path.stem[-18:]}\nscore {c.score:.3f}") for c in chosen]
    return thumbnail_sheet(tiles, path, "label these next (colour = std of P(contamination), members x symmetries)",
                           columns, thumb_inches, title_inches=0.6)
