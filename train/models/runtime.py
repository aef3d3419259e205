"""Inference with trained U-Nets: one checkpoint, or a cross-validation run folder as an ensemble.

A run folder (`train real --out RUN_DIR`) holds `fold_*/model.ckpt`; its models are ensembled
by averaging their softmax outputs (as nnU-Net does). Inputs are raw micrographs, preprocessed
here exactly as in training (grapheneseg.preprocessing.preprocess). For speed on a CPU the models
are prepared for inference: batch norm folded into the convolutions, channels-last memory
layout, frozen TorchScript. On a GPU (`device` auto or cuda) they run in eager mode under
bfloat16/float16 autocast, in batches of at least `CUDA_BATCH`. With `backend="onnx"` (CPU
only; the optional onnxruntime, `pip install -e '.[export]'`) each checkpoint is exported to ONNX
in memory and run by ONNX Runtime instead of TorchScript (`OnnxModel`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from train.models.checkpoints import checkpoint_paths, load_model
from train.models.onnx import for_onnx, onnxruntime_module

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("torchscript", "onnx")  # how a network runs on the CPU (a GPU always runs torch eager)
CUDA_BATCH = 64  # images per forward pass on a GPU (the CPU keeps its small, cache-friendly batches)


def inference_device(name: str = "auto") -> torch.device:
    """"auto" (CUDA when present, else CPU), "cpu" or "cuda" (a clear error when CUDA is absent)."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: no CUDA device is available to torch {torch.__version__} "
                         f"(built for CUDA {torch.version.cuda}); use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


class InferenceModel(torch.nn.Module):
    """A frozen TorchScript network and the pooling depth that sets its input-size multiple."""

    def __init__(self, net: torch.nn.Module, depth: int, device: torch.device = torch.device("cpu")):
        super().__init__()
        self.net, self.depth, self.device = net, depth, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def for_inference(model: torch.nn.Module) -> InferenceModel:
    """The eval-mode model with batch norm folded into the convolutions, channels-last, traced
    and frozen by TorchScript (about 2x faster than eager mode on a 2-core CPU)."""
    from torch.fx.experimental.optimization import fuse

    fused = fuse(model.eval()).to(memory_format=torch.channels_last)
    size = 2 ** (model.depth - 1) * 4
    example = torch.zeros(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        frozen = torch.jit.freeze(torch.jit.trace(fused, example))
    return InferenceModel(frozen, model.depth)


def for_device(model: torch.nn.Module, device: torch.device) -> InferenceModel:
    """The eval-mode model on `device` in eager mode, channels-last (the GPU path)."""
    return InferenceModel(model.eval().to(device, memory_format=torch.channels_last), model.depth, device)


def _onnx_device(device: str) -> None:
    """The onnx backend runs on the CPU: `device` cuda is an error; auto on a machine with CUDA
    runs on the CPU with a warning."""
    if inference_device(device).type == "cpu":
        return
    if device == "cuda":
        raise ValueError("--backend onnx runs on the CPU only (ONNX Runtime's CPUExecutionProvider): use "
                         "--device cpu with it, or --backend torchscript (the default) on the GPU")
    warnings.warn("--backend onnx runs on the CPU: the CUDA device is not used (--backend torchscript "
                  "runs on it)", stacklevel=3)


def load_models(model_path: Path | Sequence[Path], device: str = "auto",
                task: str = "contamination", backend: str = "torchscript") -> list[Any]:
    """The inference-ready models of a checkpoint, run folder or several (see `checkpoint_paths`): frozen
    TorchScript on the CPU, eager on a GPU (see `inference_device`); with `backend` "onnx",
    ONNX Runtime sessions on the CPU (`for_onnx`; `device` cuda is then a ValueError, auto runs on
    the CPU). A CheckpointError when one is not of `task` (contamination or atoms)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "onnx":
        _onnx_device(device)
        onnxruntime_module()  # before the checkpoints are read
        return [for_onnx(load_model(p, task)[0]) for p in checkpoint_paths(model_path)]
    target = inference_device(device)
    prepare = for_inference if target.type == "cpu" else lambda m: for_device(m, target)
    return [prepare(load_model(p, task)[0]) for p in checkpoint_paths(model_path)]


def pad_to(image: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (N, 1, H, W) to sizes divisible by `multiple` (the U-Net's pooling)."""
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), mode="reflect")
    return image, (h, w)


# The 8 symmetries of the square (rotations by k x 90 degrees, each with and without a mirror):
# a graphene micrograph and its contamination are the same physics under all of them.
DIHEDRAL = [(k, flip) for k in range(4) for flip in (False, True)]


def seen_under(x: Any, k: int, flip: bool) -> Any:
    """`x` (NumPy array or tensor) under the symmetry (k, flip) of DIHEDRAL: rotated by k x 90
    degrees in its last two axes, then mirrored left-right."""
    if isinstance(x, torch.Tensor):
        x = torch.rot90(x, k, (-2, -1))
        return x.flip(-1) if flip else x
    x = np.rot90(x, k, (-2, -1))
    return np.ascontiguousarray(x[..., ::-1] if flip else x)


def mapped_back(p: Any, k: int, flip: bool) -> Any:
    """The inverse of `seen_under`: a prediction made on the transformed view, on the original grid."""
    if isinstance(p, torch.Tensor):
        return torch.rot90(p.flip(-1) if flip else p, -k, (-2, -1))
    return np.rot90(p[..., ::-1] if flip else p, -k, (-2, -1))


def probability(logits: torch.Tensor) -> torch.Tensor:
    """(N, H, W) from (N, C, H, W) logits: the class-1 softmax of a 2-class (contamination)
    network, the sigmoid of a 1-channel (atom-map) network."""
    logits = logits.float()
    return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)[:, 1]


def _ensemble(models: Sequence[torch.nn.Module], x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Mean `probability` of `models` on (N, 1, H, W) `x`, reflect-padded to `multiple`."""
    padded, (h, w) = pad_to(x, multiple)
    padded = padded.contiguous(memory_format=torch.channels_last)
    prob = sum(probability(m(padded)) for m in models) / len(models)
    return prob[:, :h, :w]


@torch.inference_mode()
def predict_probability(models: Sequence[torch.nn.Module], images: np.ndarray, batch_size: int = 2,
                        device: torch.device | str | None = None, tta: bool = False) -> np.ndarray:
    """Contamination probability (atom map for atom-task models) (N, H, W) float32 of preprocessed
    `images` (N, H, W): the mean over `models` of `probability`, computed in batches of `batch_size` (small batches keep
    the activations in cache: 2 is fastest on a 2-core CPU; on CUDA at least `CUDA_BATCH`, under
    autocast). `device` defaults to the models' own (see `load_models`). With `tta`, also the mean
    over the 8 dihedral symmetries (each prediction mapped back): 8x the time, and the output
    transforms exactly as the input does."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    multiple = max(2 ** (m.depth - 1) for m in models) if models else 1
    out = np.empty(images.shape, dtype=np.float32)
    device = torch.device(device or getattr(models[0], "device", "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        batch_size = max(batch_size, CUDA_BATCH)
    half = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
        with torch.autocast(device.type, dtype=half, enabled=cuda):
            if not tta:
                prob = _ensemble(models, x, multiple)
            else:
                prob = sum(mapped_back(_ensemble(models, seen_under(x, k, flip), multiple), k, flip)
                           for k, flip in DIHEDRAL) / len(DIHEDRAL)
        out[start:start + batch_size] = prob.cpu().numpy()
    return out


def _ramp(n: int, overlap: int) -> np.ndarray:
    """1-D blending weight: linear ramps of `overlap` px at both ends, 1 in the middle."""
    w = np.ones(n, dtype=np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        w[:overlap], w[-overlap:] = np.minimum(w[:overlap], ramp), np.minimum(w[-overlap:], ramp[::-1])
    return w


def _starts(n: int, tile: int, step: int) -> list[int]:
    return sorted(set(list(range(0, max(n - tile, 0) + 1, step)) + [max(n - tile, 0)]))


def tiled_probability(models: Sequence[Any], image: np.ndarray, tile: int, overlap: int,
                      batch_size: int, tta: bool = False) -> np.ndarray:
    """Probability of a preprocessed image: whole when it fits one tile, else blended tiles
    (`tta`: each averaged over the 8 dihedral symmetries)."""
    if max(image.shape) <= tile:
        return predict_probability(models, image[None], batch_size, tta=tta)[0]
    rows, cols = _starts(image.shape[0], tile, tile - overlap), _starts(image.shape[1], tile, tile - overlap)
    th, tw = min(tile, image.shape[0]), min(tile, image.shape[1])
    boxes = [(r, c) for r in rows for c in cols]
    probs = predict_probability(models, np.stack([image[r:r + th, c:c + tw] for r, c in boxes]), batch_size,
                                tta=tta)
    weight = np.outer(_ramp(th, overlap), _ramp(tw, overlap))
    total = np.zeros(image.shape, np.float32)
    norm = np.zeros(image.shape, np.float32)
    for (r, c), prob in zip(boxes, probs):
        total[r:r + th, c:c + tw] += weight * prob
        norm[r:r + th, c:c + tw] += weight
    return total / norm


def probability_samples(models: Sequence[torch.nn.Module], image: np.ndarray, tile: int, overlap: int,
                        batch_size: int) -> Iterator[np.ndarray]:
    """The (H, W) probabilities of a preprocessed `image`, one per (member, symmetry of DIHEDRAL),
    each tiled as in `tiled_probability` and mapped back onto the image's grid: the samples whose
    mean is `tta` inference and whose spread is the uncertainty (evaluate.apply.uncertainty)."""
    for model in models:
        for k, flip in DIHEDRAL:
            p = tiled_probability([model], seen_under(image, k, flip), tile, overlap, batch_size, tta=False)
            yield mapped_back(p, k, flip)
