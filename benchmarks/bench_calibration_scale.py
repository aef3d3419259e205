"""Does `simulate calibrate` fit the same ranges to the same micrographs sampled finer?

    python benchmarks/bench_calibration_scale.py [--real DIR] [--n 24] [--seed 0] [--factors 2 4]
        [--structures 6] [--variants 2] [--work DIR] [--json] [key=value ...]

A subset of the labelled public micrographs (256 px; `--n`, drawn with `--seed` among those whose
lattice can be read, so that each has a scale) is calibrated as it is, then upsampled by each of
`--factors` (cubic spline; labels pixel-replicated, nearest-neighbour) and written twice: as ImageJ
TIFFs carrying the right, divided pixel size (the original's lattice reading / factor), and as
8-bit PNGs without a pixel size, so that calibration reads the lattice. Calibration must bring each
back to the simulated scale (binning by the factor) and fit the same ranges. Binning a cubic
upsampling is not its exact inverse (each binned pixel averages the interpolated image over its
width: a slight blur); a third copy, pixel-replicated TIFFs ("repl."), is binned back exactly and
must reproduce the run as it is to the digit. Every run uses the
same small search pool (`--structures` exit waves x `--variants` optics draws, seed 0), with labels.

Printed: one column per run (as is; x2 TIFF; x2 PNG; ...): the fitted pixel size, dose, blur,
defocus and coverage ranges, the distance after the fit, micrographs used, bin factors, and the
wall time. The YAMLs and their figures are left in `--work` (default: a temporary folder, kept).
`--json`: one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
import tifffile
from PIL import Image

from grapheneseg.config import default_real_dir, load_config
from grapheneseg.lattice import read_pixel_size
from grapheneseg.micrographs import LABEL_SUFFIX, find_pairs, read_image, read_label
from simulate.calibration import calibrate, summary, write_calibration


def pick(folder: Path, n: int, seed: int) -> list[tuple[str, Path, Path, float]]:
    """(name, image, label, lattice pixel size) of `n` pairs drawn with `seed` among those with a reading."""
    pairs = []
    for name, image, label in find_pairs(folder):
        size = read_pixel_size(read_image(image))
        if size:
            pairs.append((name, image, label, size))
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(pairs), min(n, len(pairs)), replace=False))
    return [pairs[i] for i in chosen]


def write_sets(pairs: list, factors: list[int], work: Path) -> dict[str, Path]:
    """The folders: "as is" (the pairs copied), and per factor f "xf TIFF", "xf PNG", "xf repl."."""
    sets = {"as is": work / "native"}
    sets["as is"].mkdir(parents=True, exist_ok=True)
    for name, image, label, _ in pairs:
        shutil.copy(image, sets["as is"] / image.name)
        shutil.copy(label, sets["as is"] / label.name)
    for f in factors:
        tiff, png, repl = work / f"x{f}_tiff", work / f"x{f}_png", work / f"x{f}_replicated"
        sets[f"x{f} TIFF"], sets[f"x{f} PNG"], sets[f"x{f} repl."] = tiff, png, repl
        for folder in (tiff, png, repl):
            folder.mkdir(parents=True, exist_ok=True)
        for name, image, label, size in pairs:
            raw = read_image(image).astype(np.float64)
            up = np.clip(scipy.ndimage.zoom(raw, f, order=3, grid_mode=True, mode="grid-mirror"), 0, 255)
            mask = read_label(label)[0]
            mask = Image.fromarray((np.repeat(np.repeat(mask, f, 0), f, 1) * 255).astype(np.uint8))
            nm = size / f / 10  # the finer pixel, in nm (ImageJ's unit)
            tifffile.imwrite(tiff / f"{name}.tif", up.astype(np.float32), imagej=True,
                             resolution=(1 / nm, 1 / nm), metadata={"unit": "nm"})
            Image.fromarray(np.round(up).astype(np.uint8)).save(png / f"{name}.png")
            tifffile.imwrite(repl / f"{name}.tif", np.repeat(np.repeat(raw, f, 0), f, 1).astype(np.float32),
                             imagej=True, resolution=(1 / nm, 1 / nm), metadata={"unit": "nm"})
            for folder in (tiff, png, repl):
                mask.save(folder / f"{name}{LABEL_SUFFIX}.png")
    return sets


def run(cfg, folder: Path, structures: int, variants: int, out: Path) -> dict:
    start = time.perf_counter()
    result = calibrate(cfg, folder, labelled=True, structures=structures, variants=variants, log=lambda *_: None)
    wall = time.perf_counter() - start
    write_calibration(result, out)
    result = summary(result)
    result["wall_s"] = round(wall, 1)
    return result


def table(results: dict[str, dict]) -> str:
    names = list(results)
    rows = [("pixel size (A/px)", lambda r: "{:.3f}-{:.3f}".format(*r["ranges"]["pixel_size"]["after"])),
            ("dose (e/A^2)", lambda r: "{:g}-{:g}".format(*r["ranges"]["dose"]["after"])),
            ("blur (px)", lambda r: "{:g}-{:g}".format(*r["ranges"]["blur"]["after"])),
            ("defocus (A)", lambda r: "{:g}-{:g}".format(*r["ranges"]["defocus"]["after"])),
            ("coverage median", lambda r: f"{r['ranges']['coverage_median']['after']:g}"),
            ("distance before", lambda r: f"{r['before']['total']:.3f}"),
            ("distance after", lambda r: f"{r['after']['total']:.3f}"),
            ("micrographs / tiles", lambda r: f"{r['n_real']} / {r['n_tiles']}"),
            ("bin factors", lambda r: ",".join(f"{b:g}" for b in sorted({u['bin'] for u in r['micrographs']}))),
            ("left out", lambda r: str(len(r["skipped"]))),
            ("wall (s)", lambda r: f"{r['wall_s']:.0f}")]
    width = max(16, *(len(n) + 2 for n in names))
    lines = [f"| {'':20s} | " + " | ".join(f"{n:>{width}s}" for n in names) + " |",
             "|" + "-" * 22 + "|" + "|".join("-" * (width + 2) for _ in names) + "|"]
    for label, cell in rows:
        lines.append(f"| {label:20s} | " + " | ".join(f"{cell(results[n]):>{width}s}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=None, help="labelled folder (default: the public 105)")
    parser.add_argument("--n", type=int, default=24, help="micrographs in the subset")
    parser.add_argument("--seed", type=int, default=0, help="draws the subset")
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--structures", type=int, default=6)
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("overrides", nargs="*", help="simulate config overrides key=value")
    args = parser.parse_args()
    cfg = load_config("simulate", ["workers=1", *args.overrides])
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_calibration_scale_"))
    pairs = pick(args.real or default_real_dir(), args.n, args.seed)
    sets = write_sets(pairs, args.factors, work)
    print(f"{len(pairs)} micrographs, lattice {min(p[3] for p in pairs):.3f}-{max(p[3] for p in pairs):.3f} A/px; "
          f"pool {args.structures} x {args.variants}; work {work}")
    results = {}
    for label, folder in sets.items():
        results[label] = run(cfg, folder, args.structures, args.variants, work / f"{folder.name}.yaml")
        print(f"  {label}: {results[label]['wall_s']:.0f} s", flush=True)
    print(table(results))
    if args.json:
        print(json.dumps({"n": len(pairs), "seed": args.seed, "pool": [args.structures, args.variants],
                          "results": {k: {f: v[f] for f in ("ranges", "before", "after", "n_real", "n_tiles",
                                                            "skipped", "wall_s")} for k, v in results.items()}}))


if __name__ == "__main__":
    main()
