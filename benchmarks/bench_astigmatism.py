"""How much two-fold astigmatism do real micrographs show? Thon-ring anisotropy, simulated vs real.

    python benchmarks/bench_astigmatism.py --sim FILE.h5 --real DIR [--max-sim 1500] [--json]

FILE.h5 is a simulated set drawn over a wide astigmatism range (e.g. `simulate generate --n 5000
optics.astigmatism=[0,40]`); DIR a labelled real folder (NAME.png + NAME_LABEL.png). For every
image whose contamination (simulated mask, real label) covers >= 5 %, `simulate.report.
thon_anisotropy` measures how elliptical the amorphous carbon's Thon rings are (cos 2 theta
amplitude of the ring power over its mean; pixel size from the file, for real images read from
the graphene lattice; images without a readable lattice are left out and counted).

Prints the simulated statistic per bin of true astigmatism (its Spearman correlation with it) and
the real quartiles. The fit: the simulated images with true astigmatism below A_max are a draw
from a uniform 0-A_max range; the A_max whose statistic distribution is nearest the real one (1-D
Wasserstein distance) is the range the real images support, with a 95 % interval from 500
bootstrap resamples of the real images. The same estimator runs on both sides, so its bias
(noise floor, Cs, dose) cancels to first order; what does not cancel is any difference in
amorphous-carbon texture, contamination area and the real images' 8-bit resampling.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr, wasserstein_distance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grapheneseg.lattice import read_pixel_size  # noqa: E402
from grapheneseg.micrographs import load_labelled  # noqa: E402
from grapheneseg.stats import bootstrap_indices, interval  # noqa: E402
from simulate.dataset import open_dataset  # noqa: E402
from simulate.report import thon_anisotropy  # noqa: E402


def simulated(path: Path, max_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, true astigmatism in A) of up to `max_images` images with >= 5 % contamination."""
    with open_dataset(path) as f:
        meta = f["meta"][:]
        rows = np.flatnonzero(meta["contamination_fraction"] >= 0.05)[:max_images]
        stats = [thon_anisotropy(f["images"][i], f["masks"][i] > 0, float(meta["pixel_size"][i])) for i in rows]
    return np.array(stats), meta["astigmatism"][rows]


def real(folder: Path) -> tuple[np.ndarray, int]:
    """Statistic of each labelled real image with >= 5 % contamination and a readable lattice."""
    data = load_labelled(folder)
    stats, unread = [], 0
    for image, mask in zip(data.images, data.masks):
        if mask.mean() < 0.05:
            continue
        pixel_size = read_pixel_size(image)
        if pixel_size is None:
            unread += 1
            continue
        stats.append(thon_anisotropy(image, mask > 0, pixel_size))
    return np.array(stats), unread


def best_range(sim: np.ndarray, astig: np.ndarray, target: np.ndarray, grid: np.ndarray) -> float:
    """The A_max of `grid` whose simulated statistic (images with astigmatism < A_max) is nearest `target`."""
    return float(grid[np.argmin([wasserstein_distance(sim[astig < a], target) for a in grid])])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sim", type=Path, required=True, help="simulated HDF5 drawn over a wide astigmatism range")
    p.add_argument("--real", type=Path, required=True, help="labelled real folder")
    p.add_argument("--max-sim", type=int, default=1500)
    p.add_argument("--boot", type=int, default=500)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    sim, astig = simulated(args.sim, args.max_sim)
    target, unread = real(args.real)
    top = float(astig.max())
    edges = np.linspace(0, np.ceil(top), 6)
    print(f"simulated: {len(sim)} images, true astigmatism 0-{top:.0f} A; Spearman(statistic, astigmatism) "
          f"{spearmanr(sim, astig)[0]:.2f}")
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        q = np.percentile(sim[(astig >= lo) & (astig < hi)], [25, 50, 75])
        bins.append({"astigmatism": [float(lo), float(hi)], "quartiles": q.round(4).tolist()})
        print(f"  astigmatism {lo:4.0f}-{hi:4.0f} A: statistic quartiles {q.round(3).tolist()}")
    rq = np.percentile(target, [25, 50, 75])
    print(f"real: {len(target)} images ({unread} without a readable lattice left out): quartiles {rq.round(3).tolist()}")
    grid = np.arange(4.0, np.floor(top) + 0.1, 2.0)
    fit = best_range(sim, astig, target, grid)
    boot = [best_range(sim, astig, target[i], grid) for i in bootstrap_indices(len(target), args.boot)]
    lo, hi = interval(np.array(boot))
    distance = {f"{a:g}": round(float(wasserstein_distance(sim[astig < a], target)), 4) for a in grid}
    print(f"nearest simulated range: astigmatism 0-{fit:g} A (95 % bootstrap interval {lo:g}-{hi:g} A); "
          f"Wasserstein distance by A_max: {distance}")
    result = {"n_sim": len(sim), "n_real": len(target), "real_unread": unread,
              "spearman": float(spearmanr(sim, astig)[0]), "sim_bins": bins, "real_quartiles": rq.round(4).tolist(),
              "a_max": fit, "a_max_interval": [float(lo), float(hi)], "distance": distance}
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
