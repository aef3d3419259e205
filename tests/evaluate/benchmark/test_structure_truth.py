"""Scores of structure maps against the simulator's truth (evaluate.benchmark.structure_truth):
each figure fails on its planted error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from evaluate.benchmark.structure_truth import (boundary_counts, class_counts, match_grains, orientation_errors,
                                                score_image, segment_distance, summarise, visible_grains)
from grapheneseg.classes import BOUNDARY, CONTAMINATION, LATTICE, VACUUM
from simulate.labels import StructureTruth, boundary_lines, grain_truth
from simulate.structures import Structure

SIZE = 64


def two_grains(pixel: float = 1.0, angles=(10.0, 35.0)) -> StructureTruth:
    """Two grains of a 64 px field at `pixel` A/px: rows 0-32 and 33-63 (the bisector on row 32),
    cell-frame angles `angles` (stored as their negatives mod 60)."""
    extent = 80.0 * pixel
    structure = Structure(Atoms(), extent, np.zeros(0, bool), np.array([[20.0, 40.0], [60.0, 40.0]]) * pixel,
                          np.array(angles, float))
    return grain_truth(structure, SIZE, 8)


def true_classes(truth: StructureTruth, half_width_px: float = 3.0) -> np.ndarray:
    rows = np.arange(SIZE)[:, None] * np.ones(SIZE)
    return np.where(np.abs(rows - 32) <= half_width_px, BOUNDARY, LATTICE).astype(np.uint8)


def test_the_planted_truth() -> None:
    truth = two_grains()
    assert truth.n_grains == 2 and np.allclose(truth.orientation, [50.0, 25.0])
    assert (truth.grains[:33] == 1).all() and (truth.grains[33:] == 2).all()
    assert truth.boundary_grains.tolist() == [[1, 2]] and np.allclose(truth.misorientation, [25.0])
    assert np.allclose(truth.boundaries, [[32.0, 0.0, 32.0, 63.0]])
    assert np.array_equal(np.nonzero(truth.boundary_lines().any(1))[0], [32])
    assert np.allclose(segment_distance((SIZE, SIZE), truth.boundaries)[:, 10], np.abs(np.arange(SIZE) - 32))


def test_orientation_off_by_30_degrees_shows_30() -> None:
    truth = two_grains()
    exact = {1: 50.0, 2: 25.0}
    assert np.allclose(orientation_errors(truth.grains, exact, truth.grains, truth.orientation), [0.0, 0.0])
    rotated = {1: 50.0, 2: 25.0 + 30.0}  # the second grain turned by 30 degrees: the largest hexagonal error
    assert np.allclose(orientation_errors(truth.grains, rotated, truth.grains, truth.orientation), [0.0, 30.0])
    wrapped = {1: 50.0 + 60.0 - 0.5, 2: 25.0 + 0.4}  # mod 60, the smaller way round
    assert np.allclose(orientation_errors(truth.grains, wrapped, truth.grains, truth.orientation), [0.5, 0.4])
    # predicted ids in another order, and a third predicted speck: matched by overlap
    pred = np.where(truth.grains == 1, 7, 3)
    pred[:2, :2] = 9
    errors = orientation_errors(pred, {7: 50.0, 3: 25.0 + 30.0, 9: 0.0}, truth.grains, truth.orientation)
    assert np.allclose(errors, [0.0, 30.0])
    assert match_grains(pred, truth.grains) == [(1, 7, 33 * 64 - 4), (2, 3, 31 * 64)]


def test_boundary_shifted_by_5_px_loses_precision_and_recall_within_3_A() -> None:
    truth = two_grains(pixel=1.0)
    lines = truth.boundary_lines()
    exact = boundary_counts(lines, lines, truth.boundaries, 1.0)
    assert exact == {"pred": 64, "pred_near": 64, "true": 64, "true_near": 64}
    near = boundary_counts(np.roll(lines, 2, axis=0), lines, truth.boundaries, 1.0)  # 2 A off: within 3 A
    assert near["pred_near"] == near["pred"] == 64 and near["true_near"] == near["true"] == 64
    far = boundary_counts(np.roll(lines, 5, axis=0), lines, truth.boundaries, 1.0)  # 5 A off
    assert far["pred_near"] == 0 and far["true_near"] == 0
    # the same 5 px at 0.5 A/px is 2.5 A: within the tolerance again
    fine = two_grains(pixel=0.5)
    ok = boundary_counts(np.roll(fine.boundary_lines(), 5, axis=0), fine.boundary_lines(), fine.boundaries, 0.5)
    assert ok["pred_near"] == 64 and ok["true_near"] == 64
    # true lines under contamination or vacuum are not asked for; no prediction: recall 0
    seen = np.ones((SIZE, SIZE), bool)
    seen[:, :16] = False
    none = boundary_counts(np.zeros_like(lines), lines, truth.boundaries, 1.0, seen)
    assert none == {"pred": 0, "pred_near": 0, "true": 48, "true_near": 0}


def test_pooled_summary_of_perfect_and_planted_errors() -> None:
    truth = two_grains(pixel=1.0)
    cls = true_classes(truth)
    perfect = score_image(cls, truth.boundary_lines(), truth.grains, {1: 50.0, 2: 25.0}, truth, cls)
    shifted_grains = np.where(np.arange(SIZE)[:, None] * np.ones(SIZE, int) < 38, 1, 2)
    shifted = score_image(np.roll(cls, 5, axis=0), boundary_lines(shifted_grains), shifted_grains,
                          {1: 50.0, 2: 55.0}, truth, cls)
    one = summarise([perfect])
    assert one["iou"]["lattice"] == 1.0 and one["iou"]["grain_boundary"] == 1.0 and np.isnan(one["iou"]["vacuum"])
    assert one["boundary_precision"] == one["boundary_recall"] == 1.0
    assert one["grain_count_exact"] == 1.0 and one["orientation_error_median"] == 0.0
    bad = summarise([shifted])
    assert bad["boundary_precision"] == 0.0 and bad["boundary_recall"] == 0.0
    assert bad["iou"]["grain_boundary"] == pytest.approx(2 / 12)  # rows 34-35 of 29-40
    assert bad["orientation_error_median"] == pytest.approx(15.0)  # errors 0 and 30
    both = summarise([perfect, shifted])
    assert both["n"] == 2 and both["boundary_precision"] == 0.5 and both["grains_matched"] == 4
    merged = score_image(cls, np.zeros((SIZE, SIZE), bool), np.ones((SIZE, SIZE), int), {1: 50.0}, truth, cls)
    assert summarise([merged])["grain_count_exact"] == 0.0 and merged.grains_pred == 1


def test_class_counts_and_visible_grains() -> None:
    truth = two_grains()
    cls = true_classes(truth)
    pred = cls.copy()
    pred[:10] = VACUUM
    inter, union = class_counts(pred, cls)
    assert inter[LATTICE] == (cls == LATTICE).sum() - 640 and union[VACUUM] == 640 and inter[VACUUM] == 0
    hidden = cls.copy()
    hidden[33:] = CONTAMINATION  # the second grain wholly under contamination: not visible
    assert visible_grains(truth.grains, cls, 100) == 2 and visible_grains(truth.grains, hidden, 100) == 1


@pytest.mark.parametrize("angles, key", [((10.0, 12.0), "0-3"), ((10.0, 35.0), "10-30")])
def test_recall_is_split_by_the_true_misorientation(angles, key) -> None:
    """The recall of a found line lands in its boundary's misorientation bin (2 or 25 degrees);
    a missed line lowers that bin's recall only."""
    truth = two_grains(angles=angles)
    cls = true_classes(truth)
    found = score_image(cls, truth.boundary_lines(), truth.grains, {1: 0.0, 2: 0.0}, truth, cls)
    missed = score_image(cls, np.zeros((SIZE, SIZE), bool), truth.grains, {1: 0.0, 2: 0.0}, truth, cls)
    by_found = summarise([found])["boundary_recall_by_misorientation"]
    by_missed = summarise([found, missed])["boundary_recall_by_misorientation"]
    assert by_found[key] == {"share": 1.0, "recall": 1.0}
    assert by_missed[key] == {"share": 1.0, "recall": 0.5}
    above = by_found["3 and above"]
    if key == "0-3":  # a 2 degree boundary is no part of the line at 3 degrees and above
        assert above["share"] == 0.0 and np.isnan(above["recall"])
    else:
        assert above == {"share": 1.0, "recall": 1.0}
    others = [k for k in by_found if k not in (key, "3 and above")]
    assert all(by_found[k]["share"] == 0.0 for k in others)


def test_grains_across_a_low_angle_boundary_count_as_one_in_the_resolvable_count() -> None:
    """Two grains 2 degrees apart: two visible grains, one resolvable (an orientation map cannot
    tell them apart); 25 degrees apart: two of both. One predicted grain is exact only for the first."""
    for angles, resolvable in (((10.0, 12.0), 1), ((10.0, 35.0), 2)):
        truth = two_grains(angles=angles)
        cls = true_classes(truth)
        one = score_image(cls, np.zeros((SIZE, SIZE), bool), np.ones((SIZE, SIZE), int), {1: 10.0}, truth, cls)
        assert one.grains_visible == 2 and one.extra["grains_visible_above_3deg"] == resolvable
        assert summarise([one])["grain_count_exact_visible_above_3deg"] == float(resolvable == 1)


def test_the_vacuum_oracle_finds_the_best_choice_per_image():
    """benchmarks/bench_structure.py --vacuum-oracle: the pooled IoU of each image's best choice is
    the maximum over every combination of choices (brute force), not a per-image mean."""
    import importlib.util
    import itertools

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_structure.py"
    spec = importlib.util.spec_from_file_location("bench_structure", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(3)
    counts = []
    for _ in range(5):
        union = rng.integers(50, 500, 4)
        counts.append(np.column_stack([(union * rng.uniform(0, 1, 4)).astype(int), union]))
    counts.append(np.array([[0, 0], [0, 40], [0, 90], [0, 200]]))  # an image without vacuum: no call is best
    brute = max(sum(c[k, 0] for c, k in zip(counts, ks)) / sum(c[k, 1] for c, k in zip(counts, ks))
                for ks in itertools.product(range(4), repeat=len(counts)))
    assert bench.best_pooled_iou(counts) == pytest.approx(brute)
    assert bench.best_pooled_iou(counts) > max(sum(c[k, 0] for c in counts) / sum(c[k, 1] for c in counts) for k in range(4))
