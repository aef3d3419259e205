"""CPU inference backends for the packaged U-Net: the tool's TorchScript (batch norm folded,
channels-last, frozen: train.inference.load_models) against ONNX Runtime on the same network,
in ms per image at batch 1 and 8, 256 px and 2048 px, one thread each.

    taskset -c 1 python benchmarks/bench_backend.py [--repeats 5] [--sizes 256 2048] [--batches 1 8]

Both run the network alone on preprocessed input (the preprocessing is the same NumPy code for
either). The ONNX model is exported from the same eval-mode module (opset 17) and run with
graph optimisations on (ORT_ENABLE_ALL), 1 intra-op thread, CPUExecutionProvider. Each figure is
the median over `--repeats` timed runs after one warm-up, the two backends interleaved so that
load from other processes affects both alike. Prints a table and, with --json, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the packaged sim_default.ckpt)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import onnxruntime as ort

    from grapheneseg.preprocessing import preprocess
    from train.checkpoints import load_model
    from train.inference import load_models

    torch.set_num_threads(1)
    path = Path(args.model) if args.model else Path(__file__).resolve().parent.parent / "grapheneseg" / "models" / "sim_default.ckpt"
    scripted = load_models(path, "cpu")[0]
    net = load_model(path)[0].eval()
    onnx_path = Path(tempfile.mkdtemp()) / "unet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 64, 64),), str(onnx_path), input_names=["x"], output_names=["logits"],
                          opset_version=17, dynamo=False, dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            x = np.stack([preprocess(rng.normal(100, 10, (size, size)).astype(np.float32)) for _ in range(batch)])[:, None]
            xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

            def run_torch() -> np.ndarray:
                with torch.inference_mode():
                    return scripted(xt).numpy()

            def run_onnx() -> np.ndarray:
                return session.run(None, {"x": x})[0]

            gap = float(np.abs(run_torch() - run_onnx()).max())  # also the warm-up
            times: dict[str, list[float]] = {"torchscript": [], "onnxruntime": []}
            for _ in range(args.repeats):
                for name, fn in (("torchscript", run_torch), ("onnxruntime", run_onnx)):
                    start = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - start) * 1000 / batch)
            row = {"size": size, "batch": batch, "max_logit_diff": gap,
                   **{f"{k}_ms_per_img": round(statistics.median(v), 1) for k, v in times.items()},
                   **{f"{k}_spread_ms": [round(min(v), 1), round(max(v), 1)] for k, v in times.items()}}
            row["onnx_over_torchscript"] = round(row["onnxruntime_ms_per_img"] / row["torchscript_ms_per_img"], 3)
            rows.append(row)
            print(f"{size:>5} px  batch {batch}:  TorchScript {row['torchscript_ms_per_img']:>9.1f} ms/img "
                  f"{row['torchscript_spread_ms']}   ONNX Runtime {row['onnxruntime_ms_per_img']:>9.1f} ms/img "
                  f"{row['onnxruntime_spread_ms']}   ratio {row['onnx_over_torchscript']:.2f}   max |logit diff| {gap:.1e}",
                  flush=True)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "onnxruntime": ort.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
