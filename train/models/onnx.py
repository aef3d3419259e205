"""ONNX: the one exporter (opset `ONNX_OPSET`, dynamic batch, height and width) and the ONNX Runtime
CPU session that runs an exported network like a TorchScript one. Both the `--backend onnx` runtime
(train.models.runtime.load_models, in memory) and the bioimage.io package (train.models.export, to a
file) export through `export_onnx`, so the two cannot drift apart."""
from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ONNX_OPSET = 17


def onnxruntime_module() -> Any:
    """The onnxruntime module, or a ValueError saying how to install the optional backend."""
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if onnxruntime is None or importlib.util.find_spec("onnx") is None:
        raise ValueError("--backend onnx needs the optional packages onnxruntime and onnx, not installed here: "
                         "pip install -e '.[export]' (or use the default --backend torchscript)")
    return onnxruntime


def export_onnx(module: torch.nn.Module, example: torch.Tensor, target: Path | io.BytesIO,
                input_name: str = "x", output_name: str = "logits", axes: tuple[str, str, str] = ("n", "h", "w")
                ) -> None:
    """Write `module` (eval mode) traced on `example` (N, 1, H, W) as ONNX to `target` (a file or
    an in-memory buffer), its batch, height and width dynamic (named `axes`)."""
    dynamic = {0: axes[0], 2: axes[1], 3: axes[2]}
    with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), target if isinstance(target, io.BytesIO) else str(target),
                          input_names=[input_name], output_names=[output_name], opset_version=ONNX_OPSET,
                          dynamo=False, dynamic_axes={input_name: dynamic, output_name: dynamic})


class OnnxModel:
    """A network run by an ONNX Runtime CPU session: called like `InferenceModel` on a float32
    (N, 1, H, W) tensor (any N, H, W), it returns the logits tensor (N, C, H, W); `depth` and
    `device` (cpu) as there, so that predict_probability, tiled_probability and
    probability_samples use it unchanged."""

    def __init__(self, session: Any, depth: int):
        self.session, self.depth, self.device = session, depth, torch.device("cpu")
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def for_onnx(model: torch.nn.Module) -> OnnxModel:
    """The eval-mode model exported in memory (`export_onnx`, nothing written to disk) in an ONNX
    Runtime session on the CPU: graph optimisations on (ORT_ENABLE_ALL, which folds the batch
    norm), torch.get_num_threads() intra-op threads (so --threads and OMP_NUM_THREADS hold for it
    as for TorchScript)."""
    ort = onnxruntime_module()
    size = 2 ** (model.depth - 1) * 4
    buffer = io.BytesIO()
    export_onnx(model, torch.zeros(1, 1, size, size), buffer)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return OnnxModel(session, model.depth)
