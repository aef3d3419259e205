"""What fine-tuning on a few corrected micrographs buys (the napari Fine-tune widget's path:
evaluate.apply.corrections.save_pair, then finetune from the packaged model), measured on real labels.

K micrographs of K different focal series play the corrected ones (their human labels are the
corrections); the model is fine-tuned on them with the default guard and the cpu preset, and the
packaged model and the fine-tuned one are scored on every other micrograph not of those series,
with a paired per-image bootstrap interval of the pooled Jaccard difference.

    python benchmarks/bench_viewer_finetune.py --real path/to/images --k 5 --out /tmp/viewer_ft
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from evaluate import api
from evaluate.apply.corrections import finetune, save_pair
from evaluate.apply.predictor import Predictor
from grapheneseg.formats import read_micrograph
from grapheneseg.micrographs import find_pairs, read_label
from grapheneseg.splits import SERIES_PATTERN
from grapheneseg.stats import paired_pooled_bootstrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="folder of NAME.png + NAME_LABEL.png")
    parser.add_argument("--k", type=int, default=5, help="corrected micrographs (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="which series play the corrected ones")
    parser.add_argument("--out", required=True, help="work folder (pairs, checkpoint, result.json)")
    args = parser.parse_args()
    out = Path(args.out)
    pairs = find_pairs(Path(args.real))
    series = {name: re.sub(SERIES_PATTERN, "", name) for name, _, _ in pairs}
    rng = np.random.default_rng(args.seed)
    chosen_series = rng.choice(sorted(set(series.values())), args.k, replace=False).tolist()
    corrected = [next(n for n, _, _ in pairs if series[n] == s) for s in chosen_series]
    others = [n for n, _, _ in pairs if series[n] not in chosen_series]
    packaged = api.predictor(device="cpu")
    for name, image, label in pairs:
        if name in corrected:
            save_pair(packaged, read_micrograph(image), read_label(label)[0], out / "pairs", name, overwrite=True)
    model = out / "finetuned.ckpt"
    model.unlink(missing_ok=True)
    start = time.perf_counter()
    summary = finetune(out / "pairs", model, device="cpu")
    seconds = time.perf_counter() - start
    before = packaged.score(Path(args.real), others)
    after = Predictor(model, packaged.cfg, "cpu").score(Path(args.real), others)
    gain = paired_pooled_bootstrap([after["counts"][n] for n in others], [before["counts"][n] for n in others],
                                   2000, 0)
    result = {"corrected": corrected, "n_scored": len(others), "finetune_seconds": round(seconds, 1),
              "guard": summary["message"], "packaged_jaccard": before["pooled"]["jaccard"],
              "finetuned_jaccard": after["pooled"]["jaccard"], "gain": gain}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
