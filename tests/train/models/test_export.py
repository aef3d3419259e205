"""`train export --bioimageio`: the exported network (preprocessing built in) gives the tool's own
probabilities, as TorchScript and as ONNX, and the package passes bioimageio.core's model test
offline (skipped without bioimageio.core / onnxruntime)."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from grapheneseg.micrographs import read_image
from grapheneseg.preprocessing import preprocess
from train.models.checkpoints import load_model
from train.models.export import RawToProbability, export_bioimageio, synthetic_micrograph
from train.models.runtime import load_models, predict_probability

from tests.conftest import synthetic_micrograph as lattice_with_blob
from tests.conftest import ROOT

DEFAULT = ROOT / "grapheneseg" / "models" / "sim_default.ckpt"
ATOMS = DEFAULT.with_name("atoms_default.ckpt")


def _real_dir() -> Path | None:
    if os.environ.get("GRAPHENESEG_REAL_DIR"):
        return Path(os.environ["GRAPHENESEG_REAL_DIR"])
    for base in Path(__file__).resolve().parents:
        if (base / "shared" / "data" / "graphene-u-net" / "images").is_dir():
            return base / "shared" / "data" / "graphene-u-net" / "images"
    return None


REAL = _real_dir()
REAL_IMAGES = sorted(p for p in REAL.glob("*.png") if not p.stem.endswith("_LABEL"))[:5] if REAL and REAL.is_dir() else []


def _reference(path: Path, images: np.ndarray, task: str = "contamination") -> np.ndarray:
    return predict_probability(load_models(path, "cpu", task), np.stack([preprocess(i) for i in images]))


@pytest.mark.parametrize("ckpt, task", [(DEFAULT, "contamination"), (ATOMS, "atoms")])
def test_network_with_preprocessing_inside_equals_the_tools_inference(ckpt, task):
    rng = np.random.default_rng(0)
    images = np.stack([lattice_with_blob(rng, 96)[0] for _ in range(3)]).astype(np.float32)
    images[1] *= 37.0  # any intensity scale
    images[2] = images[2][::-1] + np.linspace(0, 80, 96)[None]  # an illumination gradient
    model = RawToProbability(load_model(ckpt)[0]).eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(images[:, None])).numpy()[:, 0]
    np.testing.assert_allclose(out, _reference(ckpt, images, task), atol=1e-5)


def test_degenerate_inputs_follow_preprocess():
    model = RawToProbability(load_model(DEFAULT)[0]).eval()
    for image in (np.full((32, 40), 7.0, np.float32), -np.abs(lattice_with_blob(np.random.default_rng(1), 32)[0]
                                                             ).astype(np.float32)):
        with torch.inference_mode():
            out = model(torch.from_numpy(image[None, None])).numpy()[0, 0]
        np.testing.assert_allclose(out, _reference(DEFAULT, image[None])[0], atol=1e-5)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> tuple[Path, dict]:
    pytest.importorskip("onnx")  # the export extra
    image = read_image(REAL_IMAGES[0]) if REAL_IMAGES else None
    out = tmp_path_factory.mktemp("bioimageio") / "sim_default.zip"
    return out, export_bioimageio(DEFAULT, out, image)


def test_package_contents_and_rdf(package):
    from omegaconf import OmegaConf

    out, summary = package
    names = set(zipfile.ZipFile(out).namelist())
    assert names == {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "weights.onnx",
                     "weights_torchscript.pt"}
    with zipfile.ZipFile(out) as zf:
        rdf = OmegaConf.to_container(OmegaConf.create(zf.read("rdf.yaml").decode()))
        readme = zf.read("README.md").decode()
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5")
    space = rdf["inputs"][0]["axes"][2]
    assert space["size"] == {"min": 32, "step": 8} and space["unit"] == "angstrom"
    assert rdf["config"]["grapheneseg"]["pixel_range_A"] == summary["pixel_range"]
    assert space["scale"] == pytest.approx(sum(summary["pixel_range"]) / 2, abs=1e-3)
    assert set(rdf["weights"]) == {"torchscript", "onnx"} and rdf["weights"]["onnx"]["parent"] == "torchscript"
    assert "Model card" in readme and "Preprocessing is inside the network" in readme and "resampled" in readme
    assert summary["torchscript_vs_module"] < 1e-6


def _members(out: Path, tmp_path: Path) -> Path:
    with zipfile.ZipFile(out) as zf:
        zf.extractall(tmp_path)
    return tmp_path


def test_onnx_and_torchscript_agree_on_the_test_tensors(package, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    folder = _members(package[0], tmp_path)
    x, expected = np.load(folder / "test_input.npy"), np.load(folder / "test_output.npy")
    onnx = ort.InferenceSession(str(folder / "weights.onnx"), providers=["CPUExecutionProvider"]).run(None, {"raw": x})[0]
    script = torch.jit.load(str(folder / "weights_torchscript.pt"))(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(onnx, expected, atol=1e-4)
    np.testing.assert_allclose(script, expected, atol=1e-6)
    np.testing.assert_allclose(expected[0, 0], _reference(DEFAULT, x[:, 0])[0], atol=1e-4)


@pytest.mark.skipif(not REAL_IMAGES, reason="the public labelled micrographs are not present")
def test_onnx_and_torchscript_equal_predict_probability_on_five_real_micrographs(package, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    folder = _members(package[0], tmp_path)
    images = np.stack([read_image(p) for p in REAL_IMAGES]).astype(np.float32)
    reference = _reference(DEFAULT, images)
    session = ort.InferenceSession(str(folder / "weights.onnx"), providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(folder / "weights_torchscript.pt"))
    for image, ref in zip(images, reference):
        x = image[None, None]
        np.testing.assert_allclose(session.run(None, {"raw": x})[0][0, 0], ref, atol=1e-4)
        np.testing.assert_allclose(script(torch.from_numpy(x)).detach().numpy()[0, 0], ref, atol=1e-4)


def test_bioimageio_core_model_test_passes_offline(package, monkeypatch, tmp_path):
    core = pytest.importorskip("bioimageio.core")
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "cache"))
    summary = core.test_model(str(package[0]))
    failed = [(d.name, [str(e.msg)[:300] for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    names = " ".join(d.name for d in summary.details)
    assert "(onnx)" in names and "(torchscript)" in names


def test_cli_export(tmp_path, capsys):
    from train.cli import main

    pytest.importorskip("onnx")
    out = tmp_path / "pkg.zip"
    assert main(["export", "--bioimageio", str(out), "--model", str(ATOMS), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "atoms" and out.is_file()
    assert "atoms_default" in zipfile.ZipFile(out).read("README.md").decode()


def test_synthetic_test_input_is_a_lattice_at_the_scale():
    image = synthetic_micrograph(128, 0.46)
    power = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    r = np.hypot(*np.meshgrid(np.arange(-64, 64), np.arange(-64, 64)))
    ring = 128 * 0.46 / 2.13  # the {100} spots (2.13 A) in frequency pixels
    assert power[np.abs(r - ring) < 2].mean() > 20 * power[(r > ring + 6) & (r < ring + 20)].mean()
