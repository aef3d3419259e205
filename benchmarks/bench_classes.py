"""The four-class structure network (`train pretrain --task classes`) against the truth it was
made from and against the binary contamination model.

    python benchmarks/bench_classes.py --model CLASSES_CKPT --sim HELDOUT.h5 [--real DIR]
        [--binary grapheneseg/models/sim_default.ckpt] [--json]

Simulated part (`--sim`, held-out structures: a seed no training file holds, e.g.
`simulate generate --n 96 --seed 7`): every image at its own 256 px, the argmax class map of the
network against the file's `classes`: IoU per class pooled over the images; boundary precision and
recall within 3 A (a predicted boundary pixel counts when a true boundary pixel lies within 3 A,
and the reverse); each also per defocus bin (6 bins over the file's defocus range). Also the
classical orientation map's grain count (evaluate.apply.structure with the true contamination as
its mask) against the structure's number of grains (meta `n_grains`; grains cut by the field of
view or hidden under contamination count too, so exact agreement is a lower bound).

Real part (`--real`, the labelled micrographs, labels say contamination or not): the
contamination channel's pooled Jaccard zero-shot, beside the binary model's (`--binary`, default the
packaged sim_default.ckpt) on the same images, each model scored as `evaluate score` scores it
(the Predictor, evaluate.apply.predictor: pixel size from the lattice, resampled outside the
model's recorded pixel range; before, both were scored at the native scale), and the
per-image Jaccard difference with its paired bootstrap 95 % interval over images. On the
grain-boundary micrographs (`*_GrGB_*`), the network's boundary pixels against the orientation
map's boundary lines (evaluate.analysis.orientation via evaluate.apply.structure at the lattice reading):
the share of each within 5 px of the other, both ways.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from evaluate.apply.predictor import Predictor
from evaluate.apply.scale import Scale, ScaleSource
from evaluate.apply.structure import structure_of
from grapheneseg.config import load_config
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess
from grapheneseg.stats import paired_bootstrap
from simulate.dataset import open_dataset
from grapheneseg.classes import BOUNDARY, CLASS_NAMES
from grgb_measures import near  # a sibling script module (benchmarks/ is on the path when a script runs)

TOLERANCE_A = 3.0  # boundary precision / recall tolerance
NEAR_PX = 5  # GrGB: network boundary vs orientation boundary


@torch.inference_mode()
def class_maps(models, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """Argmax class maps (N, H, W) of raw `images` (N, H, W) by the mean softmax of `models`."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.stack([preprocess(im) for im in images[start:start + batch]]))[:, None]
        prob = sum(torch.softmax(m(x).float(), 1) for m in models) / len(models)
        out.append(prob.argmax(1).numpy())
    return np.concatenate(out)


def simulated(models, path: Path) -> dict:
    with open_dataset(path) as f:
        images, truth, meta = f["images"][:], f["classes"][:], f["meta"][:]
    pred = class_maps(models, images)
    edges = np.linspace(meta["defocus"].min(), meta["defocus"].max() + 1e-9, 7)

    def summary(idx: np.ndarray) -> dict:
        iou = {}
        for k, name in enumerate(CLASS_NAMES):
            inter = np.sum((pred[idx] == k) & (truth[idx] == k))
            union = np.sum((pred[idx] == k) | (truth[idx] == k))
            iou[name] = float(inter / union) if union else float("nan")
        hits = np.zeros(4, int)
        for i in idx:
            tol = TOLERANCE_A / float(meta["pixel_size"][i])
            p, t = pred[i] == BOUNDARY, truth[i] == BOUNDARY
            hits += [*near(p, t, tol), *near(t, p, tol)]
        return {"n": int(len(idx)), "iou": iou, "boundary_precision": hits[0] / max(hits[1], 1),
                "boundary_recall": hits[2] / max(hits[3], 1)}

    grain_counts = []  # the orientation map's grain count (true contamination as mask) vs the structure's
    for i in range(len(images)):
        s = structure_of(images[i], truth[i] == 1, Scale(float(meta["pixel_size"][i]), ScaleSource.SIMULATED))
        grain_counts.append((s.grains.labels.max() if s.grains is not None else 0, int(meta["n_grains"][i])))
    found, true = np.array(grain_counts).T
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        idx = np.nonzero((meta["defocus"] >= lo) & (meta["defocus"] < hi))[0]
        if len(idx):
            bins.append({"defocus_A": [round(float(lo), 1), round(float(hi), 1)], **summary(idx)})
    return {"all": summary(np.arange(len(images))), "by_defocus": bins,
            "grain_count_exact": float(np.mean(found == true)), "grain_count_within_one": float(np.mean(abs(found - true) <= 1))}


def real(four_class: Predictor, binary: Predictor, folder: Path) -> dict:
    data = load_labelled(folder)
    per = {}
    for name, predictor in (("classes", four_class), ("binary", binary)):
        scored = predictor.score(folder)
        per[name] = {"pooled": scored["pooled"]["jaccard"],
                     "images": {n: scored["scores"][n]["jaccard"] for n in data.names}}
    result = {k: v["pooled"] for k, v in per.items()}
    result["classes_minus_binary"] = paired_bootstrap(per["classes"]["images"], per["binary"]["images"])
    gb = [i for i, n in enumerate(data.names) if "_GrGB_" in n]
    maps = class_maps(four_class.models, np.stack([data.images[i] for i in gb])) if gb else []
    net_hits, orient_hits = np.zeros(2, int), np.zeros(2, int)
    for i, classes in zip(gb, maps):
        s = structure_of(data.images[i], data.masks[i], None, path=data.names[i])  # scale: the lattice reading
        lines = s.grains.boundary if s.grains is not None else np.zeros(classes.shape, bool)
        network = classes == BOUNDARY
        net_hits += near(network, lines, NEAR_PX)
        orient_hits += near(lines, network, NEAR_PX)
    result["grgb"] = {"images": len(gb), "network_boundary_near_orientation_lines": net_hits[0] / max(net_hits[1], 1),
                      "orientation_lines_near_network_boundary": orient_hits[0] / max(orient_hits[1], 1),
                      "network_boundary_px": int(net_hits[1]), "orientation_line_px": int(orient_hits[1])}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the classes checkpoint")
    parser.add_argument("--sim", type=Path, help="held-out simulated HDF5 file")
    parser.add_argument("--real", type=Path, help="labelled real folder")
    parser.add_argument("--binary", type=Path, help="binary contamination model (default: the packaged one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    apply_cfg = load_config("evaluate").apply
    classes = Predictor(args.model, apply_cfg, "cpu", task="classes")
    result = {}
    if args.sim:
        result["sim"] = sim = simulated(classes.models, args.sim)
        print(f"held-out simulations ({sim['all']['n']}): IoU " + ", ".join(
            f"{k} {v:.3f}" for k, v in sim["all"]["iou"].items())
              + f"; boundary precision {sim['all']['boundary_precision']:.3f}, recall "
              f"{sim['all']['boundary_recall']:.3f} (within {TOLERANCE_A} A)")
        print(f"  grain count of the orientation map (true contamination as its mask) equals the structure's in "
              f"{sim['grain_count_exact']:.2f} of the images, within one in {sim['grain_count_within_one']:.2f}")
        for b in sim["by_defocus"]:
            print(f"  defocus {b['defocus_A'][0]:7.1f} to {b['defocus_A'][1]:7.1f} A ({b['n']}): IoU "
                  + " ".join(f"{v:.2f}" for v in b["iou"].values())
                  + f"; boundary P {b['boundary_precision']:.2f} R {b['boundary_recall']:.2f}")
    if args.real:
        binary = Predictor(args.binary, apply_cfg, "cpu")  # None: the packaged contamination model
        result["real"] = r = real(classes, binary, args.real)
        d = r["classes_minus_binary"]
        print(f"real ({d['n_images']}): contamination Jaccard pooled, classes {r['classes']:.3f} vs binary "
              f"{r['binary']:.3f}; per image classes - binary {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
        g = r["grgb"]
        print(f"grain-boundary micrographs ({g['images']}): network boundary within {NEAR_PX} px of an orientation "
              f"line {g['network_boundary_near_orientation_lines']:.2f}, orientation lines within {NEAR_PX} px of the "
              f"network boundary {g['orientation_lines_near_network_boundary']:.2f}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
