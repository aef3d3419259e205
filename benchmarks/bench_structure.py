"""Structure maps (evaluate.apply.structure) on the 17 grain-boundary micrographs of the public set
and their speed (docs/results/structure.md).

    GRAPHENESEG_REAL_DIR=PATH python benchmarks/bench_structure.py grgb --figure structure_grgb.png
    taskset -c 1 python benchmarks/bench_structure.py time

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

from evaluate.apply.scale import Scale, ScaleSource
from evaluate.apply.structure import classes_rgb, draw_orientation, structure_of, structure_row, write_classes, \
    write_orientation, write_tables
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess


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


def timing(real: Path | None) -> None:
    if real and (real / "2015_0310_Gr_D4_FS_001_layer_0027.png").is_file():
        data = load_labelled(real)
        i = data.names.index("2015_0110_GrGB_FS_004_layer_0027")
        image, mask = data.images[i], data.masks[i]
    else:  # a synthetic two-grain lattice (the tests' own, from the checkout)
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.test_orientation import two_grains_and_a_hole

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
    parser.add_argument("what", choices=["grgb", "time"])
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--show", nargs="*", help="names of the micrographs in the figure (default: the first 6)")
    args = parser.parse_args()
    real = Path(os.environ.get("GRAPHENESEG_REAL_DIR", "/nonexistent"))
    grgb(real, args.figure, args.show) if args.what == "grgb" else timing(real)
