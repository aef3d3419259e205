"""CPU inference backends for the packaged U-Net: the tool's TorchScript (batch norm folded,
channels-last, frozen: train.models.runtime.load_models) against ONNX Runtime on the same network,
in ms per image at batch 1 and 8, 256 px and 2048 px, one thread each.

    taskset -c 1 python benchmarks/bench_backend.py [--repeats 5] [--sizes 256 2048] [--batches 1 8]
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_backend.py --folder DIR [--repeats 3]

Both run the network alone on preprocessed input (the preprocessing is the same NumPy code for
either). The ONNX model is exported from the same eval-mode module (opset 17) and run with
graph optimisations on (ORT_ENABLE_ALL), 1 intra-op thread, CPUExecutionProvider. Each figure is
the median over `--repeats` timed runs after one warm-up, the two backends interleaved so that
load from other processes affects both alike. Prints a table and, with --json, one JSON line.
The ONNX session is the tool's own `--backend onnx` one (train.models.onnx.for_onnx: the one
exporter, export_onnx, at ONNX_OPSET; intra-op threads = torch's, set to 1 here).

With --folder, the tool's own path instead: `evaluate predict`'s per-file segmentation
(evaluate.apply.predictor.Predictor.segment: scale, resample, preprocess, network, OOD check; no
files written) of every micrograph in DIR by a Predictor(backend=torchscript | onnx),
the two backends interleaved file by file (each first on every other file), `--repeats` passes; prints the model load seconds and,
per backend, the seconds of all segmentations and of the network calls alone (median pass).
The load seconds are now those of building the Predictor (models loaded, pixel range resolved).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
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
    parser.add_argument("--folder", help="time evaluate predict's segmentation of this folder with each backend")
    args = parser.parse_args()
    if args.folder:
        return folder_main(args)

    from grapheneseg.preprocessing import preprocess
    from train.models.checkpoints import load_model
    from train.models.onnx import for_onnx, onnxruntime_module
    from train.models.registry import packaged
    from train.models.runtime import load_models

    ort = onnxruntime_module()
    torch.set_num_threads(1)
    path = Path(args.model) if args.model else packaged("contamination")
    scripted = load_models(path, "cpu")[0]
    onnx_model = for_onnx(load_model(path)[0].eval())  # 1 intra-op thread: torch.get_num_threads()
    session = onnx_model.session

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
                return session.run(None, {onnx_model.input_name: x})[0]

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


class _Timed:
    """A loaded model that adds the seconds of its calls to `seconds`."""

    def __init__(self, model):
        self.model, self.depth, self.device, self.seconds = model, model.depth, model.device, 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - start
        return out


def folder_main(args: argparse.Namespace) -> None:
    from evaluate.apply.predictor import Predictor
    from evaluate.apply.segment import Refused, input_files
    from grapheneseg.config import load_config
    from grapheneseg.formats import read_micrograph
    from train.models.registry import packaged
    from train.models.runtime import BACKENDS

    path = Path(args.model) if args.model else packaged("contamination")
    cfg = load_config("evaluate").apply
    predictors, models, load_s = {}, {}, {}
    for backend in BACKENDS:
        start = time.perf_counter()
        predictors[backend] = Predictor(path, cfg, "cpu", backend=backend)
        load_s[backend] = round(time.perf_counter() - start, 2)
        predictors[backend].models = models[backend] = [_Timed(m) for m in predictors[backend].models]
    micrographs = [read_micrograph(f) for f in input_files([Path(args.folder)])]
    passes: dict[str, list[tuple[float, float]]] = {b: [] for b in BACKENDS}
    for _ in range(args.repeats):
        total = dict.fromkeys(BACKENDS, 0.0)
        for m in models.values():
            m[0].seconds = 0.0
        for i, micrograph in enumerate(micrographs):
            for backend in BACKENDS[::1 if i % 2 else -1]:  # each backend first on every other file
                start = time.perf_counter()
                try:
                    predictors[backend].segment(micrograph)
                except Refused:
                    pass
                total[backend] += time.perf_counter() - start
        for backend in BACKENDS:
            passes[backend].append((total[backend], sum(m.seconds for m in models[backend])))
    n = len(micrographs)
    result = {"images": n, "threads": torch.get_num_threads(), "load_s": load_s}
    for backend in BACKENDS:
        seg_s, net_s = sorted(passes[backend])[len(passes[backend]) // 2]
        result[backend] = {"segment_s": round(seg_s, 2), "network_s": round(net_s, 2),
                           "ms_per_img": round(1000 * seg_s / n, 1), "network_ms_per_img": round(1000 * net_s / n, 1)}
        print(f"{backend:>11}: load {load_s[backend]:.2f} s; {n} images: segment {seg_s:.2f} s "
              f"({1000 * seg_s / n:.1f} ms/img), of which network {net_s:.2f} s ({1000 * net_s / n:.1f} ms/img)",
              flush=True)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
