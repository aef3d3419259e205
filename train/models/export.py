"""Export a checkpoint as a bioimage.io model package (spec 0.5): `train export --bioimageio OUT.zip`.

What a consumer of the package (bioimageio.core, deepImageJ, ilastik, Fiji, napari) gets:

- **One network that takes the raw micrograph.** The tool's preprocessing (grapheneseg.preprocessing:
  divide by a least-squares degree-2 Bezier flat field, then standardise) cannot be written in
  the spec's preprocessing steps (they have no surface fit), but it is plain tensor algebra, so it
  is built into the exported network (`RawToProbability`): the 3x3 Bezier fit by the pseudo-inverse
  of the Bernstein basis (its 3x3 normal matrix inverted by the adjugate, so ONNX needs no
  inverse operator), the floor of the surface at 1e-3 of the mean, the standardisation, the
  network and the probability of the contamination class (the atom map for atom models). The
  outputs agree with train.models.runtime.predict_probability on preprocessed images within 1e-5
  (tests/train/models/test_export.py).
- **What it cannot do for the user, said in the documentation and the rdf:** the flat field is
  fitted to the tensor it is given, so a consumer that tiles a large image fits one per tile (the
  tool fits the whole micrograph); and the network was trained at a range of pixel sizes
  (`pixel_range` of the checkpoint), recorded as the axes' scale (its middle, in A) and in
  `config.grapheneseg`, which the exchange format does not enforce: the user must resample
  micrographs outside that range first (what `evaluate predict` does itself).
- TorchScript (traced) and ONNX (opset 17, from the TorchScript's source module) weights, test
  input and output tensors (.npy), a cover image and the model card as documentation.

The rdf.yaml is written here by hand from the spec (bioimageio.spec is not needed to export);
tests/train/models/test_export.py validates the package with bioimageio.core's model test, offline.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from train.models.checkpoints import load_model
from train.models.onnx import ONNX_OPSET, export_onnx
from train.models.runtime import probability

SPEC_FORMAT_VERSION = "0.5.4"
SOURCE_URL = "https://github.com/lbnlcomputerarch/graphene-u-net"  # the paper's code and labelled data
GRAPHENE_A = 2.46  # graphene lattice constant, A (synthetic test input)


def _bernstein(ones: torch.Tensor) -> torch.Tensor:
    """(n, 3) degree-2 Bernstein basis at n points of [0, 1], n taken from `ones` (n,) so that a
    traced or exported graph keeps n symbolic (no Python int enters the trace)."""
    t = (torch.cumsum(ones, 0) - 1) / (ones.sum() - 1)
    return torch.stack([(1 - t) ** 2, 2 * t * (1 - t), t ** 2], 1)


def _pinv3(b: torch.Tensor) -> torch.Tensor:
    """(3, n) pseudo-inverse (B^T B)^-1 B^T of a full-column-rank (n, 3) basis; the 3x3 inverse by
    the adjugate (only matmul and elementwise operators, exportable to any ONNX runtime)."""
    g = b.transpose(0, 1) @ b
    a, b_, c, d, e, f, g_, h, i = [g[r, k] for r in range(3) for k in range(3)]
    cof = [e * i - f * h, -(d * i - f * g_), d * h - e * g_,
           -(b_ * i - c * h), a * i - c * g_, -(a * h - b_ * g_),
           b_ * f - c * e, -(a * f - c * d), a * e - b_ * d]
    det = a * cof[0] + b_ * cof[1] + c * cof[2]
    adjugate = torch.stack([torch.stack([cof[0], cof[3], cof[6]]), torch.stack([cof[1], cof[4], cof[7]]),
                            torch.stack([cof[2], cof[5], cof[8]])])
    return (adjugate / det) @ b.transpose(0, 1)


class RawToProbability(nn.Module):
    """Raw micrographs (N, 1, H, W) -> probability (N, 1, H, W): grapheneseg.preprocessing.preprocess
    (flat field in float64 as there, standardisation) then the U-Net and train.models.runtime.probability."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        xd = x.to(torch.float64)
        bu = _bernstein(torch.ones_like(xd[0, 0, :, 0]))
        bv = _bernstein(torch.ones_like(xd[0, 0, 0, :]))
        control = _pinv3(bu) @ xd @ _pinv3(bv).transpose(0, 1)  # (N, 1, 3, 3) control points
        mean = xd.mean(dim=(-2, -1), keepdim=True)
        surface = torch.maximum(bu @ control @ bv.transpose(0, 1), 1e-3 * mean).to(torch.float32)
        flat = torch.where(mean > 0, x / surface, x)  # an image without positive mean stays as it is
        fd = flat.to(torch.float64)
        m = fd.mean(dim=(-2, -1), keepdim=True)
        s = ((fd - m) ** 2).mean(dim=(-2, -1), keepdim=True).sqrt()
        ok = s > 1e-6 * torch.clamp(m.abs(), min=1.0)  # a constant image becomes zeros
        z = torch.where(ok, (flat - m.to(torch.float32)) / s.to(torch.float32), torch.zeros_like(flat))
        return probability(self.net(z))[:, None]


def synthetic_micrograph(size: int = 256, pixel_size: float = 0.46, seed: int = 0) -> np.ndarray:
    """A graphene-like test input: the three {100} lattice fringes (2.13 A) at `pixel_size` A/px,
    a patch of amorphous noise where the fringes fade, an illumination gradient and shot noise
    (float32, mean ~100). Only for the package's test tensors when no real micrograph is given."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(float) * pixel_size
    k, angle = 2 * np.pi / (GRAPHENE_A * np.sqrt(3) / 2), rng.uniform(0, np.pi / 3)
    lattice = sum(np.cos(k * (x * np.cos(angle + j * np.pi / 3) + y * np.sin(angle + j * np.pi / 3)))
                  for j in range(3))
    cy, cx = rng.uniform(0.3, 0.7, 2) * size * pixel_size
    blob = np.exp(-(((y - cy) ** 2 + (x - cx) ** 2) / (0.2 * size * pixel_size) ** 2) ** 2)
    import scipy.ndimage

    amorphous = scipy.ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.0 / pixel_size)
    amorphous /= amorphous.std()
    image = 100 * (1 + 0.15 * lattice * (1 - blob) + 0.25 * amorphous * blob) * (1 + 0.2 * x / x.max())
    return rng.poisson(np.clip(image, 0, None)).astype(np.float32)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cover(image: np.ndarray, prob: np.ndarray, path: Path) -> Path:
    """cover.png (2:1): the micrograph, and the same with the probability tinted red."""
    from PIL import Image

    lo, hi = np.percentile(image, [1, 99])
    grey = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    tinted = rgb * (1 - 0.5 * prob[..., None]) + 0.5 * prob[..., None] * np.array([1.0, 0.16, 0.16])
    both = (np.concatenate([rgb, tinted], axis=1) * 255).astype(np.uint8)
    Image.fromarray(both).resize((512, 256), Image.Resampling.LANCZOS).save(path)
    return path


def _yaml(data: Any) -> str:
    """YAML of plain data (JSON is YAML; a readable block style where OmegaConf is at hand)."""
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_yaml(OmegaConf.create(data))
    except Exception:  # pragma: no cover
        return json.dumps(data, indent=1)


def _documentation(card: Path | None, ckpt: Path, payload: dict, step: int, min_size: int,
                   pixel_range: list[float] | None) -> str:
    task = payload.get("task", "contamination")
    head = card.read_text(encoding="utf-8") if card and card.is_file() else (
        f"# {ckpt.name}\n\nA U-Net of grapheneseg ({task}); no model card was found beside the checkpoint.\n")
    scale = (f"{pixel_range[0]:.3f}-{pixel_range[1]:.3f} A/px (recorded in the checkpoint)" if pixel_range
             else "not recorded in this checkpoint (the public training images were 0.30-0.47 A/px)")
    return head + f"""

## This bioimage.io package

- **Input** `raw`: one raw HRTEM micrograph (batch, 1 channel, y, x), any intensity scale, float32;
  y and x at least {min_size} px and a multiple of {step} (the U-Net's pooling; crop or pad first).
- **Output** `probability`: per-pixel probability of {'an atom (atom map)' if task == 'atoms' else 'amorphous-carbon contamination'}
  (0-1), same size; threshold 0.5 for a mask.
- **Preprocessing is inside the network**: division by a least-squares degree-2 Bezier flat field
  fitted to the whole input, then zero mean and unit variance (grapheneseg.preprocessing). Do not
  normalise the input yourself. A tool that tiles a large image fits the flat field per tile,
  where grapheneseg fits it to the whole micrograph: give the whole image where you can.
- **Pixel size**: the network was trained at {scale}. Neither this package nor its consumers resample:
  a micrograph at another pixel size must be resampled into that range first (the axes' `scale`
  gives the middle of the range in Angstrom). `evaluate predict` of grapheneseg does this itself
  (and tiles large images), reading the pixel size from the file or the graphene lattice.
- Weights: TorchScript (traced from the PyTorch module) and ONNX (opset {ONNX_OPSET}, exported from
  the same module); both match grapheneseg's own inference within 1e-5.
- Exported from `{ckpt.name}` (checkpoint SHA-256 `{_sha256(ckpt)}`) with `train export --bioimageio`.
"""


def export_bioimageio(checkpoint: Path, out: Path, test_image: np.ndarray | None = None,
                      card: Path | None = None, name: str | None = None) -> dict[str, Any]:
    """Write the bioimage.io package of `checkpoint` to the zip `out`; returns a summary (files,
    max |TorchScript - ONNX| on the test input, pixel range). `test_image`: a raw micrograph for
    the test tensors and the cover (default: `synthetic_micrograph` at the model's scale), cropped
    to the size rule; `card`: the model card (default: the .md beside the checkpoint)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise ValueError("the ONNX weights need the onnx package: pip install -e '.[export]'")
    checkpoint, out = Path(checkpoint), Path(out)
    net, payload = load_model(checkpoint)
    task = payload.get("task", "contamination")
    step = 2 ** (int(net.depth) - 1)
    min_size = 4 * step
    pixel_range = [float(v) for v in payload["pixel_range"]] if payload.get("pixel_range") else None
    middle = round(sum(pixel_range) / 2, 4) if pixel_range else None
    if test_image is None:
        test_image = synthetic_micrograph(256, middle or 0.385)
    image = np.asarray(test_image, dtype=np.float32)
    h, w = (max(min_size, n - n % step) for n in image.shape)
    if image.shape[0] < h or image.shape[1] < w:
        raise ValueError(f"the test image {image.shape} is smaller than the model's minimum {min_size} px")
    image = np.ascontiguousarray(image[:h, :w])
    model = RawToProbability(net).eval()
    x = torch.from_numpy(image[None, None])
    card = card or checkpoint.with_suffix(".md")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with torch.inference_mode():
            expected = model(x).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and TorchScript deprecation notices
            traced = torch.jit.trace(model, x, check_trace=False)
            traced.save(str(folder / "weights_torchscript.pt"))
        export_onnx(model, x, folder / "weights.onnx", "raw", "probability", ("batch", "y", "x"))
        with torch.inference_mode():
            scripted = torch.jit.load(str(folder / "weights_torchscript.pt"))(x).numpy()
        np.save(folder / "test_input.npy", image[None, None])
        np.save(folder / "test_output.npy", scripted)
        onnx_gap = _onnx_gap(folder / "weights.onnx", image[None, None], scripted)
        _cover(image, scripted[0, 0], folder / "cover.png")
        (folder / "README.md").write_text(_documentation(card, checkpoint, payload, step, min_size, pixel_range),
                                          encoding="utf-8")
        rdf = _rdf(name or checkpoint.stem, task, folder, step, min_size, middle, pixel_range, checkpoint)
        (folder / "rdf.yaml").write_text(_yaml(rdf), encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.iterdir()):
                zf.write(f, f.name)
        files = sorted(p.name for p in folder.iterdir())
    return {"package": str(out), "files": files, "torchscript_vs_module": float(np.abs(scripted - expected).max()),
            "onnx_vs_torchscript": onnx_gap, "pixel_range": pixel_range, "task": task,
            "input_size": {"min": min_size, "step": step}}


def _onnx_gap(path: Path, x: np.ndarray, reference: np.ndarray) -> float | None:
    """max |ONNX Runtime - TorchScript| on the test input, None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(np.abs(session.run(None, {"raw": x})[0] - reference).max())


def _rdf(name: str, task: str, folder: Path, step: int, min_size: int, middle: float | None,
         pixel_range: list[float] | None, checkpoint: Path) -> dict[str, Any]:
    """The rdf.yaml content (bioimage.io model spec 0.5)."""
    def space(axis: str, size: dict) -> dict:
        entry = {"type": "space", "id": axis, "size": size}
        if middle:
            entry.update(unit="angstrom", scale=middle)
        return entry

    what = "atom map" if task == "atoms" else "amorphous-carbon contamination"
    return {
        "type": "model", "format_version": SPEC_FORMAT_VERSION,
        "name": f"grapheneseg {name}"[:128],
        "description": (f"U-Net segmenting {what} in phase-contrast HRTEM micrographs of monolayer graphene "
                        f"(grapheneseg); the flat-field preprocessing is inside the network. Expects "
                        + (f"{pixel_range[0]:.2f}-{pixel_range[1]:.2f} A/px: resample first." if pixel_range
                           else "0.3-0.5 A/px: resample first."))[:1024],
        "authors": [{"name": "grapheneseg contributors"}],
        "cite": [{"text": "Sadre et al. (2021), deep-learning segmentation of amorphous contamination in HRTEM "
                          "micrographs of graphene: code and labelled data", "url": SOURCE_URL}],
        "license": "BSD-3-Clause",
        "tags": ["hrtem", "tem", "electron-microscopy", "graphene", "2d", "semantic-segmentation", "u-net",
                 "pytorch", "onnx"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "timestamp": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "inputs": [{
            "id": "raw",
            "description": "raw HRTEM micrograph (any intensity scale; flat field and standardisation are applied "
                           "inside the network)",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["micrograph"]},
                     space("y", {"min": min_size, "step": step}), space("x", {"min": min_size, "step": step})],
            "test_tensor": {"source": "test_input.npy", "sha256": _sha256(folder / "test_input.npy")},
            "data": {"type": "float32"},
        }],
        "outputs": [{
            "id": "probability",
            "description": f"per-pixel probability of {what} (threshold 0.5 for a mask)",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["atoms" if task == "atoms" else "contamination"]},
                     space("y", {"tensor_id": "raw", "axis_id": "y"}), space("x", {"tensor_id": "raw", "axis_id": "x"})],
            "test_tensor": {"source": "test_output.npy", "sha256": _sha256(folder / "test_output.npy")},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {
            "torchscript": {"source": "weights_torchscript.pt", "sha256": _sha256(folder / "weights_torchscript.pt"),
                            "pytorch_version": torch.__version__.split("+")[0]},
            "onnx": {"source": "weights.onnx", "sha256": _sha256(folder / "weights.onnx"),
                     "opset_version": ONNX_OPSET, "parent": "torchscript"},
        },
        "config": {"grapheneseg": {"task": task, "pixel_range_A": pixel_range, "checkpoint": checkpoint.name,
                                   "checkpoint_sha256": _sha256(checkpoint),
                                   "preprocessing": "inside the network: Bezier degree-2 flat field, standardise"}},
    }
