"""Structure maps (evaluate.apply.structure) against the simulator's structure truth, on the 16
grain-boundary micrographs of the public set, and their speed (docs/results/structure.md).

    simulate generate --n 48 --seed 4242 --out heldout_structure.h5
    python benchmarks/bench_structure.py sim --sim heldout_structure.h5 [--model CKPT] [--scale lattice] [--json OUT]
    GRAPHENESEG_REAL_DIR=PATH python benchmarks/bench_structure.py grgb --figure structure_grgb.png
    GRAPHENESEG_REAL_DIR=PATH python benchmarks/bench_structure.py vacuum
    taskset -c 1 python benchmarks/bench_structure.py time

`sim`: every image of a schema-3 simulated file (its structure truth: simulate.dataset.structure_truths)
through what `evaluate structure` does: the contamination mask of the segmentation model (the
Predictor, default the packaged model, as `evaluate structure`), then `structure_of` with the
`structure_maps` options of configs/evaluate.yaml, at the simulation's pixel size (`--scale
lattice`: at the lattice reading, as for a file without calibration). Scored by
evaluate.benchmark.structure_truth, pooled and by defocus bin (6 bins over the file's defocus
range): IoU per class, boundary-line precision and recall within 3 A, the share of images whose
grain count is exact (against all true grains, every piece in the field however small or hidden;
and against the visible ones: at least 2.9 nm^2 of lattice outside contamination and vacuum, four
window areas, `min_grain_px`), the median orientation
error per matched grain (degrees mod 60, the smaller way round).
`--methods previous` also scores the former defaults (`PREVIOUS`) the same way on the same masks.
`--vacuum-oracle` also scores vacuum with each image's best `vacuum_fraction` among `ORACLE_FRACTIONS`,
chosen with the truth's help (everything else as `evaluate structure`): the ceiling of any rule
that thresholds the {100} ring power image by image, with no truth to choose by.

`vacuum`: the vacuum share on every labelled real micrograph (no truth; a check against false
vacuum in weakly imaged lattice) and the micrographs with the most.

`grgb`: per `*_GrGB_*` micrograph: the lattice reading and its check, grains, boundary length and
share of boundary class, with the human contamination label as the mask (the classical maps need a
mask; `evaluate predict` gives the network's); a figure of six (micrograph, orientation map with
boundaries, four classes). `time`: seconds per image for the whole structure output
(`structure_of` + the two PNGs + tables) on one 256 px real micrograph and on a 2048 px one (the
same micrograph upsampled 8x, spline), medians of 3.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.ndimage

from evaluate.analysis.orientation import lattice_and_vacuum, orientation_map
from evaluate.apply.scale import Scale, ScaleSource, decide_scale
from evaluate.apply.structure import classes_rgb, draw_orientation, structure_of, structure_row, write_classes, \
    write_orientation, write_tables
from evaluate.benchmark.structure_truth import TOLERANCE_A, score_image, summarise
from grapheneseg.classes import VACUUM
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess


def evaluate_method(image: np.ndarray, mask: np.ndarray, scale: Scale, cfg) -> dict:
    """What `evaluate structure` gives: class map, boundary lines, grain labels and orientations."""
    s = structure_of(image, mask, scale, cfg=cfg)
    if s.grains is None:
        empty = np.zeros(image.shape, int)
        return {"classes": s.classes, "lines": empty.astype(bool), "grains": empty, "orientation": {}, "structure": s}
    return {"classes": s.classes, "lines": s.grains.boundary, "grains": s.grains.labels,
            "orientation": s.grains.orientation, "structure": s}


# `evaluate structure`'s former defaults, before they were chosen on held-out simulations against
# their truth (seed 4242, every second image; checked on seed 5151): `--methods previous` scores them
PREVIOUS = {"jump_deg": 5.0, "merge_deg": 3.0, "min_grain_windows": 4.0, "vacuum_window_periods": 2.0}


def previous_method(image: np.ndarray, mask: np.ndarray, scale: Scale, cfg) -> dict:
    """`evaluate structure` at its former defaults (`PREVIOUS`): a 5 degree jump, 3 degree merge,
    4-window smallest grain and vacuum from the 2-period orientation map."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return evaluate_method(image, mask, scale, {**plain, **PREVIOUS})


METHODS = {"evaluate": evaluate_method, "previous": previous_method}


VISIBLE_WINDOWS = 4.0  # a visible grain shows at least this many window areas (2.9 nm^2) of lattice


def min_grain_px(pixel_size: float, cfg) -> int:
    """The smallest visible grain (`VISIBLE_WINDOWS` window areas), in px at `pixel_size`."""
    from grapheneseg import GRAPHENE_D100

    window = float(cfg.get("window_periods", 2.0)) * GRAPHENE_D100 / pixel_size
    return int(np.ceil(VISIBLE_WINDOWS * (2 * window) ** 2))


ORACLE_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)  # `--vacuum-oracle`: vacuum_fraction choices


def vacuum_counts(image: np.ndarray, mask: np.ndarray, scale: Scale, true_classes: np.ndarray, cfg) -> np.ndarray:
    """(len(ORACLE_FRACTIONS), 2): the vacuum's intersection and union with the truth at each
    fraction, the rest as `evaluate structure` (its vacuum map, reference and growth)."""
    true = true_classes == VACUUM
    if not scale.pixel_size:  # no vacuum is called without a pixel size
        return np.array([(0, int(true.sum()))] * len(ORACLE_FRACTIONS))
    sharp = orientation_map(image, scale.pixel_size, float(cfg.vacuum_window_periods))
    rows = []
    for fraction in ORACLE_FRACTIONS:
        _, vacuum = lattice_and_vacuum(sharp, mask, fraction, float(cfg.vacuum_reference_confidence),
                                       float(cfg.vacuum_grow_A))
        rows.append((int((vacuum & true).sum()), int((vacuum | true).sum())))
    return np.array(rows)


def best_pooled_iou(counts: list[np.ndarray]) -> float:
    """The highest pooled IoU over one choice per image (rows of `vacuum_counts`): Dinkelbach's
    iteration, each image taking argmax(intersection - ratio * union) until the ratio is stable."""
    ratio = 0.0
    for _ in range(100):
        picks = np.array([c[np.argmax(c[:, 0] - ratio * c[:, 1])] for c in counts])
        new = picks[:, 0].sum() / picks[:, 1].sum() if picks[:, 1].sum() else float("nan")
        if not new > ratio + 1e-12:
            return float(new)
        ratio = new
    return float(ratio)


def simulated(path: Path, model: Path | None, lattice_scale: bool, methods: list[str],
              vacuum_oracle: bool = False) -> dict:
    """Per method: the pooled summary and one per defocus bin (module doc); with `vacuum_oracle`,
    the vacuum IoU with each image's best fraction beside the configured one's."""
    from evaluate.apply.predictor import Predictor
    from grapheneseg.config import load_config
    from grapheneseg.formats import Micrograph
    from simulate.dataset import open_dataset, require_truth, structure_truths

    cfg = load_config("evaluate")
    predictor = Predictor(model, cfg.apply, "cpu")
    maps_cfg = cfg.structure_maps
    with open_dataset(path) as f:
        require_truth(f, path)
        images, true_classes, meta = f["images"][:], f["classes"][:], f["meta"][:]
        truths = structure_truths(f, 0, len(images))
    scores = {m: [] for m in methods}
    seconds = {"segment": 0.0, **{m: 0.0 for m in methods}}
    rows, oracle = [], []
    for i, (image, truth) in enumerate(zip(images, truths)):
        micrograph = Micrograph(Path(f"{path.stem}_{i:05d}"), image, None)
        scale = decide_scale(micrograph) if lattice_scale else Scale(float(meta["pixel_size"][i]), ScaleSource.SIMULATED)
        start = time.perf_counter()
        mask = predictor.segment(micrograph, scale).mask
        seconds["segment"] += time.perf_counter() - start
        row = {"index": i, "defocus": float(meta["defocus"][i]), "pixel_size": float(meta["pixel_size"][i]),
               "scale": scale.pixel_size, "true_grains": truth.n_grains}
        for m in methods:
            start = time.perf_counter()
            out = METHODS[m](image, mask, scale, maps_cfg)
            seconds[m] += time.perf_counter() - start
            score = score_image(out["classes"], out["lines"], out["grains"], out["orientation"], truth,
                                true_classes[i], min_grain_px(truth.pixel_size, maps_cfg))
            scores[m].append(score)
            row[m] = {"grains": score.grains_pred, "visible": score.grains_visible, **score.boundary,
                      "orientation_errors": [round(e, 2) for e in score.orientation_errors]}
        rows.append(row)
        if vacuum_oracle:
            oracle.append(vacuum_counts(image, mask, scale, true_classes[i], maps_cfg))
    edges = np.linspace(meta["defocus"].min(), meta["defocus"].max() + 1e-9, 7)
    result = {"file": str(path), "images": len(images), "image_px": int(images.shape[-1]), "lattice_scale": lattice_scale,
              "seconds": {k: round(v, 1) for k, v in seconds.items()}, "methods": {}, "images_detail": rows}
    for m in methods:
        bins = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            idx = np.nonzero((meta["defocus"] >= lo) & (meta["defocus"] < hi))[0]
            bins.append({"defocus_A": [round(float(lo), 1), round(float(hi), 1)], **summarise([scores[m][k] for k in idx])})
        result["methods"][m] = {"all": summarise(scores[m]), "by_defocus": bins}
    if vacuum_oracle:
        by_bin = [[oracle[k] for k in np.nonzero((meta["defocus"] >= lo) & (meta["defocus"] < hi))[0]]
                  for lo, hi in zip(edges[:-1], edges[1:])]
        totals = np.sum(oracle, axis=0)  # (fractions, 2): intersection and union over all images
        result["vacuum_oracle"] = {"fractions": list(ORACLE_FRACTIONS), "configured": float(maps_cfg.vacuum_fraction),
                                   "fixed": {f"{f:g}": float(i / max(1, u)) for f, (i, u) in zip(ORACLE_FRACTIONS, totals)},
                                   "best_per_image": best_pooled_iou(oracle),
                                   "best_per_image_by_defocus": [best_pooled_iou(b) if b else float("nan") for b in by_bin]}
    return result


def print_table(result: dict) -> None:
    """Markdown table per method: pooled, then each defocus bin."""
    for m, r in result["methods"].items():
        print(f"\n### {m} ({result['images']} images of {result['image_px']} px, "
              f"{'lattice' if result['lattice_scale'] else 'true'} pixel size)\n")
        print("| defocus (A) | n | IoU lattice | contamination | vacuum | boundary | boundary P | R (3 A) "
              "| grains exact | exact (visible) | within 1 | orientation err median (deg) | matched grains |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label, s in [("all", r["all"])] + [(f"{b['defocus_A'][0]:.0f} to {b['defocus_A'][1]:.0f}", b)
                                                 for b in r["by_defocus"]]:
            if not s.get("n"):
                print(f"| {label} | 0 |" + " |" * 11)
                continue
            iou = s["iou"]
            print(f"| {label} | {s['n']} | {iou['lattice']:.3f} | {iou['contamination']:.3f} | {iou['vacuum']:.3f} | "
                  f"{iou['grain_boundary']:.3f} | {s['boundary_precision']:.3f} | {s['boundary_recall']:.3f} | "
                  f"{s['grain_count_exact']:.2f} | {s['grain_count_exact_visible']:.2f} | {s['grain_count_within_one']:.2f} | "
                  f"{s['orientation_error_median']:.2f} | {s['grains_matched']}/{s['grains_true']} |")
        by = r["all"]["boundary_recall_by_misorientation"]
        print("\nboundary recall by the true misorientation (deg): " + "; ".join(
            f"{k}: {v['recall']:.3f} ({v['share']:.0%} of the line)" for k, v in by.items()))
        print(f"grain count exact against the visible grains, those across boundaries under 3 deg as one: "
              f"{r['all']['grain_count_exact_visible_above_3deg']:.2f}")
    if "vacuum_oracle" in result:
        o = result["vacuum_oracle"]
        print(f"\nvacuum IoU at one fraction for all images (configured: {o['configured']:g}): "
              + ", ".join(f"{k}: {v:.3f}" for k, v in o["fixed"].items()))
        print(f"vacuum IoU with each image's best fraction (chosen with the truth): {o['best_per_image']:.3f}; by defocus bin: "
              + " ".join(f"{v:.3f}" for v in o["best_per_image_by_defocus"]))
    print(f"\nseconds: {result['seconds']}")


def grgb(real: Path, figure: Path | None, show: list[str] | None) -> None:
    data = load_labelled(real)
    chosen = [i for i, n in enumerate(data.names) if "_GrGB_" in n]
    results = []
    print("file | pixel A | check | grains | boundary nm | boundary class | vacuum | misorientations")
    for i in chosen:
        s = structure_of(data.images[i], data.masks[i], None, path=data.names[i])
        row = structure_row(s)
        mis = sorted(round(p["misorientation"], 1) for p in s.grains.pairs.values()) if s.grains else []
        print(f"{data.names[i]} | {row['pixel_size_A']} | {s.lattice_check} | {row['grains']} | "
              f"{row['boundary_length_nm']} | {row['grain_boundary_fraction']} | {row['vacuum_fraction']} | {mis}")
        results.append((i, s))
    if figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        picks = [(i, s) for i, s in results if show is None or data.names[i] in show][:6]
        fig, axes = plt.subplots(len(picks), 3, figsize=(12, 4 * len(picks)))
        for (i, s), ax in zip(picks, np.atleast_2d(axes)):
            ax[0].imshow(preprocess(data.images[i]), cmap="gray")
            ax[0].set_title(data.names[i], fontsize=8)
            ax[0].axis("off")
            draw_orientation(ax[1], data.images[i], s)
            ax[1].set_title(f"orientation (hue 0-60 deg), boundaries black: {len(s.grains.area) if s.grains else '?'} grains",
                            fontsize=8)
            ax[2].imshow(classes_rgb(s.classes), interpolation="nearest")
            ax[2].set_title("lattice white, boundary red, vacuum green, contamination (label) blue", fontsize=8)
            ax[2].axis("off")
        fig.tight_layout()
        fig.savefig(figure, dpi=80)
        print("figure:", figure)


def vacuum_on_real(real: Path, top: int = 6) -> None:
    """Vacuum `evaluate structure` calls on every labelled real micrograph, the human label as the
    contamination mask. The real set has no vacuum truth, but few of its micrographs show holes:
    a rule that raises the share broadly paints weakly imaged lattice (look at the top ones)."""
    data = load_labelled(real)
    rows = []
    for name, image, mask in zip(data.names, data.images, data.masks):
        s = structure_of(image, mask, None, path=name)
        if s.pixel_size:
            rows.append((float((s.classes == VACUUM).mean()), name, s.vacuum_check))
    shares = np.array([r[0] for r in rows])
    print(f"{len(rows)} of {len(data.names)} micrographs with a pixel size: mean vacuum share {shares.mean():.2%}, "
          f"above 0.5 %: {int((shares > 0.005).sum())}, any vacuum: {int((shares > 0).sum())}, "
          f"vacuum not called: {sum(r[2] != 'ok' for r in rows)}")
    for share, name, _ in sorted(rows, reverse=True)[:top]:
        print(f"  {share:.1%} {name}")


def timing(real: Path | None) -> None:
    if real and (real / "2015_0310_Gr_D4_FS_001_layer_0027.png").is_file():
        data = load_labelled(real)
        i = data.names.index("2015_0110_GrGB_FS_004_layer_0027")
        image, mask = data.images[i], data.masks[i]
    else:  # a synthetic two-grain lattice (the tests' own, from the checkout)
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.evaluate.analysis.test_orientation import two_grains_and_a_hole

        image = two_grains_and_a_hole()[0][:256, :256]
        mask = np.zeros(image.shape, bool)
    pixel = structure_of(image, mask, None).pixel_size
    with tempfile.TemporaryDirectory() as out:
        for factor in (1, 8):
            big = scipy.ndimage.zoom(image, factor, order=3) if factor > 1 else image
            big_mask = scipy.ndimage.zoom(mask.astype(np.uint8), factor, order=0).astype(bool)
            seconds = []
            for _ in range(3):
                start = time.perf_counter()
                s = structure_of(big, big_mask, Scale(pixel / factor, ScaleSource.GIVEN))
                write_classes(s, big, Path(out) / "x_classes.png")
                write_orientation(big, s, Path(out) / "x_orientation.png")
                write_tables([s], Path(out))
                seconds.append(time.perf_counter() - start)
            print(f"{big.shape[0]} px: {np.median(seconds):.2f} s per image (structure_of alone {s.seconds:.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["sim", "grgb", "vacuum", "time"])
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--show", nargs="*", help="names of the micrographs in the figure (default: the first 6)")
    parser.add_argument("--sim", type=Path, help="sim: a schema-3 simulated file (simulate generate)")
    parser.add_argument("--model", type=Path, help="sim: the contamination model (default: the packaged one)")
    parser.add_argument("--scale", choices=["true", "lattice"], default="true", help="sim: the pixel size used")
    parser.add_argument("--methods", nargs="*", default=["evaluate"], choices=sorted(METHODS))
    parser.add_argument("--json", type=Path, help="sim: write the result (with per-image rows) here")
    parser.add_argument("--vacuum-oracle", action="store_true",
                        help="sim: also the vacuum IoU with each image's best vacuum_fraction (the truth's choice)")
    args = parser.parse_args()
    real = Path(os.environ.get("GRAPHENESEG_REAL_DIR", "/nonexistent"))
    if args.what == "sim":
        if args.sim is None:
            parser.error("sim needs --sim FILE.h5")
        start = time.perf_counter()
        out = simulated(args.sim, args.model, args.scale == "lattice", args.methods, args.vacuum_oracle)
        out["wall_s"] = round(time.perf_counter() - start, 1)
        print_table(out)
        print(f"wall: {out['wall_s']} s; boundary tolerance {TOLERANCE_A} A")
        if args.json:
            import json

            args.json.write_text(json.dumps(out, indent=1))
    else:
        {"grgb": lambda: grgb(real, args.figure, args.show), "vacuum": lambda: vacuum_on_real(real),
         "time": lambda: timing(real)}[args.what]()
