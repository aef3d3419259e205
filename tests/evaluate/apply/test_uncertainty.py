"""Uncertainty maps, OOD flags and `evaluate suggest` (issue 15)."""
from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from evaluate.cli import main
from evaluate.apply.ood import check, measures, message, reference_ranges
from evaluate.apply.scale import Scale, ScaleSource
from evaluate.apply.suggest import choose, unlabelled
from evaluate.apply.uncertainty import probability_and_std
from tests.conftest import synthetic_micrograph, write_labelled_folder

SIZE = 128


def _honeycomb(size: int = SIZE) -> np.ndarray:
    y, x = np.mgrid[:size, :size].astype(float)
    k = 2 * np.pi * 0.2
    return sum(np.cos(k * (x * np.cos(j * np.pi / 3) + y * np.sin(j * np.pi / 3))) for j in range(3))


def _write_trio(folder: Path, seed: int = 0) -> Path:
    """clean (lattice), dirty (amorphous carbon over a faint lattice) and blend (their mean)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    amorphous = scipy.ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 1.5)
    amorphous *= 3.0 / amorphous.std()
    clean = 120 + 15 * _honeycomb() + rng.normal(0, 2, (SIZE, SIZE))
    dirty = 120 + 3 * _honeycomb() + 15 * amorphous + rng.normal(0, 2, (SIZE, SIZE))
    for name, image in (("clean", clean), ("dirty", dirty), ("blend", (clean + dirty) / 2)):
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


class Shifted(torch.nn.Module):
    """A 'network' that is not rotation-equivariant: logit = image shifted one pixel right."""

    depth = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), torch.roll(x, 1, dims=3) * 4], dim=1)


def test_std_is_over_members_and_symmetries() -> None:
    """A planted bug (std over one symmetry only, or samples not mapped back) changes these values."""
    from train.models.runtime import DIHEDRAL, probability_samples

    image = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    samples = probability_samples([Shifted()], image, tile=256, overlap=0, batch_size=2)
    prob, std, disagreement = probability_and_std(samples, image.shape, 0.5)

    expected = []
    for k, flip in DIHEDRAL:  # the sample of symmetry (k, flip), computed independently
        seen = np.rot90(image, k)
        seen = seen[:, ::-1] if flip else seen
        p = 1 / (1 + np.exp(-4 * np.roll(seen, 1, axis=1)))
        expected.append(np.rot90(p[:, ::-1] if flip else p, -k))
    np.testing.assert_allclose(prob, np.mean(expected, 0), atol=1e-5)
    np.testing.assert_allclose(std, np.std(expected, 0), atol=1e-5)
    assert std.mean() > 0.05
    masks, consensus = np.array(expected) > 0.5, np.mean(expected, 0) > 0.5
    jaccard = (masks & consensus).sum((1, 2)) / (masks | consensus).sum((1, 2))
    assert disagreement == pytest.approx(np.mean(1 - jaccard), abs=1e-6) and disagreement > 0.05


def test_predict_uncertainty_outputs(tmp_path: Path) -> None:
    """--uncertainty writes <stem>_uncertainty.png and a numeric column; the blend beats the clean one."""
    folder = _write_trio(tmp_path / "in")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--input", str(folder), "--out", str(tmp_path / "out"), "--uncertainty",
                     "--quiet", "--device", "cpu"]) == 0
    rows = {Path(r["file"]).stem: r for r in csv.DictReader((tmp_path / "out" / "predictions.csv").open())}
    assert all((tmp_path / "out" / f"{s}_uncertainty.png").is_file() for s in ("clean", "dirty", "blend"))
    u = {s: float(rows[s]["uncertainty"]) for s in rows}
    assert u["blend"] > 10 * u["clean"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--input", str(folder / "clean.png"), "--out", str(tmp_path / "plain"),
                     "--quiet", "--device", "cpu"]) == 0
    assert next(csv.DictReader((tmp_path / "plain" / "predictions.csv").open()))["uncertainty"] == ""
    assert not (tmp_path / "plain" / "clean_uncertainty.png").exists()


def test_suggest_skips_labelled_distinct_and_ranks_blend_above_clean(tmp_path: Path, capsys) -> None:
    folder = _write_trio(tmp_path / "in")
    write_labelled_folder(folder, n=2, size=SIZE, seed=3)  # img00.png + img00_LABEL.png, ...: skipped
    assert sorted(p.name for p in unlabelled([folder])) == ["blend.png", "clean.png", "dirty.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["suggest", "--input", str(folder), "--n", "3", "--out", str(tmp_path / "next"), "--quiet",
                     "--device", "cpu", "--json"]) == 0
    rows = list(csv.DictReader((tmp_path / "next" / "suggestions.csv").open()))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["file"] for p in printed] == [r["file"] for r in rows]
    files = [Path(r["file"]).name for r in rows]
    assert len(files) == len(set(files)) == 3 and not any(f.startswith("img") for f in files)
    assert files.index("blend.png") < files.index("clean.png")
    assert [int(r["rank"]) for r in rows] == [1, 2, 3] and all(r["why"] for r in rows)
    assert (tmp_path / "next" / "suggestions.png").is_file()


def test_suggest_diversity_skips_a_near_duplicate() -> None:
    """Two near-identical uncertain frames and a different, slightly less uncertain one: the
    second pick is the different one, not the duplicate."""
    from evaluate.apply.segment import Segmentation
    from grapheneseg.formats import Micrograph

    rng = np.random.default_rng(0)
    base = rng.normal(size=(64, 64))
    other = scipy.ndimage.gaussian_filter(rng.normal(size=(64, 64)), 3)

    def seg(name: str, image: np.ndarray, u: float, p: float) -> Segmentation:
        prob = np.full(image.shape, p, np.float32)
        return Segmentation(Micrograph(Path(name), image.astype(np.float32) + 10, None), prob, prob > 0.5,
                            Scale(None, ScaleSource.UNKNOWN), 0.0, np.full(image.shape, u, np.float32))

    results = [seg("a.png", base, 0.20, 0.3), seg("a2.png", base + 0.01 * rng.normal(size=base.shape), 0.19, 0.3),
               seg("b.png", other, 0.15, 0.8), seg("c.png", other * 2 + base, 0.01, 0.1)]
    picked = [c.segmentation.micrograph.path.name for c in choose(results, 3)]
    assert picked[:2] == ["a.png", "b.png"]
    assert len(set(picked)) == 3


def test_ood_flags_noise_and_missing_lattice() -> None:
    rng = np.random.default_rng(0)
    training = [synthetic_micrograph(rng, SIZE)[0] for _ in range(8)]
    reference = reference_ranges(training)
    for image in [synthetic_micrograph(rng, SIZE)[0] for _ in range(4)]:
        assert check(image, reference) == []
    image = synthetic_micrograph(np.random.default_rng(99), SIZE)[0].astype(float)
    base = measures(image)["noise"]
    noisy = image + rng.normal(0, np.sqrt(8.0**2 - 2.0**2), image.shape)  # noise std 2 -> 8: 4x
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the flags are returned, never warned
        flags = check(noisy, reference)
    assert measures(noisy)["noise"] > 2 * base and any(f.startswith("noise") for f in flags)
    assert re.match(r"noisy\.png: .*noise", message("noisy.png", flags))
    flat = 120 + scipy.ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 2) * 10  # no lattice at all
    flags = check(flat, reference)
    assert "no lattice" in flags and re.match(r"blob\.png: .*no lattice", message("blob.png", flags))


def test_ood_noise_follows_the_resampling() -> None:
    """The same dose per square angstrom at half the pixel size (4x the pixels, 2x the noise per
    pixel) is not out of range once carried to the network's grid, and is when measured raw."""
    rng = np.random.default_rng(1)
    training = [synthetic_micrograph(rng, SIZE)[0] for _ in range(8)]
    reference = reference_ranges(training)
    y, x = np.mgrid[:2 * SIZE, :2 * SIZE].astype(float)
    k = 2 * np.pi * 0.1  # the lattice period doubles in pixels
    lattice = sum(np.cos(k * (x * np.cos(j * np.pi / 3) + y * np.sin(j * np.pi / 3))) for j in range(3))
    fine = np.clip(120 + 15 * lattice + rng.normal(0, 4.0, lattice.shape), 0, 255)
    assert measures(fine, zoom=0.5)["noise"] == pytest.approx(measures(training[0])["noise"], rel=0.5)
    assert not any(f.startswith("noise") for f in check(fine, reference, zoom=0.5))
