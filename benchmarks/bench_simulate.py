"""Simulator benchmark: throughput of `simulate generate` with defaults, and what the speed costs.

Measures, on this machine:
1. `generate` with the default config for --n images (default 500; 5000 is extrapolated from the
   steady rate plus the measured start-up): wall time, images/s, peak memory per worker, the time
   split by stage (summed over workers), distinct structures.
2. The naive loop: one abTEM exit wave per image at 0.10 A with uniform 2 A slices, one process,
   one variant per exit wave, on a few images: seconds per image, and the speed-up ratio.
3. (--fft) FFTW_ESTIMATE vs FFTW_MEASURE time of one in-place complex64 n x n transform for the
   candidate exit-wave grid sizes (why imaging.GRID_SIZES holds the sizes it holds).
4. (--seam) How much of a line of atoms on the cell's periodic seam shows in the image (max |I - mean|
   relative to the same line in view) for the extreme default optics, by border width, and the
   border `simulate` sizes from the optics.
5. (--structures) Structure building: seconds per default structure and the ring census of the
   stitched grain boundaries (ring sizes from the Delaunay dual, counted once per ring).
6. (--stage-cpu S) CPU seconds per stage for the first S structures of seed 0 at the defaults, in
   this one process (time.process_time, so other load on the machine does not count), after the
   workers' own warm-up: the figures to compare two versions by (the wall-clock stage times of
   `generate` include waiting for a shared core).
7. (--accuracy) Exit-wave accuracy vs a 0.05 A / 1 A-slice reference after CTF and resampling to
   256 px: relative RMS error (fraction of the noiseless image's std) for candidate samplings and
   slicings, raw and after the best constant defocus offset (which the random defocus absorbs).

Run under the heavy-job lock:  flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_simulate.py
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simulate.imaging import limit_threads

limit_threads()

from grapheneseg.config import load_config  # noqa: E402
from simulate import driver  # noqa: E402
from simulate.imaging import VariantImager, configure_abtem, draw_optics, exit_wave  # noqa: E402
from simulate.pipeline import structure_rng, variant_rng  # noqa: E402
from simulate.structures import build_structure  # noqa: E402


def bench_generate(n: int, workers: int) -> dict:
    cfg = load_config("simulate", [f"n={n}", f"workers={workers}"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stats = driver.generate(cfg, Path(tmp) / "bench.h5", progress=False)
        total = time.perf_counter() - t0
        size_mb = (Path(tmp) / "bench.h5").stat().st_size / 2**20
    # start-up (worker spawn + warm-up) is paid once; the rest scales with n
    first = dict(stats.as_dict())
    per_image_wall = stats.wall / n
    first.update(
        total_wall_s=round(total, 1),
        file_mb=round(size_mb, 1),
        structures_for_5000=math.ceil(5000 / cfg.variants_per_structure),
        variants_per_structure=cfg.variants_per_structure,
        extrapolated_5000_s=round(total - stats.wall + per_image_wall * 5000, 0) if n < 5000 else round(total, 0),
        stage_share={k: round(v / max(sum(stats.stages.values()), 1e-9), 3) for k, v in stats.stages.items()},
    )
    return first


def bench_naive(images: int) -> dict:
    """One exit wave per image at 0.10 A, uniform 2 A slices, one process."""
    cfg = load_config("simulate")
    configure_abtem("cpu")
    times = []
    for i in range(images + 1):  # first image warms numba and FFTW
        t0 = time.perf_counter()
        rng = structure_rng(123, i)
        pixel_size = float(rng.uniform(*cfg.grid.pixel_size))
        full = cfg.grid.image_px + 2 * cfg.grid.margin_px
        structure = build_structure(rng, full * pixel_size, cfg.structure)
        wave = exit_wave(structure, 0.10, 2.0, 2.0, cfg.optics.energy)
        imager = VariantImager(wave, structure.extent, cfg.optics.energy, cfg.grid.image_px, cfg.grid.margin_px, None, cfg.optics.semiangle_cutoff)
        vrng = variant_rng(123, i, 0)
        imager.image(draw_optics(vrng, cfg.optics), vrng)
        if i:
            times.append(time.perf_counter() - t0)
    return {"images": images, "s_per_image": round(float(np.mean(times)), 3), "images_per_s": round(1 / float(np.mean(times)), 3)}


def bench_accuracy() -> list[dict]:
    """At a fine (0.30 A/px) and a coarse (0.50 A/px) output pixel size; at the fine one the alias-free
    wave grid (`imaging.wave_px`) already asks for < 0.26 A, so only coarse cells feel the cap."""
    cfg = load_config("simulate", ["structure.holes.probability=0", "structure.amorphous.coverage=[0.3,0.3]",
                                   "structure.amorphous.clean_probability=0", "structure.single_grain_probability=0"])
    configure_abtem("cpu")
    rng = np.random.default_rng(5)
    optics = [draw_optics(rng, cfg.optics) for _ in range(4)]
    candidates = {0.3: [(0.10, 1.0, 1.0, 2), (0.15, 2.0, 4.0, 2), (0.20, 2.0, 4.0, 1.5)],
                  0.5: [(0.20, 2.0, 4.0, None), (0.27, 2.0, 4.0, None), (0.27, 2.0, 6.0, None)]}
    rows = []
    for pixel_size, settings in candidates.items():
        structure = build_structure(np.random.default_rng(3), 288 * pixel_size, cfg.structure)

        def imager(sampling, graphene_slice, amorphous_slice, oversampling):
            exit_wave(structure, sampling, graphene_slice, amorphous_slice, cfg.optics.energy)  # warm
            t0 = time.perf_counter()
            wave = exit_wave(structure, sampling, graphene_slice, amorphous_slice, cfg.optics.energy)
            seconds = time.perf_counter() - t0
            return VariantImager(wave, structure.extent, cfg.optics.energy, 256, 16, oversampling, cfg.optics.semiangle_cutoff), seconds, wave.shape[0]

        ref_imager, _, _ = imager(0.05, 1.0, 1.0, 2)
        refs = [ref_imager.noiseless(o) for o in optics]
        for sampling, gs, asl, ovs in settings:
            im, seconds, gpts = imager(sampling, gs, asl, ovs)
            raw, shifted = [], []
            for o, ref in zip(optics, refs):
                errors = {d: float(np.sqrt(np.mean((im.noiseless(dataclasses.replace(o, defocus=o.defocus + d)) - ref) ** 2)) / ref.std())
                          for d in np.arange(-4, 4.01, 0.5)}
                raw.append(errors[0.0])
                shifted.append(min(errors.values()))
            rows.append({"pixel_size": pixel_size, "sampling": sampling, "grid_sampling": round(structure.extent / gpts, 4),
                         "graphene_slice": gs, "amorphous_slice": asl, "exit_wave_s": round(seconds, 3),
                         "rel_rms_error": round(float(np.mean(raw)), 4), "after_defocus_offset": round(float(np.mean(shifted)), 4)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def bench_fft(repeats: int = 20) -> list[dict]:
    """Best-of-`repeats` ms of one in-place complex64 n x n FFT, estimated vs measured plans."""
    import pyfftw

    rows = []
    for n in (400, 432, 480, 500, 512, 540, 560, 576, 588, 600, 640, 672, 720, 756, 768, 800, 840, 864, 972, 1008):
        row = {"n": n}
        for flag in ("FFTW_ESTIMATE", "FFTW_MEASURE"):
            pyfftw.forget_wisdom()
            array = pyfftw.empty_aligned((n, n), dtype="complex64")
            fft = pyfftw.FFTW(array, array, axes=(-2, -1), flags=(flag,), threads=1)
            array[:] = 1
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fft()
                times.append(time.perf_counter() - t0)
            row[flag[5:].lower() + "_ms"] = round(min(times) * 1e3, 2)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def bench_seam() -> list[dict]:
    from ase import Atoms

    from simulate.imaging import Optics, wave_px
    from simulate.pipeline import border_px
    from simulate.structures import Structure

    cfg = load_config("simulate")
    configure_abtem("cpu")
    p, image_px, energy, cutoff = 0.30, 64, cfg.optics.energy, cfg.optics.semiangle_cutoff

    def line(optics, margin, seam):
        full = image_px + 2 * margin
        extent = full * p
        ys = np.arange(0, extent, 1.42)
        pos = np.column_stack([np.full(len(ys), 0.0 if seam else extent / 2), ys, np.ones(len(ys))])
        s = Structure(Atoms(f"C{len(ys)}", positions=pos, cell=[extent, extent, 2.0], pbc=True), extent,
                      np.zeros(len(ys), bool), np.zeros((1, 2)), np.zeros(1))
        wave = exit_wave(s, min(0.2, extent / wave_px(full, p, energy, cutoff)), 2.0, 4.0, energy)
        image = VariantImager(wave, extent, energy, image_px, margin, None, cutoff).noiseless(optics)
        return float(np.abs(image - image.mean()).max())

    rows = []
    for focal_spread in (10.0, 30.0):
        optics = Optics(defocus=150.0, cs=-1e5, astigmatism=40.0, astigmatism_angle=0.0, focal_spread=focal_spread,
                        angular_spread=0.1, dose=1e4, mtf_c2=0.1, mtf_c3=0.6, mtf_c4=2.0, blur=0.15, gradient=0.0,
                        gradient_angle=0.0, gradient_curvature=0.0, patchiness=0.0, patch_scale=20.0)
        in_view = line(optics, 40, seam=False)
        sized = border_px([optics], p, cfg)
        row = {"focal_spread": focal_spread, "pixel_size": p, "sized_border_px": sized,
               "leak_by_border_px": {m: round(line(optics, m, seam=True) / in_view, 4) for m in (8, 16, 24, 32, sized)}}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def bench_structures(count: int = 40) -> dict:
    from collections import Counter

    from simulate.structures import honeycomb, ring_centres

    cfg = load_config("simulate")
    times, census = [], Counter()
    for s in range(count):
        rng = structure_rng(321, s)
        extent = 310 * float(rng.uniform(*cfg.grid.pixel_size))  # typical cell with its optics-sized border
        t0 = time.perf_counter()
        build_structure(rng, extent, cfg.structure)
        times.append(time.perf_counter() - t0)
    for s in range(10):  # the census on 5-grain sheets
        rng = np.random.default_rng(s)
        extent = 120.0
        centres = ring_centres(extent, rng.uniform(0, extent, (5, 2)), rng.uniform(0, 60, 5), rng.uniform(-2.46, 2.46, (5, 2)), 2.46)
        _, _, rings = honeycomb(centres, extent)
        sizes, counts = np.unique(rings, return_counts=True)
        census.update({int(k): int(c // k) for k, c in zip(sizes, counts)})  # each ring seen by k atoms
    return {"s_per_structure": round(float(np.mean(times)), 3), "ring_census_10_sheets_5_grains_120A": dict(sorted(census.items()))}


def bench_stage_cpu(structures: int) -> dict:
    from omegaconf import OmegaConf

    from simulate import pipeline

    cfg = load_config("simulate")
    driver.init_worker(OmegaConf.to_yaml(driver.physics_config(cfg)), "cpu")
    wall = pipeline.time.perf_counter
    pipeline.time.perf_counter = time.process_time  # the stage clocks read CPU time
    try:
        stages, t0 = dict.fromkeys(pipeline.STAGES, 0.0), time.process_time()
        for s in range(structures):
            _, timing, _ = driver.run_task((int(cfg.seed), s, list(range(cfg.variants_per_structure))))
            for key, value in timing.items():
                stages[key] += value
        total = time.process_time() - t0
    finally:
        pipeline.time.perf_counter = wall
    return {"structures": structures, "images": structures * cfg.variants_per_structure, "cpu_s": round(total, 2),
            "stage_cpu_s": {k: round(v, 2) for k, v in stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="images for the generate benchmark (0 = skip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive", type=int, default=4, help="images for the naive loop (0 = skip)")
    parser.add_argument("--stage-cpu", type=int, default=0, metavar="S", help="also CPU seconds per stage for S structures, one process")
    parser.add_argument("--accuracy", action="store_true", help="also run the sampling/slicing accuracy study")
    parser.add_argument("--fft", action="store_true", help="also time estimated vs measured FFT plans per grid size")
    parser.add_argument("--seam", action="store_true", help="also measure the seam leak by border width")
    parser.add_argument("--structures", action="store_true", help="also time structures and count boundary rings")
    args = parser.parse_args()
    result = {}
    if args.n:
        result["generate"] = bench_generate(args.n, args.workers)
        print(json.dumps(result["generate"]), file=sys.stderr, flush=True)
    if args.naive and args.n:
        result["naive"] = bench_naive(args.naive)
        result["speedup_vs_naive"] = round(result["generate"]["images_per_s"] / result["naive"]["images_per_s"], 1)
    if args.fft:
        result["fft"] = bench_fft()
    if args.seam:
        result["seam"] = bench_seam()
    if args.structures:
        result["structures"] = bench_structures()
    if args.stage_cpu:
        result["stage_cpu"] = bench_stage_cpu(args.stage_cpu)
    if args.accuracy:
        result["accuracy"] = bench_accuracy()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
