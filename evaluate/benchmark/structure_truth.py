"""Structure maps (`evaluate structure`, evaluate.apply.structure) scored against the simulator's
structure truth (simulate.labels.StructureTruth, stored in schema-3 HDF5 files and read by
simulate.dataset.structure_truths): every figure computed from the truth, none estimated.

Per image, counts that pool over images (`score_image`, then `summarise`):
- per class: the pixels of the predicted and the true class maps in both (intersection) and in
  either (union): IoU = intersection / union, pooled;
- boundaries within `TOLERANCE_A` (3 A): precision = the predicted boundary-line pixels (the 1-px
  lines of evaluate.analysis.orientation.grains_of) whose distance to the nearest true boundary
  segment (the exact bisector) is at most the tolerance; recall = the true boundary-line pixels
  (the same 1-px rule on the true grain map) outside the true contamination and vacuum (nothing
  can be seen there) within the tolerance of a predicted line pixel;
- grain count: the number of predicted grains against the true number (every piece of a grain in
  the field of view, however small or hidden) and against the `visible` true grains: those with at
  least `min_visible_px` pixels of lattice (true class lattice or boundary);
- the boundary recall split by the true boundary's misorientation (`MISORIENTATION_BINS`), and the
  grain count against the visible grains with those across boundaries under 3 degrees counted as
  one: below about 3 degrees a boundary's dislocations lie about a field of view apart;
- orientation error per grain: predicted and true grains matched one to one by overlap (largest
  overlaps first), the misorientation (degrees 0-30, hexagonal: mod 60, the smaller way round)
  between each matched pair; the median over the pooled matched grains.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage

from evaluate.analysis.orientation import misorientation
from grapheneseg.classes import CLASS_NAMES, CONTAMINATION, VACUUM

TOLERANCE_A = 3.0  # boundary precision / recall tolerance
MISORIENTATION_BINS = (0.0, 3.0, 5.0, 10.0, 30.0)  # degrees: the boundary recall is also split by the true
# boundary's misorientation (under 3 degrees the dislocations lie about a field of view apart)


def segment_distance(shape: tuple[int, int], segments: np.ndarray) -> np.ndarray:
    """Distance (px) from every pixel centre of a `shape` grid to the nearest of `segments`
    (B, 4) = (r0, c0, r1, c1) px; inf everywhere without segments."""
    out = np.full(shape, np.inf)
    r, c = np.mgrid[:shape[0], :shape[1]].astype(float)
    for r0, c0, r1, c1 in np.asarray(segments, float).reshape(-1, 4):
        dr, dc = r1 - r0, c1 - c0
        t = np.clip(((r - r0) * dr + (c - c0) * dc) / max(dr * dr + dc * dc, 1e-12), 0.0, 1.0)
        out = np.minimum(out, np.hypot(r - r0 - t * dr, c - c0 - t * dc))
    return out


def near_lines(lines: np.ndarray, pixel_size: float, tolerance: float = TOLERANCE_A) -> np.ndarray:
    """Pixels within `tolerance` A of any pixel of the boolean map `lines` (none without lines)."""
    lines = np.asarray(lines, bool)
    if not lines.any():
        return np.zeros(lines.shape, bool)
    return scipy.ndimage.distance_transform_edt(~lines) * pixel_size <= tolerance


def boundary_counts(pred_lines: np.ndarray, true_lines: np.ndarray, segments: np.ndarray, pixel_size: float,
                    seen: np.ndarray | None = None, tolerance: float = TOLERANCE_A) -> dict[str, int]:
    """{pred, pred_near, true, true_near} (module doc): predicted line pixels and those within
    `tolerance` A of a true segment; true line pixels (where `seen`) and those within `tolerance` A
    of a predicted line pixel."""
    pred_lines, true_lines = np.asarray(pred_lines, bool), np.asarray(true_lines, bool)
    if seen is not None:
        true_lines = true_lines & np.asarray(seen, bool)
    near_true = segment_distance(pred_lines.shape, segments) * pixel_size <= tolerance if len(segments) else \
        np.zeros(pred_lines.shape, bool)
    near_pred = near_lines(pred_lines, pixel_size, tolerance)
    return {"pred": int(pred_lines.sum()), "pred_near": int((pred_lines & near_true).sum()),
            "true": int(true_lines.sum()), "true_near": int((true_lines & near_pred).sum())}


def class_counts(pred: np.ndarray, truth: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> tuple[np.ndarray, np.ndarray]:
    """(intersection, union) pixel counts per class of two class maps."""
    inter = np.array([np.sum((pred == k) & (truth == k)) for k in range(n_classes)])
    union = np.array([np.sum((pred == k) | (truth == k)) for k in range(n_classes)])
    return inter, union


def match_grains(pred: np.ndarray, truth: np.ndarray) -> list[tuple[int, int, int]]:
    """(true grain, predicted grain, overlap px) pairs, one to one, largest overlaps first (0 is no grain)."""
    both = (pred > 0) & (truth > 0)
    if not both.any():
        return []
    pairs, overlap = np.unique(np.stack([truth[both], pred[both]]).astype(np.int64), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], pairs[0], -overlap))
    used_t, used_p, out = set(), set(), []
    for k in order:
        t, p = int(pairs[0, k]), int(pairs[1, k])
        if t not in used_t and p not in used_p:
            used_t.add(t)
            used_p.add(p)
            out.append((t, p, int(overlap[k])))
    return sorted(out)


def orientation_errors(pred: np.ndarray, pred_orientation: Mapping[int, float], truth: np.ndarray,
                       true_orientation: Sequence[float]) -> np.ndarray:
    """Misorientation (degrees 0-30) of every matched grain pair (`match_grains`): predicted
    orientations by grain id, true ones with grain g at index g - 1."""
    return np.array([float(misorientation(pred_orientation[p], true_orientation[t - 1]))
                     for t, p, _ in match_grains(pred, truth)], float)


def line_misorientation(truth) -> np.ndarray:
    """Per pixel of the truth's 1-px boundary lines (StructureTruth.boundary_lines: a pixel whose
    lower or right neighbour is another grain), the misorientation (degrees) between its grain and
    that neighbour's (the lower one where both differ); NaN off the lines."""
    g = np.asarray(truth.grains).astype(np.int64)
    out = np.full(g.shape, np.nan)
    for a, b, sl in ((g[:, :-1], g[:, 1:], (slice(None), slice(0, -1))), (g[:-1], g[1:], (slice(0, -1), slice(None)))):
        meet = (a > 0) & (b > 0) & (a != b)
        view = out[sl]
        view[meet] = misorientation(truth.orientation[a[meet] - 1], truth.orientation[b[meet] - 1])
    return out


@dataclass
class ImageScore:
    """The pooled counts of one image (module doc)."""

    inter: np.ndarray
    union: np.ndarray
    boundary: dict[str, int]
    grains_pred: int
    grains_true: int
    grains_visible: int
    orientation_errors: np.ndarray
    extra: dict = field(default_factory=dict)


def visible_grains(truth_grains: np.ndarray, true_classes: np.ndarray, min_visible_px: int,
                   merged: np.ndarray | None = None) -> int:
    """True grains with at least `min_visible_px` pixels outside the contamination and vacuum;
    with `merged` (a group id per grain id, index 0 unused), grains of one group count as one."""
    seen = truth_grains[~np.isin(true_classes, (CONTAMINATION, VACUUM))]
    seen = seen[seen > 0].astype(np.int64)
    if merged is not None:
        seen = np.asarray(merged)[seen]
    counts = np.bincount(seen)
    return int(np.sum(counts[1:] >= max(min_visible_px, 1)))


def low_angle_groups(truth, below_deg: float) -> np.ndarray:
    """A group id (1..) per true grain id (index 0 unused): grains joined across boundaries
    misoriented by less than `below_deg` are one group (an orientation map cannot tell them apart)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = truth.n_grains + 1
    pairs = np.asarray(truth.boundary_grains, np.int64).reshape(-1, 2)[np.asarray(truth.misorientation) < below_deg]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]  # id 0 (no grain) is alone, so it keeps group 0


def score_image(pred_classes: np.ndarray, pred_lines: np.ndarray, pred_grains: np.ndarray,
                pred_orientation: Mapping[int, float], truth, true_classes: np.ndarray,
                min_visible_px: int = 1, tolerance: float = TOLERANCE_A) -> ImageScore:
    """Counts of one structure map against its truth (`truth`: simulate.labels.StructureTruth;
    `true_classes`: the file's `classes`). `pred_grains` 0 where no grain."""
    inter, union = class_counts(pred_classes, true_classes)
    seen = ~np.isin(true_classes, (CONTAMINATION, VACUUM))
    boundary = boundary_counts(pred_lines, truth.boundary_lines(), truth.boundaries, truth.pixel_size, seen, tolerance)
    errors = orientation_errors(pred_grains, pred_orientation, truth.grains, truth.orientation)
    n_pred = len(np.unique(pred_grains[pred_grains > 0]))
    # the recall split by the true boundary's misorientation: [true line px, those near a found line] per bin
    mis = line_misorientation(truth)
    lines = ~np.isnan(mis) & seen
    near = near_lines(pred_lines, truth.pixel_size, tolerance)
    k = np.digitize(mis[lines], MISORIENTATION_BINS[1:-1])
    by_mis = np.stack([np.bincount(k, minlength=len(MISORIENTATION_BINS) - 1),
                       np.bincount(k, near[lines], minlength=len(MISORIENTATION_BINS) - 1)]).astype(int)
    resolvable = visible_grains(truth.grains, true_classes, min_visible_px,
                                low_angle_groups(truth, MISORIENTATION_BINS[1]))
    return ImageScore(inter, union, boundary, n_pred, truth.n_grains,
                      visible_grains(truth.grains, true_classes, min_visible_px), errors,
                      {"recall_by_misorientation": by_mis, "grains_visible_above_3deg": resolvable})


def summarise(scores: Sequence[ImageScore]) -> dict:
    """Pooled figures of a set of image scores (module doc)."""
    if not scores:
        return {"n": 0}
    inter = np.sum([s.inter for s in scores], axis=0)
    union = np.sum([s.union for s in scores], axis=0)
    b = {k: sum(s.boundary[k] for s in scores) for k in scores[0].boundary}
    errors = np.concatenate([s.orientation_errors for s in scores])
    pred = np.array([s.grains_pred for s in scores])
    return {"n": len(scores),
            "iou": {name: float(inter[k] / union[k]) if union[k] else float("nan") for k, name in enumerate(CLASS_NAMES)},
            "boundary_precision": b["pred_near"] / b["pred"] if b["pred"] else float("nan"),
            "boundary_recall": b["true_near"] / b["true"] if b["true"] else float("nan"),
            "grain_count_exact": float(np.mean(pred == np.array([s.grains_true for s in scores]))),
            "grain_count_exact_visible": float(np.mean(pred == np.array([s.grains_visible for s in scores]))),
            "grain_count_exact_visible_above_3deg": float(np.mean(
                pred == np.array([s.extra["grains_visible_above_3deg"] for s in scores]))),
            "grain_count_within_one": float(np.mean(np.abs(pred - np.array([s.grains_true for s in scores])) <= 1)),
            "orientation_error_median": float(np.median(errors)) if len(errors) else float("nan"),
            "orientation_error_p90": float(np.percentile(errors, 90)) if len(errors) else float("nan"),
            "grains_matched": int(len(errors)), "grains_true": int(sum(s.grains_true for s in scores)),
            "boundary_recall_by_misorientation": _recall_by_misorientation(scores)}


def _recall_by_misorientation(scores: Sequence[ImageScore]) -> dict:
    """{"lo-hi deg": {share of the true line, recall}} pooled, and the same for 3 degrees and above."""
    counts = np.sum([s.extra["recall_by_misorientation"] for s in scores], axis=0)
    total = max(int(counts[0].sum()), 1)
    out = {f"{lo:g}-{hi:g}": {"share": counts[0, k] / total,
                              "recall": counts[1, k] / counts[0, k] if counts[0, k] else float("nan")}
           for k, (lo, hi) in enumerate(zip(MISORIENTATION_BINS[:-1], MISORIENTATION_BINS[1:]))}
    above = counts[:, 1:].sum(1)
    out["3 and above"] = {"share": above[0] / total, "recall": above[1] / above[0] if above[0] else float("nan")}
    return {k: {kk: round(float(vv), 4) for kk, vv in v.items()} for k, v in out.items()}
