"""Atoms found by a network trained on simulation: atom-map labels, the HDF5 schema, the atom task
of `train pretrain`, task-checked checkpoints, peaks of the map and the label-free bond measure."""
from __future__ import annotations

import json

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms

from evaluate.apply.atoms import bond_statistics, find_atoms, find_atoms_network, map_peaks, match_atoms
from evaluate.apply.predictor import Predictor
from evaluate.apply.scale import Scale, ScaleSource
from grapheneseg.config import load_config
from grapheneseg.formats import Micrograph
from simulate.dataset import DatasetError, DatasetWriter, open_dataset, require_atoms
from simulate.labels import atom_map, contamination_mask, pixel_centres
from simulate.pipeline import META_DTYPE
from simulate.structures import Structure
from tests.evaluate.apply.test_atoms import PIXEL, honeycomb
from train.models.checkpoints import CheckpointError
from train.datasets import ATOM_IGNORE, ATOM_PEAK, atom_target
from train.models.runtime import load_models
from train.loops import atom_loss
from train.models.registry import packaged
from train.pretrain import pretrain
from tests.conftest import TINY_BATCH, TINY_NET

TINY = [*TINY_NET, *TINY_BATCH, "model.batch_norm=true", "loop.epochs=2", "loop.samples_per_epoch=8",
        "sim.val_fraction=0.3"]


def render(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Max over points of a Gaussian of peak 1 and width `sigma` px, at pixel centres (row, col)."""
    y, x = np.mgrid[:shape[0], :shape[1]].astype(float)
    out = np.zeros(shape)
    for py, px in points:
        out = np.maximum(out, np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * sigma**2)))
    return out


def test_atom_map_marks_sheet_atoms_only() -> None:
    """Peak 255 on a sheet carbon, nothing on amorphous carbon or a Si adatom, on the mask's grid."""
    positions = [(5.0, 7.0, 5.0), (9.2, 3.0, 5.0), (12.0, 12.0, 7.0), (3.0, 14.0, 6.0)]
    atoms = Atoms("C3Si", positions=positions, cell=[20, 20, 10], pbc=True)
    structure = Structure(atoms, 20.0, np.array([False, False, True, False]), np.zeros((1, 2)), np.zeros(1))
    xy = pixel_centres(16, 2, 1.0)  # pixel [i, j] samples the cell point ((2 + i), (2 + j)) A
    amap = atom_map(structure, xy, sigma=0.35)
    assert amap.dtype == np.uint8 and amap[3, 5] == 255  # the sheet atom at (5, 7) A
    assert amap[7, 1] == round(255 * np.exp(-0.2**2 / (2 * 0.35**2)))  # 0.2 A from the atom at (9.2, 3)
    assert amap[10, 10] == 0 and amap[1, 12] == 0  # amorphous carbon and the adatom
    assert contamination_mask(structure, xy, 1.0)[10, 10]  # the same grid as the contamination label
    sheet = np.array(positions[:2])[:, :2]
    near = np.linalg.norm(xy[:, :, None] - sheet, axis=-1).min(-1) < 4 * 0.35
    assert not (amap[~near]).any() and (amap[near] > 0).sum() >= 7


def sim_file(path: Path, n: int = 12, atoms: bool = True, seed: int = 0) -> Path:
    """A small file in the simulator's schema: honeycombs, their atom maps, one contaminated corner."""
    writer = DatasetWriter(path, n, 64, {"config": "tiny", "seed": seed, "n_target": n,
                                          "variants_per_structure": 3}, resume=False)
    for i in range(n):
        image, truth = honeycomb(size=64, white=bool(i % 2), seed=i)
        mask = np.zeros((64, 64), np.uint8)
        mask[:16, :16] = 1
        meta = np.zeros(1, dtype=META_DTYPE)
        meta["index"], meta["seed"], meta["structure"], meta["variant"] = i, seed, i // 3, i % 3
        meta["pixel_size"] = PIXEL  # recorded in the checkpoint as the model's pixel range
        amap = np.round(255 * render(truth, (64, 64), 0.35 / PIXEL)).astype(np.uint8)
        writer.append_arrays((image / image.mean())[None].astype(np.float32), mask[None], mask[None], meta,
                             amap[None] if atoms else None)
    writer.close(complete=True)
    return path


def test_schema_2_holds_atoms_and_version_1_still_reads(tmp_path: Path) -> None:
    new = sim_file(tmp_path / "new.h5", n=3)
    with open_dataset(new) as f:
        assert int(f.attrs["schema_version"]) == 3 and f["atoms"].shape == (3, 64, 64)
        require_atoms(f, new)
    old = sim_file(tmp_path / "old.h5", n=3, atoms=False)
    with h5py.File(old, "r+") as f:
        f.attrs["schema_version"] = 1
    with open_dataset(old) as f:  # a version-1 file reads; only the atom task refuses it
        assert "atoms" not in f
        with pytest.raises(DatasetError, match=r"old\.h5: holds no atom maps"):
            require_atoms(f, old)
    with pytest.raises(DatasetError, match="cannot resume a schema-version 1 file"):
        DatasetWriter(old, 3, 64, {}, resume=True)
    with pytest.raises(ValueError, match=r"old\.h5: holds no atom maps"):
        pretrain(load_config("pretrain", TINY + ["task=atoms"]), [old], tmp_path / "a.ckpt")
    writer = DatasetWriter(tmp_path / "mixed.h5", 2, 64, {"config": "x", "seed": 0, "n_target": 2,
                                                          "variants_per_structure": 1}, resume=False)
    row = np.zeros((1, 64, 64), np.uint8)
    writer.append_arrays(row.astype(np.float32), row, row, np.zeros(1, META_DTYPE), row)
    with pytest.raises(DatasetError, match="atom maps missing"):
        writer.append_arrays(row.astype(np.float32), row, row, np.zeros(1, META_DTYPE))
    writer.close(complete=False)


def test_atom_loss_ignores_contamination_and_targets_scale() -> None:
    target = torch.from_numpy(atom_target(np.array([[255, 0], [128, 255]], np.uint8),
                                          np.array([[0, 0], [0, 1]], np.uint8)).astype(np.int64))[None]
    assert target[0, 0, 0] == ATOM_PEAK and target[0, 1, 1] == ATOM_IGNORE
    logits = torch.zeros(1, 1, 2, 2)
    base = atom_loss(logits, target)
    logits[0, 0, 1, 1] = 50.0  # only the ignored pixel changes
    assert atom_loss(logits, target) == pytest.approx(base.item())
    logits[0, 0, 0, 0] = 50.0  # a confident atom where the target is 1: lower loss
    assert atom_loss(logits, target) < base
    logits[0, 0, 0, 1] = 50.0  # a confident atom where there is none: higher
    assert atom_loss(logits, target) > base


def test_pretrain_atom_task_writes_a_task_checked_checkpoint(tmp_path: Path, capsys) -> None:
    data = sim_file(tmp_path / "sim.h5")
    ckpt = tmp_path / "atoms.ckpt"
    from train.cli import main

    assert main(["pretrain", "--task", "atoms", "--data", str(data), "--out", str(ckpt), *TINY]) == 0
    assert "sim_val: map_rmse" in capsys.readouterr().out
    payload = torch.load(ckpt, weights_only=True)
    assert payload["task"] == "atoms" and payload["architecture"]["classes"] == 1
    assert "classes: 1" in (tmp_path / "atoms.yaml").read_text()  # the resolved config says so
    (model,) = load_models(ckpt, "cpu", task="atoms")
    predictor = Predictor(ckpt, load_config("evaluate").apply, "cpu", task="atoms")
    heat = find_atoms_network(predictor, Micrograph(Path("x"), np.ones((64, 64), np.float32), None),
                              Scale(PIXEL, ScaleSource.GIVEN), threshold=0.0)
    assert heat.contrast == "network"
    with pytest.raises(CheckpointError, match=r"atoms\.ckpt: an 'atoms' checkpoint"):
        load_models(ckpt, "cpu")  # where a contamination model is expected
    from train.models.checkpoints import read_checkpoint
    from train.crossval import check_compatible

    with pytest.raises(CheckpointError, match=r"atoms\.ckpt: an 'atoms' checkpoint"):  # fine-tuning from it
        check_compatible(read_checkpoint(ckpt), {"model": payload["architecture"]}, ckpt)
    with pytest.raises(CheckpointError, match="an atom-map model .* is needed"):
        load_models(packaged("contamination"), "cpu",
                    task="atoms")
    from evaluate.cli import main as evaluate_main

    image, _ = honeycomb(size=64)
    from PIL import Image

    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp_path / "g.png")
    out = tmp_path / "out"
    assert evaluate_main(["atoms", "--model", str(ckpt), "--input", str(tmp_path / "g.png"), "--out", str(out),
                          "--quiet"]) == 1  # an atom model given as the contamination model: refused
    assert "an 'atoms' checkpoint" in capsys.readouterr().err
    assert evaluate_main(["atoms", "--atom-model", str(ckpt), "--input", str(tmp_path / "g.png"),
                          "--out", str(out), "--quiet", "--pixel-size", str(PIXEL)]) == 0
    assert "network atom map" in capsys.readouterr().out and (out / "g_bonds.png").exists()
    summary = json.loads((out / "g_atoms.json").read_text())
    assert summary["registration"] in ("ok", "uncertain", "unknown") and "reflection_balance" in summary


def test_network_atoms_come_back_on_the_micrograph_grid() -> None:
    """A micrograph outside the network's pixel range is resampled; the peaks of the map must be
    mapped back to the micrograph's own pixels (grid-mode zoom), then bonded at its bond length."""
    _, truth = honeycomb(size=128)
    cfg = load_config("evaluate", ["apply.pixel_range=[0.28,0.5]", "apply.target_pixel_size=0.4"])
    pixel = 0.7  # outside the range: the network sees the image 1.75x larger
    zoom = pixel / 0.4
    scaled_truth = (truth * PIXEL / pixel + 0.5) * zoom - 0.5  # the same lattice at 0.7 A/px, then zoomed

    class FakePredictor(Predictor):
        """The Predictor's own resampling plan (`cfg`), and the atom map a network would give on it."""

        def __init__(self, cfg):
            self.cfg = cfg

        def probability(self, micrograph, scale):
            shape = self.plan(micrograph, scale).shape
            assert shape == (round(64 * zoom),) * 2
            return render(scaled_truth, shape, 0.35 / 0.4), shape[0] / micrograph.image.shape[0]

    micrograph = Micrograph(Path("m"), np.zeros((64, 64), np.float32), pixel)
    graph = find_atoms_network(FakePredictor(cfg.apply), micrograph, Scale(pixel, ScaleSource.FILE))
    expected = truth * PIXEL / pixel
    inside = np.all((expected > 2) & (expected < 62), axis=1)
    precision, recall = match_atoms(graph.atoms[np.all((graph.atoms > 2) & (graph.atoms < 62), axis=1)],
                                    expected[inside], tolerance=0.1 / pixel)
    assert precision > 0.97 and recall > 0.97
    assert graph.bond_px == pytest.approx(1.42 / pixel)


def test_map_peaks_at_the_coarsest_pixel_size() -> None:
    """At 0.47 A/px a C-C bond is 3 px: neighbouring peaks must stay apart, sub-pixel exact."""
    pixel = 0.47
    _, truth = honeycomb(size=96)
    truth = truth * PIXEL / pixel
    truth = truth[np.all((truth > 3) & (truth < 93), axis=1)]
    peaks = map_peaks(render(truth, (96, 96), 0.35 / pixel), 1.42 / pixel, threshold=0.5)
    precision, recall = match_atoms(peaks, truth, tolerance=0.15 / pixel)
    assert precision > 0.99 and recall > 0.99


def test_bond_statistics_of_a_clean_honeycomb() -> None:
    image, _ = honeycomb(size=128)
    graph = find_atoms(image, pixel_size=PIXEL)
    stats = bond_statistics(graph, None, image.shape)
    assert stats["three_bonded"] > 0.97 and stats["unbonded"] == 0 and stats["bond_spread"] < 0.08
    mask = np.zeros(image.shape, bool)
    mask[:, :64] = True
    masked = find_atoms(image, mask=mask, pixel_size=PIXEL)
    edge = bond_statistics(masked, mask, image.shape)  # atoms at the contamination edge left out
    assert edge["three_bonded"] > 0.97 and edge["atoms"] < stats["atoms"] / 2
    assert bond_statistics(masked, None, image.shape)["three_bonded"] < 0.97  # the edge's 2-bonded atoms
