"""The structure truth of schema-3 files (issue 31): grain ids, orientations, boundaries and rings
written by `simulate generate`, read back by simulate.dataset.structure_truth, consistent with the
class maps and with the lattice in the image; resume, and older files."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.ndimage

from evaluate.analysis.orientation import misorientation, orientation_map
from grapheneseg.classes import BOUNDARY, CONTAMINATION, VACUUM
from grapheneseg.config import load_config
from simulate import driver, pipeline
from simulate.dataset import (SCHEMA_VERSION, DatasetError, DatasetWriter, open_dataset, require_truth,
                              structure_truth, structure_truths)
from simulate.labels import grain_truth, pixel_centres
from simulate.pipeline import PlainConfig, structure_for
from simulate.structures import _wrap
from tests.conftest import TINY_GRID

POLY = [*TINY_GRID, "variants_per_structure=3", "n=6", "seed=5", "structure.single_grain_probability=0",
        "structure.grains=[3,4]", "structure.holes.probability=1",
        "structure.holes.count=[1,1]", "structure.holes.radius=[2.5,3.5]"]  # small: the warm-up cell (16 px) keeps atoms


def cfg_of(*extra: str):
    return load_config("simulate", [*POLY, *extra])


@pytest.fixture(scope="module")
def poly(tmp_path_factory) -> Path:
    """6 tiny images of 2 polycrystalline structures with holes, uninterrupted, one worker."""
    out = tmp_path_factory.mktemp("truth") / "poly.h5"
    driver.generate(cfg_of(), out, progress=False)
    return out


def same_truth(a, b) -> None:
    for name in ("grains", "orientation", "cell_grain", "area_px", "boundaries", "boundary_grains", "rings", "ring_sizes"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and np.array_equal(x, y), name
    assert a.pixel_size == b.pixel_size


def test_round_trip_equals_the_structure(poly):
    cfg = PlainConfig.of(cfg_of())
    with open_dataset(poly) as f:
        assert int(f.attrs["schema_version"]) == SCHEMA_VERSION == 3
        assert f["grains"].shape == (6, 64, 64) and f["grains"].dtype == np.int16
        truths = structure_truths(f, 0, 6)
        meta = f["meta"][:]
    for i, truth in enumerate(truths):
        structure, pixel, margin = structure_for(cfg, 5, i // 3)
        expected = grain_truth(structure, 64, margin)
        same_truth(truth, expected)
        assert truth.pixel_size == pytest.approx(meta["pixel_size"][i])
        assert truth.n_grains >= 2 and set(np.unique(truth.grains)) <= set(range(truth.n_grains + 1))
        assert np.array_equal(np.bincount(truth.grains.ravel(), minlength=truth.n_grains + 1)[1:], truth.area_px)
        # orientation: the negative of the drawn cell-frame angle, mod 60 (evaluate's convention)
        assert np.allclose(truth.orientation, (-structure.angles[truth.cell_grain]) % 60)
        assert ((truth.orientation >= 0) & (truth.orientation < 60)).all()
        assert len(truth.boundary_grains) >= 1 and (truth.boundary_grains[:, 0] < truth.boundary_grains[:, 1]).all()
        assert set(truth.ring_sizes.tolist()) <= {4, 5, 7, 8} and {5, 7} <= set(truth.ring_sizes.tolist())
    same_truth(structure_truth(poly, 4), truths[4])  # by path, one image


def test_boundary_distance_is_to_the_nearest_edge_of_the_cell() -> None:
    """Near a triple junction the second-nearest seed's bisector is not always the nearest edge:
    at (19, 0), seed (19, 20.5) is second nearest (bisector 1.06 A away) but the edge shared with
    the far seed (40, 0) is 1.0 A away, and the boundary class is drawn from the latter."""
    from simulate.structures import boundary_distance

    seeds = np.array([[0.0, 0.0], [19.0, 20.5], [40.0, 0.0]])
    assert boundary_distance(np.array([[19.0, 0.0]]), seeds, 500.0)[0] == pytest.approx(1.0)


def test_grains_agree_with_the_class_map(poly):
    cfg = PlainConfig.of(cfg_of())
    with open_dataset(poly) as f:
        classes, truths = f["classes"][:], structure_truths(f, 0, 6)
    saw_vacuum = saw_boundary = False
    for i in (0, 3):
        truth, cls = truths[i], classes[i]
        structure, pixel, margin = structure_for(cfg, 5, i // 3)
        # vacuum is no grain; a pixel of no grain is a hole (vacuum, or contamination over the hole)
        assert (truth.grains[cls == VACUUM] == 0).all()
        assert np.isin(cls[truth.grains == 0], (VACUUM, CONTAMINATION)).all()
        saw_vacuum |= (cls == VACUUM).any()
        # every boundary-class pixel lies between two different grains (within the label's width),
        # where the other side can be seen (not beyond the field's edge, not inside a hole)
        reach = int(np.ceil(cfg.label.boundary_width / pixel)) + 2
        disc = np.hypot(*np.mgrid[-reach:reach + 1, -reach:reach + 1]) <= reach
        top = scipy.ndimage.maximum_filter(truth.grains, footprint=disc, mode="constant", cval=0)
        low = scipy.ndimage.minimum_filter(truth.grains, footprint=disc, mode="constant", cval=0)
        high = scipy.ndimage.minimum_filter(np.where(truth.grains > 0, truth.grains, 32767), footprint=disc)
        seen = (cls == BOUNDARY) & (low > 0)
        assert seen.sum() > 0.3 * (cls == BOUNDARY).sum()
        assert (top[seen] != high[seen]).all()
        inner = truth.grains > 0  # and lattice far from every boundary line is not boundary class
        far = scipy.ndimage.distance_transform_edt(~truth.boundary_lines()) * pixel > cfg.label.boundary_width + 1.5 * pixel
        assert not (far & inner & (low > 0) & (cls == BOUNDARY)).any()
        saw_boundary |= seen.any()
        # the 1-px lines sit on the exact bisector (within a pixel's diagonal), the segments too
        lines = truth.boundary_lines()
        xy = pixel_centres(64, margin, pixel)
        assert lines.any() and (structure.boundary_distance(xy)[lines] <= 1.5 * pixel).all()
        for (r0, c0, r1, c1), pair in zip(truth.boundaries, truth.boundary_grains):
            ends = (np.array([[r0, c0], [r1, c1]]) + margin) * pixel
            middle = ends.mean(0)  # on the boundary, and the segment on the bisector of its two seeds
            assert structure.boundary_distance(middle[None])[0] < 1e-6
            a, b = (middle - _wrap(middle - structure.seeds[truth.cell_grain[g - 1]], structure.extent) for g in pair)
            assert np.allclose(np.hypot(*(ends - a).T), np.hypot(*(ends - b).T))
    assert saw_vacuum and saw_boundary


class Planted:
    """A structure generator whose two grains get planted seeds and cell-frame angles."""

    def __init__(self, rng: np.random.Generator, angles: tuple[float, float]):
        self.rng, self.angles = rng, angles

    def __getattr__(self, name):
        return getattr(self.rng, name)

    def uniform(self, low=0.0, high=1.0, size=None):
        if (low, high, size) == (0, 60, 2):
            return np.array(self.angles, float)
        if low == 0 and size == (2, 2):  # the seeds: one boundary across the middle rows, one on the seam
            return np.array([[0.25 * high, 0.5 * high], [0.75 * high, 0.5 * high]])
        return self.rng.uniform(low, high, size)


def test_planted_two_grains_orientations_are_stored_and_seen_in_the_image(tmp_path, monkeypatch):
    """Cell-frame angles 12 and 41 degrees: stored as 48 and 19 (mod 60, image frame), and the
    orientation map of the simulated image reads those inside each grain (a convention error,
    e.g. storing 12 and 41, is 24 degrees off)."""
    real = pipeline.structure_rng
    monkeypatch.setattr(pipeline, "structure_rng", lambda seed, s: Planted(real(seed, s), (12.0, 41.0)))
    cfg = load_config("simulate", [*TINY_GRID, "grid.image_px=96", "variants_per_structure=1", "n=1", "seed=2",
                                   "structure.single_grain_probability=0", "structure.grains=[2,2]",
                                   "structure.holes.probability=0", "structure.amorphous.clean_probability=1",
                                   "structure.adatoms.probability=0", "optics.defocus=[-60,-40]",
                                   "optics.dose=[20000,20000]"])
    out = tmp_path / "planted.h5"
    driver.generate(cfg, out, progress=False)
    with open_dataset(out) as f:
        image, pixel = f["images"][0], float(f["meta"]["pixel_size"][0])
    truth = structure_truth(out, 0)
    assert truth.n_grains == 2 and np.allclose(truth.orientation, [48.0, 19.0])
    assert truth.boundary_grains.tolist() == [[1, 2]] and np.allclose(truth.misorientation, [29.0])
    r0, c0, r1, c1 = truth.boundaries[0]
    assert r0 == pytest.approx(r1) and abs(c1 - c0) > 90  # the bisector: one row across the field
    assert (truth.grains[: int(r0) - 1] == 1).all() and (truth.grains[int(r0) + 2:] == 2).all()
    omap = orientation_map(image, pixel)
    for g in (1, 2):
        inside = scipy.ndimage.distance_transform_edt(truth.grains == g) > 1.5 * omap.window_px
        inside[:8], inside[-8:], inside[:, :8], inside[:, -8:] = False, False, False, False
        assert inside.sum() > 100
        seen = (np.degrees(np.angle(omap.psi[inside].mean())) / 6) % 60
        assert misorientation(seen, truth.orientation[g - 1]) < 1.5, (g, seen)


def test_resume_of_a_schema_3_file_and_older_files(poly, tmp_path, monkeypatch):
    out = tmp_path / "resumed.h5"
    real_results = driver._results

    def interrupted(*args):
        for k, result in enumerate(real_results(*args)):
            if k == 1:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(driver, "_results", interrupted)
    with pytest.raises(KeyboardInterrupt):
        driver.generate(cfg_of(), out, progress=False)
    with open_dataset(out) as f:  # the finished structure's truth is there and readable
        assert f["grains"].shape[0] == 3
        assert int(f["grain_table"]["image"].max()) == 2
        same_truth(structure_truth(f, 2), structure_truth(poly, 2))
    monkeypatch.setattr(driver, "_results", real_results)
    driver.generate(cfg_of(), out, resume=True, progress=False)
    for a, b in zip(structure_truths(out, 0, 6), structure_truths(poly, 0, 6)):
        same_truth(a, b)
    assert out.read_bytes() == poly.read_bytes()

    old = tmp_path / "v2.h5"  # a schema-2 file: no truth; still read, not resumed
    shutil.copy(poly, old)
    with h5py.File(old, "r+") as f:
        for name in ("grains", "grain_table", "boundary_table", "ring_table"):
            del f[name]
        f.attrs["schema_version"] = 2
    with open_dataset(old) as f:
        assert f["images"].shape[0] == 6
        with pytest.raises(DatasetError, match=r"v2\.h5: holds no structure truth"):
            require_truth(f, old)
    with pytest.raises(DatasetError, match="holds no structure truth"):
        structure_truth(old, 0)
    with pytest.raises(DatasetError, match=r"cannot resume a schema-version 2 file with this version \(3\)"):
        DatasetWriter(old, 6, 64, {}, resume=True)


def test_truth_must_come_with_every_batch(poly, tmp_path):
    with open_dataset(poly) as f:
        arrays = [f[name][:2] for name in ("images", "masks", "classes", "meta", "atoms")]
        truths = structure_truths(f, 0, 2)
    attrs = {"config": "x", "seed": 0, "n_target": 4, "variants_per_structure": 1}
    writer = DatasetWriter(tmp_path / "mixed.h5", 4, 64, attrs, resume=False)
    writer.append_arrays(*arrays, truths=truths)
    with pytest.raises(DatasetError, match="structure truth missing from images 2-3"):
        writer.append_arrays(*arrays)
    writer.close(complete=False)
    late = DatasetWriter(tmp_path / "late.h5", 4, 64, attrs, resume=False)
    late.append_arrays(*arrays)
    with pytest.raises(DatasetError, match="structure truth arrives after 2 images"):
        late.append_arrays(*arrays, truths=truths)
    late.close(complete=False)
