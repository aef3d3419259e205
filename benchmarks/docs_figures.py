"""The figures of the documentation's getting-started and results pages, made from the packaged
models on the public labelled micrographs by the same commands the pages name.

    python benchmarks/docs_figures.py --real path/to/images --out docs/images \
        [--report REPORT_DIR] [--calibration CAL.png]

- getting-started/overlay.png, contact_sheet.png: `evaluate predict` and `evaluate sort` outputs;
- results/masks_best_median_worst.png: the packaged model's masks against the human labels (best,
  median and worst per-image Jaccard among the micrographs at least 2 % contaminated);
- results/uncertainty_vs_error.png: `evaluate predict --uncertainty` (8 symmetries) per-image
  disagreement against 1 - Jaccard on the 105;
- results/uncertainty_map.png, atoms.png, structure_classes.png: one micrograph's outputs;
- results/report_*.png: copied from an `evaluate report` folder (--report); results/calibration.png
  from `simulate calibrate`'s figure (--calibration).
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

BIN = Path(sys.executable).parent
EXAMPLE = "2014_0823_Gr_FS_001_layer_0005"  # contamination beside clean lattice
GRAIN = "2015_0111_GrGB_FSD05_002_layer_0006"  # a tilt boundary


def small(path: Path, width: int = 1100) -> None:
    """Shrink a figure for the site: at most `width` px wide, a 128-colour palette PNG."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(128).save(path, optimize=True)


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run([str(BIN / args[0]), *args[1:]], check=True, stdout=subprocess.DEVNULL)


def masks_figure(real: Path, scores: dict, out: Path, least: float = 0.02) -> None:
    """Best, median and worst per-image Jaccard among the micrographs whose label covers at least
    `least` of the field (on a nearly clean one a speck decides the Jaccard): micrograph;
    prediction (fill) and label (outline)."""
    from matplotlib.colors import ListedColormap

    from grapheneseg.micrographs import read_image, read_label

    from evaluate import api

    covered = [n for n in scores if read_label(real / f"{n}_LABEL.png")[0].mean() >= least]
    ranked = sorted(covered, key=lambda n: scores[n]["jaccard"])
    picks = {"worst": ranked[0], "median": ranked[len(ranked) // 2], "best": ranked[-1]}
    fig = Figure(figsize=(9, 6.4))
    axes = fig.subplots(2, 3)
    for column, (which, name) in enumerate(picks.items()):
        image = read_image(real / f"{name}.png")
        truth = read_label(real / f"{name}_LABEL.png")[0]
        mask = api.segment(real / f"{name}.png", device="cpu").mask
        axes[0, column].imshow(image, cmap="gray")
        axes[0, column].set_title(f"{which}: {name}", fontsize=7)
        axes[1, column].imshow(image, cmap="gray")
        axes[1, column].imshow(np.ma.masked_where(~mask, mask), cmap=ListedColormap(["red"]), alpha=0.4)
        axes[1, column].contour(truth, levels=[0.5], colors="cyan", linewidths=1.0)
        axes[1, column].set_title(f"Jaccard {scores[name]['jaccard']:.3f}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"packaged model (red fill) against the human label (cyan outline); the {len(covered)} "
                 f"micrographs whose label covers at least {least:.0%}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def uncertainty_figure(predictions: Path, scores: dict, out: Path) -> None:
    from scipy.stats import spearmanr

    rows = {Path(r["file"]).stem: float(r["uncertainty"]) for r in csv.DictReader(predictions.open())
            if r.get("uncertainty")}
    names = sorted(set(rows) & set(scores))
    u = np.array([rows[n] for n in names])
    err = np.array([1 - scores[n]["jaccard"] for n in names])
    rho = spearmanr(u, err).statistic
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.scatter(u, err, s=12, alpha=0.7)
    ax.set_xlabel("uncertainty column (Jaccard disagreement over 8 symmetries)")
    ax.set_ylabel("error: 1 - Jaccard against the label")
    ax.set_title(f"packaged model on {len(names)} labelled micrographs; Spearman {rho:.2f}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"uncertainty vs error: Spearman {rho:.3f} over {len(names)} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="the public labelled micrographs")
    parser.add_argument("--out", default="docs/images", help="docs image folder")
    parser.add_argument("--report", help="an `evaluate report` folder: its figures are copied")
    parser.add_argument("--calibration", help="a `simulate calibrate` figure (.png) to copy")
    args = parser.parse_args()
    real, out = Path(args.real), Path(args.out)
    (out / "getting-started").mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    try:
        one = work / "one"
        one.mkdir()
        shutil.copy(real / f"{EXAMPLE}.png", one)
        shutil.copy(real / f"{GRAIN}.png", one)
        run("evaluate", "predict", "--input", str(one), "--out", str(work / "masks"), "--device", "cpu", "--quiet")
        shutil.copy(work / "masks" / f"{EXAMPLE}_overlay.png", out / "getting-started" / "overlay.png")
        run("evaluate", "atoms", "--input", str(one / f"{EXAMPLE}.png"), "--out", str(work / "atoms"), "--device",
            "cpu", "--quiet")
        shutil.copy(next((work / "atoms").glob("*_bonds.png")), out / "results" / "atoms.png")
        run("evaluate", "structure", "--input", str(one / f"{GRAIN}.png"), "--out", str(work / "structure"),
            "--device", "cpu", "--quiet")
        shutil.copy(work / "structure" / f"{GRAIN}_classes.png", out / "results" / "structure_classes.png")
        unlabelled = work / "unlabelled"
        unlabelled.mkdir()
        for path in sorted(real.glob("*.png")):
            if not path.stem.endswith("_LABEL"):
                shutil.copy(path, unlabelled)
        run("evaluate", "sort", "--input", str(unlabelled), "--out", str(work / "sorted"), "--device", "cpu",
            "--quiet")
        shutil.copy(next((work / "sorted").glob("*.png")), out / "getting-started" / "contact_sheet.png")
        run("evaluate", "predict", "--input", str(unlabelled), "--out", str(work / "unc"), "--uncertainty",
            "--device", "cpu", "--quiet")
        shutil.copy(work / "unc" / f"{EXAMPLE}_uncertainty.png", out / "results" / "uncertainty_map.png")
        run("evaluate", "score", "--test", str(real), "--out", str(work / "score.json"), "--device", "cpu")
        import json

        scores = json.loads((work / "score.json").read_text())["scores"]
        uncertainty_figure(work / "unc" / "predictions.csv", scores, out / "results" / "uncertainty_vs_error.png")
        masks_figure(real, scores, out / "results" / "masks_best_median_worst.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.report:
        for name in ("error_examples", "per_image_jaccard", "data_efficiency", "structure_maps"):
            shutil.copy(Path(args.report) / f"{name}.png", out / "results" / f"report_{name}.png")
    if args.calibration:
        shutil.copy(args.calibration, out / "results" / "calibration.png")
    for path in [*(out / "results").glob("*.png"), *(out / "getting-started").glob("*.png")]:
        small(path)


if __name__ == "__main__":
    main()
