"""Candidate contamination models against the packaged one on the labelled micrographs, the way a
new default must be judged: pooled Jaccard of each, and the paired difference with its bootstrap
95 % interval resampling whole focal series (frames of one series are near-copies; the image-wise
interval is printed beside it). A zero-shot model never trains on the real images, so its score on
all of them is already its series-grouped CV score.

    python benchmarks/bench_models.py --real DIR --model f16=A.ckpt --model ens=B.ckpt,C.ckpt
        [--versus CKPT] [--adapt-bn] [--time 20] [--threads 1] [--json OUT] [--figure OUT.png]

`--model NAME=PATH[,PATH...]`: a checkpoint, or several separated by commas (an ensemble: the mean
of their probabilities, as `evaluate predict --model A --model B`). `--versus`: the reference
(default: the packaged model). `--time N`: median wall ms of `Predictor.segment` over N micrographs
(after one warm-up) at `--threads` torch threads: the whole per-image path (scale, plan, network,
mask, OOD check).

`--figure`: each model's pooled Jaccard, with the series-resampled 95 % interval of its paired
difference to the reference drawn around it (reference's Jaccard + the interval), in the order given.

`--adapt-bn` tries test-time adaptation to a lab's own micrographs: for each of the 5
series-grouped folds (the report's), every model's batch-norm statistics are re-estimated on the
fold's test micrographs (their images only, never their labels; AdaBN, Li et al. 2016), and the
adapted model is scored on them; pooled over folds and paired against the same model unadapted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluate import api
from evaluate.apply.predictor import Predictor
from evaluate.apply.scale import decide_scale
from grapheneseg.formats import read_micrograph
from grapheneseg.metrics import pooled
from grapheneseg.micrographs import find_pairs
from grapheneseg.preprocessing import preprocess
from grapheneseg.splits import kfold_splits, series_of
from grapheneseg.stats import paired_pooled_bootstrap
from train.models.checkpoints import load_model, read_checkpoint
from train.models.registry import packaged


def compare(counts: dict[str, list[int]], reference: dict[str, list[int]], names: list[str]) -> dict[str, Any]:
    """Paired pooled-Jaccard difference, series resampled and (for comparison) images resampled."""
    a, b = [counts[n] for n in names], [reference[n] for n in names]
    grouped = paired_pooled_bootstrap(a, b, 4000, 0, groups=[series_of(n) for n in names])
    images = paired_pooled_bootstrap(a, b, 4000, 0)
    return {**grouped, "image_wise": [images["low"], images["high"]]}


def adapted_checkpoint(path: Path, images: list[np.ndarray], out: Path) -> Path:
    """A copy of checkpoint `path` whose batch-norm running statistics are re-estimated from
    `images` (network inputs, preprocessed, one forward pass each; cumulative averages)."""
    model, payload = load_model(path)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise SystemExit(f"{path}: no batch-norm layers to adapt")
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    multiple = 2 ** (model.depth - 1) * 4
    with torch.no_grad():
        for image in images:
            h, w = (s - s % multiple for s in image.shape)
            model(torch.from_numpy(np.ascontiguousarray(image[:h, :w]))[None, None])
    payload = dict(payload, state_dict=model.eval().state_dict())
    torch.save(payload, out)
    return out


def adapt_bn(paths: list[Path], real: Path, names: list[str], cfg: Any, work: Path) -> dict[str, list[int]]:
    """Per-image counts of `paths` (one model or an ensemble) adapted on each series-grouped test fold."""
    files = {name: image for name, image, _ in find_pairs(real)}
    plain = Predictor(paths, cfg, "cpu")
    counts: dict[str, list[int]] = {}
    for split in kfold_splits(names, 5, 1, 12345, "series"):
        test = split["test"]
        inputs = []
        for name in test:
            micrograph = read_micrograph(files[name])
            inputs.append(preprocess(plain.plan(micrograph, decide_scale(micrograph))))
        adapted = [adapted_checkpoint(p, inputs, work / f"fold{split['fold']}_{i}.ckpt") for i, p in enumerate(paths)]
        counts.update(Predictor(adapted, cfg, "cpu").score(real, test)["counts"])
    return counts


def time_per_image(predictor: Predictor, real: Path, n: int) -> float:
    """Median wall ms of `segment` over the first `n` micrographs (one warm-up first)."""
    micrographs = [read_micrograph(image) for _, image, _ in find_pairs(real)[:n + 1]]
    predictor.segment(micrographs[0])
    times = []
    for micrograph in micrographs[1:]:
        start = time.perf_counter()
        predictor.segment(micrograph)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def figure(result: dict[str, Any], out: Path) -> None:
    """Pooled Jaccard per model with the paired interval against the reference around it."""
    from matplotlib.figure import Figure

    names = list(result["models"])
    reference = result["models"]["reference"]["jaccard"]
    fig = Figure(figsize=(8.6, 0.45 * len(names) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    for y, name in enumerate(names):
        entry = result["models"][name]
        diff = entry["minus_reference"]
        ax.plot([reference + diff["low"], reference + diff["high"]], [y, y], color="0.4", lw=2)
        ax.plot(entry["jaccard"], y, "o", color="C3" if diff["excludes_zero"] else "C0")
    ax.axvline(reference, color="0.6", ls="--", lw=1)
    labels = [f"reference: {Path(result['models'][n]['paths'][0]).name}" if n == "reference" else n for n in names]
    ax.set_yticks(range(len(names)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"pooled Jaccard on {result['models']['reference']['minus_reference']['n_images']} labelled "
                  "micrographs\n(bar: paired 95 % interval vs the reference, series resampled; red: excludes 0)")
    fig.savefig(out, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, type=Path, help="folder of NAME.png + NAME_LABEL.png")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH[,PATH...]")
    parser.add_argument("--versus", type=Path, help="reference checkpoint (default: the packaged model)")
    parser.add_argument("--adapt-bn", action="store_true", help="also score each model adapted per test fold")
    parser.add_argument("--time", type=int, default=0, metavar="N", help="time segment() over N micrographs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--figure", type=Path, help="draw the comparison here (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = api.apply_config()[0]
    versus = args.versus or packaged("contamination")
    models = {"reference": [versus]}
    for spec in args.model:
        name, _, paths = spec.partition("=")
        models[name] = [Path(p) for p in paths.split(",")]
    result: dict[str, Any] = {"real": str(args.real), "reference": str(versus), "models": {}}
    reference = None
    with tempfile.TemporaryDirectory() as work:
        for name, paths in models.items():
            for path in paths:
                read_checkpoint(path)  # a clear error before any work
            predictor = Predictor(paths, cfg, "cpu")
            scored = predictor.score(args.real, progress=True)
            names = sorted(scored["counts"])
            reference = reference or scored["counts"]
            entry = {"paths": [str(p) for p in paths], "jaccard": scored["pooled"]["jaccard"],
                     "precision": scored["pooled"]["precision"], "recall": scored["pooled"]["recall"],
                     "minus_reference": compare(scored["counts"], reference, names)}
            if args.time:
                entry["ms_per_image"] = round(time_per_image(predictor, args.real, args.time), 1)
            if args.adapt_bn:
                counts = adapt_bn(paths, args.real, names, cfg, Path(work))
                entry["adapted"] = {"jaccard": pooled([counts[n] for n in names])["jaccard"],
                                    "minus_unadapted": compare(counts, scored["counts"], names),
                                    "minus_reference": compare(counts, reference, names)}
            result["models"][name] = entry
            print(name, json.dumps(entry), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.figure:
        figure(result, args.figure)


if __name__ == "__main__":
    main()
