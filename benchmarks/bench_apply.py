"""Large micrographs end to end, and the choice between resampling and native-scale tiles.

    python benchmarks/bench_apply.py --model CKPT_OR_RUN_DIR [--real DIR] [--n 20] [--size 2048]

1. Speed: a 2048x2048 TIFF (a real 256 px micrograph upsampled 8x, pixel size in the file) is read,
   resampled, segmented and written back at full size; seconds per image and peak memory.
2. Strategy: the first N real labelled images, upsampled 4x (as if recorded at 4x finer sampling),
   are segmented (a) by resampling to the trained pixel size (what `evaluate predict` does) and
   (b) by 256 px tiles at the native fine scale; pooled Jaccard of both against the upsampled labels.

Both parts segment through the Predictor (evaluate.apply.predictor), so the resampling target is
the model's recorded pixel range and its middle (as `evaluate predict`), not the 0.28-0.50 A/px
fallback the unresolved apply config gave before.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402

from evaluate.apply.predictor import Predictor  # noqa: E402
from evaluate.apply.segment import write_predictions  # noqa: E402
from grapheneseg.config import default_real_dir, load_config  # noqa: E402
from grapheneseg.formats import Micrograph, read_micrograph  # noqa: E402
from grapheneseg.metrics import confusion, pooled  # noqa: E402
from grapheneseg.micrographs import load_labelled  # noqa: E402
from train.models.runtime import tiled_probability  # noqa: E402
from grapheneseg.preprocessing import preprocess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--real", default=str(default_real_dir()))
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    import rsciio.tiff
    import torch

    torch.set_num_threads(2)
    predictor = Predictor(Path(args.model), load_config("evaluate").apply)
    cfg = predictor.cfg  # pixel_range and target_pixel_size resolved for the model
    data = load_labelled(Path(args.real))
    result: dict = {}

    factor = args.size / 256
    big = scipy.ndimage.zoom(data.images[0], factor, order=3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.tif"
        axes = [{"name": n, "size": args.size, "scale": 0.038 / factor, "offset": 0.0, "units": "nm",
                 "navigate": False} for n in ("y", "x")]
        rsciio.tiff.file_writer(str(path), {"data": big.astype(np.float32), "axes": axes,
                                            "metadata": {}, "original_metadata": {}})
        times = []
        for _ in range(3):
            start = time.perf_counter()
            seg = predictor.segment(read_micrograph(path))
            write_predictions([seg], Path(tmp) / "out")
            times.append(time.perf_counter() - start)
    result["large"] = {"size": args.size, "seconds_per_image": float(np.median(times)),
                       "pixel_size_A": seg.pixel_size, "mask_shape": list(seg.mask.shape)}
    print(f"{args.size}x{args.size} TIFF end to end (read, resample, segment, write): "
          f"{np.median(times):.2f} s per image (median of 3)")

    counts = {"resample": [], "native_tiles": []}
    for image, mask in list(zip(data.images, data.masks))[: args.n]:
        up = scipy.ndimage.zoom(image, 4, order=3)
        up_mask = scipy.ndimage.zoom(mask.astype(np.float32), 4, order=1) > 0.5
        seg = predictor.segment(Micrograph(Path("x"), up, 0.38 / 4))
        counts["resample"].append(confusion(seg.mask, up_mask))
        prob = tiled_probability(predictor.models, preprocess(up), cfg.tile, cfg.overlap, cfg.batch_size)
        counts["native_tiles"].append(confusion(prob > cfg.threshold, up_mask))
    result["strategy_jaccard"] = {k: pooled(v)["jaccard"] for k, v in counts.items()}
    result["peak_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pooled Jaccard on {args.n} real images upsampled 4x: " + ", ".join(
        f"{k} {v:.3f}" for k, v in result["strategy_jaccard"].items()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
