"""Structure maps: four classes, grains, rings and their tables (evaluate.apply.structure; issue 23)."""
from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from PIL import Image

from evaluate.apply.atoms import bond_graph
from evaluate.apply.scale import Scale, ScaleSource
from evaluate.apply.segment import Segmentation
from evaluate.apply.structure import run_structure, structure_of
from evaluate.apply.tiff import read_tiff_scale
from grapheneseg.classes import BOUNDARY, CONTAMINATION, LATTICE, VACUUM
from grapheneseg.formats import Micrograph
from tests.evaluate.analysis.test_orientation import two_grains_and_a_hole
from tests.evaluate.analysis.test_rings import BOND_PX, honeycomb


GIVEN = Scale(0.3, ScaleSource.GIVEN)


def contaminated():
    image, distance, hole = two_grains_and_a_hole()
    mask = np.zeros(image.shape, bool)
    mask[200:, :60] = True  # a contamination patch in the first grain
    return image, distance, hole, mask


def test_four_classes_where_they_are() -> None:
    image, distance, hole, mask = contaminated()
    s = structure_of(image, mask, GIVEN)
    assert (s.classes[mask] == CONTAMINATION).all()
    assert (s.classes[hole & (s.classes != LATTICE)] == VACUUM).all() and (s.classes[hole] == VACUUM).mean() > 0.4
    boundary = s.classes == BOUNDARY
    assert np.abs(distance[boundary]).max() <= 3.0 / 0.3 + 5  # 3 A either side of a line within 5 px
    assert boundary.sum() == pytest.approx(image.shape[0] * 2 * 3.0 / 0.3, rel=0.35)
    assert (s.classes[np.abs(distance) > 20] != BOUNDARY).all()
    assert len(s.grains.area) == 2 and s.lattice_check == "ok" and s.rings is None and s.registration == "no atoms"


def test_unknown_scale_is_said_not_guessed() -> None:
    rng = np.random.default_rng(0)
    s = structure_of(100 + rng.normal(size=(96, 96)), None, None)
    assert s.pixel_size is None and s.pixel_size_source == "unknown" and s.lattice_check == "no lattice"
    assert s.grains is None and s.omap is None


def test_rings_only_with_registration_ok(tmp_path: Path) -> None:
    atoms = honeycomb(10)
    graph = bond_graph(atoms, None, BOND_PX, 1.3, "white")
    image, _, _, mask = contaminated()
    ok = structure_of(image, mask, GIVEN, graph, "ok")
    assert ok.rings.counts()[6] == 81
    shifted = structure_of(image, mask, GIVEN, graph, "uncertain")
    assert shifted.rings is None and shifted.registration == "uncertain"


def test_run_structure_writes_maps_and_tables(tmp_path: Path) -> None:
    image, _, _, mask = contaminated()
    graph = bond_graph(honeycomb(10), None, BOND_PX, 1.3, "white")
    seg = Segmentation(Micrograph(Path("a/two_grains.png"), image, 0.3), mask.astype(np.float32), mask,
                       Scale(0.3, ScaleSource.FILE), 0.0)
    noise = (100 + np.random.default_rng(1).normal(size=(64, 64))).astype(np.float32)
    blank = Segmentation(Micrograph(Path("a/blank.png"), noise, None), np.zeros((64, 64), np.float32),
                         np.zeros((64, 64), bool), Scale(None, ScaleSource.UNKNOWN), 0.0)
    atoms = [SimpleNamespace(path=Path("a/two_grains.png"), graph=graph, check={"registration": "ok"})]
    structures, (table, grains) = run_structure([seg, blank], tmp_path, {"jump_deg": 5.0}, atoms, image_format="both")
    s = structures[0]
    assert (tmp_path / "two_grains_classes.png").stat().st_size > 10_000  # the classes over the micrograph
    assert (tmp_path / "two_grains_orientation.png").stat().st_size > 10_000
    # the machine-readable maps: class ids as the simulator's, orientation NaN off the lattice, grain ids
    classes = tifffile.imread(tmp_path / "two_grains_classes.tif")
    assert classes.dtype == np.uint8 and np.array_equal(classes, s.classes)
    assert (classes[mask] == CONTAMINATION).all() and (classes[s.classes == VACUUM] == 2).all()
    assert set(np.unique(classes)) == {LATTICE, CONTAMINATION, VACUUM, BOUNDARY} == {0, 1, 2, 3}
    angle = tifffile.imread(tmp_path / "two_grains_orientation.tif")
    on = np.isin(s.classes, (LATTICE, BOUNDARY))
    assert np.isnan(angle[~on]).all() and np.allclose(angle[on], s.omap.angle[on])
    assert np.array_equal(tifffile.imread(tmp_path / "two_grains_grains.tif"), s.grains.labels)
    assert read_tiff_scale(tmp_path / "two_grains_classes.tif")[1] == pytest.approx(0.3, rel=1e-4)
    assert np.isnan(tifffile.imread(tmp_path / "blank_orientation.tif")).all()
    rows = {Path(r["file"]).name: r for r in csv.DictReader(table.open())}  # files as absolute paths, sorted
    first, second = rows["two_grains.png"], rows["blank.png"]
    assert Path(next(iter(csv.DictReader(table.open())))["file"]).is_absolute()
    assert first["pixel_size_source"] == "file" and first["grains"] == "2" and first["rings_6"] == "81"
    assert first["registration"] == "ok" and first["rings_5"] == "0"
    area_nm2 = image.size * 0.03 ** 2
    assert sum(float(first[f"{c}_nm2"]) for c in ("lattice", "contamination", "vacuum", "grain_boundary")) == \
        pytest.approx(area_nm2, rel=1e-3)
    assert sum(float(first[f"{c}_fraction"]) for c in ("lattice", "contamination", "vacuum", "grain_boundary")) == \
        pytest.approx(1.0, abs=1e-3)
    assert float(first["boundary_length_nm"]) == pytest.approx(256 * np.hypot(1, 0.3) * 0.03, rel=0.3)
    assert second["pixel_size_A"] == "unknown" and second["lattice_nm2"] == "unknown" and second["grains"] == "unknown"
    assert second["registration"] == "no atoms" and second["rings_6"] == ""
    grain_rows = list(csv.DictReader(grains.open()))
    assert len(grain_rows) == 2 and {r["neighbours"] for r in grain_rows} == {"1", "2"}
    assert [float(r["misorientation_deg"]) for r in grain_rows] == pytest.approx([17.0, 17.0], abs=1.0)


def test_evaluate_structure_answers_a_folder_and_keeps_earlier_rows(tmp_path: Path) -> None:
    """The CLI command: a two-grain micrograph and a tiny file; two grains and their boundary in
    structure.csv, the tiny one refused; a second run into the folder keeps the first run's rows."""
    from evaluate.cli import main
    from tests.evaluate.apply.test_folder import tiny_model

    image = contaminated()[0]
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.clip((image - image.min()) / np.ptp(image) * 255, 0, 255).astype(np.uint8)).save(folder / "gb.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "tiny.png")
    model = tiny_model(tmp_path / "m.ckpt")
    args = ["structure", "--model", str(model), "--input", str(folder), "--out", str(tmp_path / "out"),
            "--pixel-size", "0.3", "--threshold", "1.0", "--device", "cpu", "--quiet"]
    assert main(args) == 3  # the tiny file refused, nothing failed
    rows = {Path(r["file"]).name: r for r in csv.DictReader((tmp_path / "out" / "structure.csv").open())}
    assert set(rows) == {"gb.png"} and rows["gb.png"]["grains"] == "2" and rows["gb.png"]["pixel_size_source"] == "given"
    assert len(rows["gb.png"]["model_sha256"]) == 64 and rows["gb.png"]["tool_version"]  # which model made it
    assert (tmp_path / "out" / "gb_classes.png").exists() and (tmp_path / "out" / "gb_orientation.png").exists()
    (folder / "tiny.png").unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "gb2.png").write_bytes((folder / "gb.png").read_bytes())
    assert main([*args[:4], str(other), *args[5:]]) == 0
    grains = list(csv.DictReader((tmp_path / "out" / "grains.csv").open()))
    assert sorted({Path(r["file"]).name for r in grains}) == ["gb.png", "gb2.png"] and len(grains) == 4


def test_vacuum_not_called_where_no_lattice_is_resolved_is_said(tmp_path: Path) -> None:
    """Noise at a known pixel size: no lattice resolved, so a hole cannot be told from graphene the
    imaging washes out; the map calls no vacuum and says why (the row's `vacuum_check`) instead of
    reporting 0 % vacuum as if there were no holes. A resolved lattice keeps the check `ok`."""
    rng = np.random.default_rng(0)
    noise = structure_of(100 + rng.normal(size=(128, 128)), None, GIVEN)
    assert not (noise.classes == VACUUM).any()
    assert noise.vacuum_check.startswith("not called")
    image, _, hole, mask = contaminated()
    lattice = structure_of(image, mask, GIVEN)
    assert lattice.vacuum_check == "ok" and (lattice.classes[hole] == VACUUM).any()
    micrograph = Micrograph(Path("a/noise.png"), (100 + rng.normal(size=(128, 128))).astype(np.float32), 0.3)
    seg = Segmentation(micrograph, np.zeros((128, 128), np.float32), np.zeros((128, 128), bool),
                       Scale(0.3, ScaleSource.FILE), 0.0)
    run_structure([seg], tmp_path / "out", {}, figures=False)
    with open(tmp_path / "out" / "structure.csv") as f:
        row = next(csv.DictReader(f))
    assert row["vacuum_check"].startswith("not called") and float(row["vacuum_fraction"]) == 0.0
