"""The grain-boundary micrographs of the public set: one figure each and the two boundary detectors
compared (docs/results/grain-boundaries.md).

    python benchmarks/bench_grgb.py --real path/to/images [--out docs/images/grain-boundaries] [--time]

For every `*_GrGB_*` micrograph of the folder (`NAME.png`, with `NAME_LABEL.png` beside it), as a
user gets it from the library (evaluate.api: `structure`, the contamination of the packaged
segmentation model and the pixel size read from the lattice; `atoms` with the same scale for the
ring census, counted only where the registration check is `ok`), plus the four-class network
(`classes_default.ckpt`, run at the scale the Predictor plans for it), one figure
`<out>/<short>.png`: the micrograph; the structure classes over it; the network's classes over it
with the orientation map's boundary lines; the orientation (colour wheel); grains numbered and the
non-hexagonal rings along the boundary lines.

The two boundary detectors, per image and pooled (`<out>/grain-boundaries.json` and
`<out>/agreement.csv`):
- agreement both ways: the share of the network's boundary pixels (argmax class 3) within 3 A of
  an orientation-map boundary line, and the share of line pixels within 3 A of the network's class;
- tilt test, independent of the orientation map: points every 1 nm along each detector's boundary,
  the boundary's local normal (principal axis of its pixels within 1 nm), a 2.5 nm patch on each
  side (Hann-windowed FFT; lattice orientation = the phase of the sixth angular harmonic of the
  power on the {100} ring); a side counts when at most a quarter of its patch is contamination
  (the segmentation's) or vacuum and its ring power is at least twice the power beside the ring;
  a point with both sides counted is a tilt boundary when the two orientations differ by more
  than 5 degrees; the same at random lattice points with random normals (the noise floor);
- edges: the share of each detector's pixels within 1 nm of contamination (the human label) or
  vacuum, against the share of all graphene pixels that are;
- rings: non-hexagonal rings per nm2 within 5 A of each detector's boundary against farther than
  1.5 nm from both (registration `ok` only);
- a fusion: the network's boundary kept only where the orientation map jumps by more than the
  structure maps' `jump_deg` across one window (evaluate.analysis.orientation.jump_map).

`--time`: seconds per micrograph of `evaluate structure` (the whole output: both PNGs, tables;
with and without `--rings`) in a one-thread process pinned to one core where the system allows
it, from the wall time of all the micrographs minus that of one (model loading and imports
excluded), and one 2048 px micrograph (one GrGB image upsampled 8x, cubic spline, written as a
float TIFF without calibration, `--pixel-size` 1/8 of its lattice reading).

The measures are in grgb_measures.py and the figure in grgb_figure.py, beside this script.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage

from evaluate import api
from evaluate.analysis.orientation import jump_map
from evaluate.apply.scale import resample
from grapheneseg.classes import BOUNDARY, LATTICE, VACUUM
from grapheneseg.config import load_config
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess
from train.models import registry
from train.models.runtime import pad_to

from grgb_figure import figure  # helper modules beside this script (its folder is on sys.path)
from grgb_measures import (GAP_A, GROUPS, PATCH_A, TOL_A, distance_A, near, normal_at, pooled, ring_density,
                           sample_points, side_test, tilt_summary)

SPACING_A = 10.0  # tilt test: one point per nm of boundary
EDGE_A = 10.0  # "at an edge": within 1 nm of contamination or vacuum
RING_NEAR_A, RING_FAR_A = 5.0, 15.0
RANDOM_PER_IMAGE = 40
OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "grain-boundaries"


def short(name: str) -> str:
    return name.split("_GrGB_", 1)[1]


# ---- the four-class network ---------------------------------------------------------------------

def network_classes(predictor, result) -> np.ndarray:
    """Argmax class map of the four-class network on the micrograph's grid, run at the scale the
    Predictor plans for it (resampled when the pixel size is outside the model's range)."""
    import torch

    micrograph, scale = result.segmentation.segmentation.micrograph, result.segmentation.segmentation.scale
    image = predictor.plan(micrograph, scale)
    x = torch.from_numpy(preprocess(image))[None, None]
    multiple = max(2 ** (m.depth - 1) for m in predictor.models)
    padded, (h, w) = pad_to(x, multiple)
    with torch.inference_mode():
        prob = sum(torch.softmax(m(padded).float(), 1) for m in predictor.models) / len(predictor.models)
    prob = prob[0, :, :h, :w].numpy()
    if prob.shape[1:] != micrograph.image.shape:
        prob = np.stack([resample(p, micrograph.image.shape) for p in prob])
    return prob.argmax(0).astype(np.uint8)


# ---- one micrograph -----------------------------------------------------------------------------

def analyse(path: Path, human: np.ndarray, classes_predictor, cfg, rng) -> dict:
    """The structure map, atoms, network classes and the detector comparison of one micrograph."""
    from evaluate.analysis.rings import ring_census

    start = time.perf_counter()
    res = api.structure(path)
    seconds_structure = time.perf_counter() - start
    s = res.structure
    lib = res.segmentation.segmentation
    atoms = api.atoms(path, scale=lib.scale)
    registration = atoms.registration["registration"]
    rings = ring_census(atoms.atoms, atoms.bonds) if registration == "ok" else None
    image = lib.micrograph.image
    px = float(s.pixel_size)
    net = network_classes(classes_predictor, res)
    net_b = net == BOUNDARY
    lines = s.grains.boundary if s.grains is not None else np.zeros(image.shape, bool)
    row: dict = {"file": path.stem, "short": short(path.stem), "pixel_size_A": round(px, 4),
                 "pixel_size_source": s.pixel_size_source, "lattice_check": s.lattice_check,
                 "grains": len(s.grains.area) if s.grains is not None else 0,
                 "misorientation_deg": sorted(round(p["misorientation"], 1) for p in s.grains.pairs.values())
                 if s.grains is not None else [],
                 "boundary_length_nm": round((s.boundary_length_px or 0) * px / 10, 2),
                 "registration": registration, "seconds_structure": round(seconds_structure, 3)}

    def agreement(a: np.ndarray, tol_A: float) -> dict:
        x, y = near(a, lines, tol_A / px), near(lines, a, tol_A / px)
        return {"network_px": x[1], "network_near_lines": x[0], "line_px": y[1], "lines_near_network": y[0]}

    jumps = jump_map(s.omap) > float(cfg.get("jump_deg"))
    row["agreement"] = agreement(net_b, TOL_A)
    row["agreement_1nm"] = agreement(net_b, 10.0)
    row["fusion"] = agreement(net_b & jumps, TOL_A)
    row["fusion_1nm"] = agreement(net_b & jumps, 10.0)
    # tilt test along both detectors and at random lattice points
    pre = preprocess(image)
    off = lib.mask | (s.classes == VACUUM)
    spacing = SPACING_A / px
    to_line = distance_A(lines, px)
    tests: dict[str, list[dict]] = {"lines": [], "random": [], **{g: [] for g in GROUPS}}
    for p in sample_points(lines, spacing):
        tests["lines"].append(side_test(pre, off, p.astype(float), normal_at(lines, p, spacing), px))
    for p in sample_points(net_b, spacing):
        t = side_test(pre, off, p.astype(float), normal_at(net_b, p, spacing), px)
        group = next(g for g, (lo, hi) in GROUPS.items() if lo <= to_line[tuple(p)] <= hi or hi == np.inf)
        tests[group].append(t)
    lattice = s.classes == LATTICE
    candidates = np.argwhere((distance_A(net_b | lines, px) > PATCH_A + GAP_A) & lattice)
    for k in rng.choice(len(candidates), min(RANDOM_PER_IMAGE, len(candidates)), replace=False):
        theta = rng.uniform(0, np.pi)
        tests["random"].append(side_test(pre, off, candidates[k].astype(float),
                                         np.array([np.sin(theta), np.cos(theta)]), px))
    row["tilt"] = {k: tilt_summary(v) for k, v in tests.items()}
    row["_misorientations"] = {k: [t["misorientation"] for t in v if t["decided"]] for k, v in tests.items()}
    # network pixels by group; edges (contamination from the human label, vacuum from the structure map)
    masks = {"lines": lines, "network": net_b,
             **{g: net_b & (to_line > lo) & (to_line <= hi) if lo else net_b & (to_line <= hi)
                for g, (lo, hi) in GROUPS.items()}}
    row["network_px_by_group"] = {g: int(masks[g].sum()) for g in GROUPS}
    graphene = np.isin(s.classes, (LATTICE, BOUNDARY))
    edge = distance_A(human | (s.classes == VACUUM), px) <= EDGE_A
    row["edges"] = {k: [int((m & edge).sum()), int(m.sum())] for k, m in masks.items()}
    row["edges"]["all graphene"] = [int((edge & graphene).sum()), int(graphene.sum())]
    if rings is not None:
        interior = graphene & (distance_A(net_b, px) > RING_FAR_A) & (to_line > RING_FAR_A)
        row["rings"] = {k: ring_density(rings, graphene & (distance_A(m, px) <= RING_NEAR_A), px) for k, m in masks.items()}
        row["rings"]["interior"] = ring_density(rings, interior, px)
        row["ring_counts"] = {int(k): int(v) for k, v in rings.counts().items()}
    row["_maps"] = (image, s, lib.mask, net, rings, lines)
    return row


# ---- timing -------------------------------------------------------------------------------------

def timing(paths: list[Path]) -> dict:
    """Seconds per micrograph of `evaluate structure` (module doc)."""
    exe = Path(sys.executable).with_name("evaluate")
    exe = str(exe) if exe.is_file() else shutil.which("evaluate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    pin = {"preexec_fn": (lambda: os.sched_setaffinity(0, {max(os.sched_getaffinity(0))}))} \
        if hasattr(os, "sched_setaffinity") else {}

    def run(inputs: list[Path], *extra: str) -> tuple[float, float, float]:
        """(wall seconds of the command, its CPU seconds (user + system: the wall time of an idle
        core), sum of structure.csv's `seconds`: the maps alone)."""
        import resource

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "in"
            folder.mkdir()
            for p in inputs:
                os.symlink(p.resolve(), folder / p.name)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([exe, "structure", "--input", str(folder), "--out", str(Path(tmp) / "out"), "--quiet",
                            *extra], env=env, check=True, capture_output=True, **pin)
            seconds = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            with open(Path(tmp) / "out" / "structure.csv") as f:
                return seconds, cpu, sum(float(r["seconds"]) for r in csv.DictReader(f))

    result = {}
    for label, extra in (("maps", ()), ("rings", ("--rings",))):
        one, every = run(paths[:1], *extra), run(paths, *extra)
        n = len(paths) - 1
        result[f"256px_{label}"] = {"wall_all_s": round(every[0], 2), "wall_one_s": round(one[0], 2),
                                    "cpu_all_s": round(every[1], 2), "cpu_one_s": round(one[1], 2),
                                    "wall_per_micrograph_s": round((every[0] - one[0]) / n, 3),
                                    "cpu_per_micrograph_s": round((every[1] - one[1]) / n, 3),
                                    "maps_alone_per_micrograph_s": round(every[2] / len(paths), 3)}
    import tifffile

    from grapheneseg.micrographs import read_image

    source = next(p for p in paths if "FS_004_layer_0027" in p.name)
    pixel = api.scale(source).pixel_size
    image = read_image(source)
    big = scipy.ndimage.zoom(image, 8, order=3).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tif = Path(tmp) / "big.tif"
        tifffile.imwrite(tif, big)
        for label, extra in (("maps", ()), ("rings", ("--rings",))):
            wall, cpu, maps = run([tif], "--pixel-size", f"{pixel / 8:.5f}", *extra)
            small = result[f"256px_{label}"]
            result[f"2048px_{label}"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                         "cpu_minus_one_256px_run_s": round(cpu - small["cpu_one_s"], 2),
                                         "maps_alone_s": round(maps, 2), "pixel_size_A": round(pixel / 8, 5),
                                         "source": source.stem}
    return result


# ---- main ---------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help="folder of labelled micrographs (NAME.png, NAME_LABEL.png)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"figures and tables (default {OUT})")
    parser.add_argument("--time", action="store_true", help="also time evaluate structure (module doc)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    data = load_labelled(args.real)
    chosen = [i for i, n in enumerate(data.names) if "_GrGB_" in n]
    cfg = load_config("evaluate").get("structure_maps")
    classes_predictor = api.predictor(registry.packaged("classes"), device="cpu", task="classes")
    rng = np.random.default_rng(0)
    rows = []
    for i in chosen:
        path = args.real / f"{data.names[i]}.png"
        row = analyse(path, data.masks[i], classes_predictor, cfg, rng)
        figure(row, args.out / f"{row['short']}.png")
        ag, t = row["agreement"], row["tilt"]
        print(f"{row['short']:22s} {row['pixel_size_A']:.3f} A/px, {row['grains']} grain(s) {row['misorientation_deg']}; "
              f"network within 3 A of a line {ag['network_near_lines']}/{ag['network_px']}, lines within 3 A of the "
              f"network {ag['lines_near_network']}/{ag['line_px']}; tilt (tilted/decided): lines "
              f"{t['lines']['tilt']}/{t['lines']['decided']}, "
              + ", ".join(f"{g} {t[g]['tilt']}/{t[g]['decided']}" for g in GROUPS)
              + f", random {t['random']['tilt']}/{t['random']['decided']}", flush=True)
        rows.append(row)
    summary = {k: pooled(rows, k) for k in ("agreement", "agreement_1nm", "fusion", "fusion_1nm")}
    summary["tilt"] = {}
    for key in rows[0]["tilt"]:
        total = {k: sum(r["tilt"][key][k] for r in rows) for k in ("points", "decided", "tilt")}
        total["undecided"] = {w: sum(r["tilt"][key]["undecided"][w] for r in rows) for w in rows[0]["tilt"][key]["undecided"]}
        mis = [m for r in rows for m in r["_misorientations"][key]]
        total["tilt_share"] = total["tilt"] / total["decided"] if total["decided"] else None
        total["median_misorientation_deg"] = float(np.median(mis)) if mis else None
        summary["tilt"][key] = total
    summary["network_px_by_group"] = {g: sum(r["network_px_by_group"][g] for r in rows) for g in GROUPS}
    summary["edges"] = {k: [sum(r["edges"][k][j] for r in rows) for j in (0, 1)] for k in rows[0]["edges"]}
    for v in summary["edges"].values():
        v.append(v[0] / max(v[1], 1))
    ring_rows = [r for r in rows if "rings" in r]
    summary["rings_per_nm2"] = {}
    for k in ring_rows[0]["rings"]:
        n, area = sum(r["rings"][k][0] for r in ring_rows), sum(r["rings"][k][1] for r in ring_rows)
        summary["rings_per_nm2"][k] = [n, round(area, 2), n / area if area else None]
    summary["rings_images"] = len(ring_rows)
    if args.time:
        summary["timing"] = timing([args.real / f"{data.names[i]}.png" for i in chosen])
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grain-boundaries.json").write_text(json.dumps({"images": clean, "pooled": summary}, indent=1) + "\n")
    with open(args.out / "agreement.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["micrograph", "pixel_size_A", "grains", "network_px", "network_within_3A_of_lines",
                         "line_px", "lines_within_3A_of_network", "fused_px", "fused_within_3A_of_lines",
                         "lines_within_3A_of_fused"])
        for r in clean + [{"short": "pooled", "pixel_size_A": "", "grains": "", **summary}]:
            a, fu = r["agreement"], r["fusion"]
            writer.writerow([r["short"], r["pixel_size_A"], r["grains"], a["network_px"],
                             f"{a['network_near_lines'] / max(a['network_px'], 1):.3f}", a["line_px"],
                             f"{a['lines_near_network'] / max(a['line_px'], 1):.3f}", fu["network_px"],
                             f"{fu['network_near_lines'] / max(fu['network_px'], 1):.3f}",
                             f"{fu['lines_near_network'] / max(fu['line_px'], 1):.3f}"])
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
