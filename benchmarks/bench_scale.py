"""Any scale, no pixel size in the file: real micrographs rescaled, written as bare TIFFs, predicted.

    python benchmarks/bench_scale.py [--model CKPT_OR_RUN_DIR] [--real DIR]
        [--names NAME ...] [--n N] [--factors 0.5 1 2 4 8] [--device auto] [--pixel-size A]

Each chosen labelled micrograph is upsampled (cubic spline, as a finer recording would be seen
after interpolation) or downsampled (anti-aliased) by each factor, written as a float32 TIFF with
no pixel size (tifffile: no calibration tags) and segmented exactly as `evaluate predict` does
(`evaluate.apply.predictor.Predictor.segment_files`, pixel size from the lattice). Printed per
image and factor: the pixel size read against the expected one (the lattice reading of the original
256 px image divided by the factor: the files carry no calibration, so this checks the reader's
consistency across scales, not an absolute scale), the mask's contamination fraction against the
label's (label resampled the same way, nearest neighbour up, area-weighted down) and the Jaccard
index of the mask against that label. Without --model the packaged default model is used. Prints
one JSON line last; `--n` > 1 adds, per factor, the share of images within the tolerances, the
Jaccard index (mean over images and pooled over pixels) and the Spearman rank correlation of
predicted and labelled contamination fractions (the sorting key).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from evaluate.apply.predictor import Predictor  # noqa: E402
from evaluate.apply.scale import resample  # noqa: E402
from grapheneseg.lattice import read_pixel_size  # noqa: E402
from grapheneseg.config import default_real_dir, load_config  # noqa: E402
from grapheneseg.formats import read_micrograph  # noqa: E402
from grapheneseg.metrics import confusion, pooled, scores  # noqa: E402
from grapheneseg.micrographs import load_labelled  # noqa: E402
from train.models.registry import packaged  # noqa: E402

DEFAULT_NAME = "2013_1114_Gr_112"  # label fraction 0.255, lattice reading 0.385 A/px (the target)
FRACTION_TOL, SCALE_TOL = 0.05, 0.10


def rescale(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) at `factor` times the sampling: cubic spline / nearest up, anti-aliased down."""
    if factor >= 1:
        label = scipy.ndimage.zoom(mask.astype(np.uint8), factor, order=0) > 0
        return scipy.ndimage.zoom(image, factor, order=3), label
    shape = tuple(int(round(n * factor)) for n in image.shape)
    return resample(image, shape), resample(mask.astype(np.float32), shape) > 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint or run folder (default: the packaged default model)")
    parser.add_argument("--real", default=str(default_real_dir()))
    parser.add_argument("--names", nargs="+", help=f"images of --real (default {DEFAULT_NAME}, or the first --n)")
    parser.add_argument("--n", type=int, help="the first N images of --real instead of --names")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 1, 2, 4, 8])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pixel-size", type=float, help="give this A/px instead of reading the lattice "
                                                         "(at factor 1 only: 0.385 segments at the native scale)")
    args = parser.parse_args()
    import tifffile

    model = Path(args.model) if args.model else packaged("contamination")
    predictor = Predictor(model, load_config("evaluate").apply, args.device)
    data = load_labelled(Path(args.real))
    names = data.names[: args.n] if args.n else (args.names or [DEFAULT_NAME])
    rows = []
    print(f"model {model}; expected pixel size = lattice reading at 256 px / factor")
    print(f"{'image':32s} {'factor':>6s} {'size':>10s} {'A/px read':>9s} {'expected':>8s} {'err':>6s} "
          f"{'source':>8s} {'mask frac':>9s} {'label':>6s} {'diff':>6s} {'Jaccard':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            i = data.names.index(name)
            native = read_pixel_size(data.images[i])
            paths, labels = [], []
            for factor in args.factors:
                image, label = rescale(data.images[i], data.masks[i], factor)
                path = Path(tmp) / f"{name}_x{factor:g}.tif"
                tifffile.imwrite(path, image.astype(np.float32))
                assert read_micrograph(path).pixel_size is None, "the TIFF must not carry a pixel size"
                paths.append(path)
                labels.append(label)
            results, failed = predictor.segment_files(paths, given=args.pixel_size, progress=False)
            assert not failed, failed
            for factor, seg, label in zip(args.factors, results, labels):
                expected = native / factor if native else None
                err = None if seg.pixel_size is None or expected is None else seg.pixel_size / expected - 1
                row = {"image": name, "factor": factor, "shape": list(seg.mask.shape), "pixel_read": seg.pixel_size,
                       "pixel_expected": expected, "pixel_rel_err": err, "source": str(seg.pixel_size_source),
                       "fraction": seg.contamination_fraction, "label_fraction": float(label.mean()),
                       "jaccard": scores(confusion(seg.mask, label))["jaccard"], "seconds": seg.seconds,
                       "counts": confusion(seg.mask, label).tolist()}
                row["fraction_ok"] = abs(row["fraction"] - row["label_fraction"]) <= FRACTION_TOL
                row["scale_ok"] = err is not None and abs(err) <= SCALE_TOL
                rows.append(row)
                print(f"{name[:32]:32s} {factor:6g} {'x'.join(map(str, seg.mask.shape)):>10s} "
                      f"{seg.pixel_size or float('nan'):9.4f} {expected or float('nan'):8.4f} "
                      f"{float('nan') if err is None else err:+6.3f} {str(seg.pixel_size_source):>8s} {row['fraction']:9.3f} "
                      f"{row['label_fraction']:6.3f} {row['fraction'] - row['label_fraction']:+6.3f} {row['jaccard']:7.3f}")
    summary = {"model": str(model), "n_images": len(names), "factors": args.factors, "rows": rows}
    if len(names) > 1:
        summary["by_factor"] = {}
        for f in args.factors:
            at = [r for r in rows if r["factor"] == f]
            v = summary["by_factor"][f"{f:g}"] = {
                "fraction_within_0.05": float(np.mean([r["fraction_ok"] for r in at])),
                "pixel_within_10pct": float(np.mean([r["scale_ok"] for r in at])),
                "mean_jaccard": float(np.mean([r["jaccard"] for r in at])),
                "pooled_jaccard": pooled([np.array(r["counts"]) for r in at])["jaccard"],
                "spearman_fraction": float(spearmanr([r["fraction"] for r in at], [r["label_fraction"] for r in at])[0])}
            print(f"factor {f:g}: contamination fraction within {FRACTION_TOL} in {v['fraction_within_0.05']:.0%} "
                  f"of images, pixel size within 10% in {v['pixel_within_10pct']:.0%}; Jaccard "
                  f"{v['mean_jaccard']:.3f} (mean over images), {v['pooled_jaccard']:.3f} (pooled over pixels); "
                  f"Spearman of predicted vs labelled fractions {v['spearman_fraction']:.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
