"""Atom finding, network vs extrema: against true atoms on simulations, label-free on real images.

    python benchmarks/bench_atoms.py [--n 12] [--variants 4] [--seed 7] [--atom-model CKPT]
        [--real DIR] [--n-real 105] [--figure FILE.png] [--val FILE.h5] [--json] [key=value ...]

Simulated part: `--n` structures x `--variants` optics variants at the simulator's defaults
(`--seed` 7: structures no training file of seed 0-6 holds). The true atoms are the sheet's
carbon atoms projected onto the image grid, minus those under the contamination label, in holes
or within 4 px of the edge. Both methods run with the true contamination and vacuum as the mask
(this measures atom finding, not segmentation); a found atom matches a true one within 0.5 A
(one-to-one). Prints precision and recall pooled over the atoms of each defocus bin (6 bins over
the configured range) and of all images.

Real part (`--real`, e.g. the 105 labelled micrographs; their labels are not used): each image
is segmented by the packaged contamination model (`--model`), then both methods find atoms
outside the predicted contamination. Label-free measures (evaluate.apply.atoms.bond_statistics)
among atoms at least 2 C-C bonds from the border and the contamination: the share with 3 bonds,
the share with none, and the bond-length spread (std / mean); printed as the median over images
(images with fewer than 20 such atoms left out, counted). The segmentation and the atom map both
go through the Predictor (evaluate.apply.predictor) as `evaluate atoms` runs them, so the
contamination mask is now made at the pixel range the contamination model records (the packaged
one: 0.30-0.62 A/px) instead of the 0.28-0.50 A/px fallback. `--figure`: the bond maps of the
best, median and worst image by the network's 3-bonded share, both methods. Also prints the
milliseconds per image of each method (atom finding only, after segmentation).

Threshold (`--val FILE.h5`, the atom model's training file): precision and recall of the network
method at peak thresholds 0.1-0.7 on the held-out structures of that file (the validation part
of `train pretrain`, never trained on; not the test structures above), pooled over their atoms,
true atoms = the peaks of the stored atom map: how `atoms.threshold` was chosen.

Registration (why the network fails where it does). In the weak-phase approximation an image's
Fourier coefficient at a lattice spot g is I(g) = c(g) V(g), V(g) = sum over the atoms of
exp(-2 pi i g.r) and c(g) the real CTF (2 sin chi times the envelopes; chi(g) = chi(-g) for
defocus, Cs and two-fold astigmatism). Translating the sheet by half a lattice vector multiplies
V(g) by -1 at two of the three {100} reflection pairs (and two of the three {110}), by +1 at the
third. Two-fold astigmatism varies chi around the {100} ring (by up to +-pi lambda k^2 C12 = +-1.16
rad at 40 A), so it can give the three {100} pairs CTFs of different signs: such an image is, spot
by spot, the image of the sheet translated by half a lattice vector under a CTF of one sign on the
{100} ring, the common case. Only the aberrations tell the two apart (their consistency across
the rings, or an estimate from elsewhere in the image), which a lattice crop barely shows. Each
simulated image is classed by the measured signs of its strongest grain's three {100} pairs
(`ring_signs`: sign of Re I(g)/V(g) against the true atoms; "uniform" or "mixed"), and precision
and recall are printed per class. `--ctf-draws N` prints, per defocus bin, the CTF at the {100}
ring (q = 1/2.13 A = 0.47 1/A) over N optics drawn as the simulator draws them, each at a random
grain orientation: the median of |sin chi| (azimuthal mean), the share with a pair within 0.2 of
a zero of sin chi, and the share with mixed signs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from evaluate.apply.atoms import (bond_statistics, draw_graph, find_atoms, find_atoms_network, match_atoms,
                                  registration)
from evaluate.apply.predictor import Predictor
from evaluate.apply.scale import Scale, ScaleSource
from grapheneseg.config import load_config
from grapheneseg.formats import Micrograph, read_micrograph
from evaluate.analysis.registration import ring_signs
from simulate.report import ctf_100_table
from grapheneseg.classes import VACUUM
from simulate.pipeline import simulate_structure, structure_for

BORDER = 4  # px ignored at the image edge (extrema there are truncated)
METHODS = ("network", "extrema")
RING_CLASSES = ("uniform", "mixed")
MIN_ATOMS = 20  # real images with fewer interior atoms are left out of the medians


def true_atoms(cfg, seed: int, s: int) -> tuple[np.ndarray, float]:
    """Graphene atom positions (row, col) in image px of structure s, and the pixel size."""
    structure, pixel_size, margin = structure_for(cfg, seed, s)  # the structure simulate_structure images
    keep = ~structure.amorphous & (structure.atoms.numbers == 6)
    xy = np.mod(structure.atoms.positions[keep, :2], structure.extent)
    return xy / pixel_size - margin, pixel_size


def simulated(args, cfg, atom_predictor, atoms_cfg) -> dict:
    """Per-image rows and pooled precision/recall per defocus bin and method."""
    size = cfg.grid.image_px
    edges = np.linspace(*cfg.optics.defocus, 7)
    rows = []
    for s in range(args.n):
        samples, _ = simulate_structure(cfg, args.seed, s, list(range(args.variants)))
        truth_all, pixel_size = true_atoms(cfg, args.seed, s)
        for sample in samples:
            excluded = (sample.mask > 0) | (sample.classes == VACUUM)
            truth = truth_all[np.all((truth_all >= BORDER) & (truth_all < size - BORDER), axis=1)]
            r, c = np.clip(np.round(truth).astype(int), 0, size - 1).T
            truth = truth[~excluded[r, c]]
            row = {"structure": s, "variant": int(sample.meta["variant"]), "pixel_size": pixel_size,
                   "defocus_A": float(sample.meta["defocus"]), "astigmatism_A": float(sample.meta["astigmatism"]),
                   "true": len(truth), "ring": ring_signs(sample.image, truth, pixel_size),
                   **registration(sample.image, pixel_size, atoms_cfg.min_reflection_balance)}
            for method in METHODS:
                if method == "network":
                    micrograph = Micrograph(Path(f"sim_{sample.index}"), sample.image, pixel_size)
                    graph = find_atoms_network(atom_predictor, micrograph, Scale(pixel_size, ScaleSource.SIMULATED),
                                               excluded, atoms_cfg.threshold, atoms_cfg.bond_tolerance)
                else:
                    graph = find_atoms(sample.image, excluded, pixel_size, bond_tolerance=atoms_cfg.bond_tolerance)
                found = graph.atoms[np.all((graph.atoms >= BORDER) & (graph.atoms < size - BORDER), axis=1)]
                precision, recall = match_atoms(found, truth, tolerance=0.5 / pixel_size)
                row[method] = {"found": len(found), "matched": round(recall * len(truth)),
                               "precision": precision, "recall": recall}
            rows.append(row)
            print(f"structure {s} variant {row['variant']}: {pixel_size:.3f} A/px, defocus {row['defocus_A']:+.0f} A, "
                  + ", ".join(f"{m} P {row[m]['precision']:.3f} R {row[m]['recall']:.3f}" for m in METHODS)
                  + f" ({len(truth)} true atoms, {{100}} CTF signs {row['ring']})", flush=True)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = [r for r in rows if lo <= r["defocus_A"] < hi or (hi == edges[-1] and r["defocus_A"] == hi)]
        bins.append({"defocus_A": [float(lo), float(hi)], "images": len(inside),
                     **{m: pooled(inside, m) for m in METHODS},
                     "network_by_ring": {c: by_ring(inside, c) for c in RING_CLASSES},
                     "network_by_registration": by_registration(inside)})
    return {"images": rows, "bins": bins, "pooled": {m: pooled(rows, m) for m in METHODS},
            "network_by_ring": {c: by_ring(rows, c) for c in RING_CLASSES},
            "network_by_registration": by_registration(rows)}


def by_registration(rows: list[dict]) -> dict:
    """Network precision/recall pooled over the images `evaluate atoms` passes ("ok") and flags
    ("uncertain"/"unknown"), with how many of each are mixed-sign images."""
    out = {}
    for name, chosen in (("ok", [r for r in rows if r["registration"] == "ok"]),
                         ("flagged", [r for r in rows if r["registration"] != "ok"])):
        out[name] = {"images": len(chosen), "mixed": sum(r["ring"] == "mixed" for r in chosen), **pooled(chosen, "network")}
    return out


def by_ring(rows: list[dict], ring: str) -> dict:
    """Network precision/recall pooled over the images of one {100} CTF sign class."""
    chosen = [r for r in rows if r["ring"] == ring]
    return {"images": len(chosen), **pooled(chosen, "network")}


def threshold_sweep(path: Path, models, atoms_cfg) -> list[dict]:
    """Network precision/recall per peak threshold on the validation structures of `path`."""
    import h5py
    from evaluate.apply.atoms import bond_length_px, map_peaks
    from grapheneseg.preprocessing import preprocess
    from train.models.runtime import predict_probability
    from train.pretrain import split_by_structure

    pre = load_config("pretrain").sim
    _, val = split_by_structure([path], pre.val_fraction, pre.val_max, pre.split_seed)
    thresholds = np.round(np.arange(0.1, 0.75, 0.1), 2)
    counts = np.zeros((len(thresholds), 3))  # found, matched, true
    with h5py.File(path, "r") as f:
        for row in val[:, 1]:
            image, mask, pixel = f["images"][row], f["masks"][row] > 0, float(f["meta"][row]["pixel_size"])
            size = image.shape[0]
            heat = predict_probability(models, preprocess(image)[None])[0]
            bond = bond_length_px(image, pixel)
            truth = map_peaks(f["atoms"][row] / 255.0, bond, 0.5)
            for k, t in enumerate(thresholds):
                found = map_peaks(heat, bond, t)
                keep = [np.all((p >= BORDER) & (p < size - BORDER), axis=1) for p in (found, truth)]
                found, true = (p[k_] for p, k_ in zip((found, truth), keep))
                found = found[~mask[tuple(np.round(found).astype(int).T)]]
                true = true[~mask[tuple(np.round(true).astype(int).T)]]
                precision, recall = match_atoms(found, true, 0.5 / pixel)
                counts[k] += (len(found), round(recall * len(true)), len(true))
    return [{"threshold": float(t), "precision": m / f if f else float("nan"), "recall": m / n if n else float("nan"),
             "images": len(val)} for t, (f, m, n) in zip(thresholds, counts)]


def pooled(rows: list[dict], method: str) -> dict[str, float]:
    """Precision and recall pooled over the atoms of `rows`."""
    found = sum(r[method]["found"] for r in rows)
    matched = sum(r[method]["matched"] for r in rows)
    true = sum(r["true"] for r in rows)
    return {"precision": matched / found if found else float("nan"), "recall": matched / true if true else float("nan")}


def real(args, atom_predictor, seg_predictor, atoms_cfg) -> dict:
    """Label-free bond statistics of both methods on the micrographs of `args.real`."""
    files = sorted(p for p in Path(args.real).glob("*.png") if not p.stem.endswith("_LABEL"))[:args.n_real]
    rows, graphs, seconds = [], {}, {m: [] for m in METHODS}
    for path in files:
        micrograph = read_micrograph(path)
        seg = seg_predictor.segment(micrograph)
        row = {"file": path.name, "pixel_size": seg.pixel_size}
        for method in METHODS:
            t0 = time.perf_counter()
            try:
                if method == "network":
                    graph = find_atoms_network(atom_predictor, micrograph, seg.scale, seg.mask,
                                               atoms_cfg.threshold, atoms_cfg.bond_tolerance)
                else:
                    graph = find_atoms(micrograph.image, seg.mask, seg.pixel_size,
                                       bond_tolerance=atoms_cfg.bond_tolerance)
            except ValueError as err:  # no lattice found: no scale
                row[method] = {"error": str(err)}
                continue
            seconds[method].append(time.perf_counter() - t0)
            row[method] = bond_statistics(graph, seg.mask, micrograph.image.shape)
            graphs[(path.name, method)] = (micrograph.image, graph, seg.mask)
        rows.append(row)
        print(f"{path.name}: " + ", ".join(
            f"{m} 3-bonded {row[m].get('three_bonded', float('nan')):.2f} of {row[m].get('atoms', 0)}"
            for m in METHODS), flush=True)
    summary = {}
    for method in METHODS:
        kept = [r[method] for r in rows if r[method].get("atoms", 0) >= MIN_ATOMS]
        summary[method] = {"images": len(kept), "left_out": len(rows) - len(kept),
                           "ms_per_image_median": 1000 * float(np.median(seconds[method])) if seconds[method] else None,
                           **{f"{key}_median": float(np.nanmedian([k[key] for k in kept])) if kept else float("nan")
                              for key in ("three_bonded", "unbonded", "bond_spread")},
                           "three_bonded_quartiles": np.nanpercentile([k["three_bonded"] for k in kept], [25, 75]).tolist()
                           if kept else None}
    if args.figure:
        ranked = sorted((r for r in rows if r["network"].get("atoms", 0) >= MIN_ATOMS),
                        key=lambda r: r["network"]["three_bonded"], reverse=True)
        if ranked:
            chosen = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
            figure(chosen, graphs, Path(args.figure))
    return {"images": rows, "summary": summary}


def figure(chosen: dict[str, dict], graphs: dict, path: Path) -> None:
    """Bond maps of the chosen images (columns) by both methods (rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(METHODS), len(chosen), figsize=(5 * len(chosen), 5 * len(METHODS)))
    for col, (label, row) in enumerate(chosen.items()):
        for r, method in enumerate(METHODS):
            ax = axes[r, col]
            if (row["file"], method) in graphs:
                draw_graph(ax, *graphs[(row["file"], method)])
            ax.set_axis_off()
            ax.set_title(f"{label}: {row['file']}\n{method}: 3-bonded {row[method].get('three_bonded', float('nan')):.2f} "
                         f"of {row[method].get('atoms', 0)}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=12, help="simulated structures (0: none)")
    parser.add_argument("--variants", type=int, default=4, help="optics variants per structure")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--atom-model", dest="atom_model", help="atom-map checkpoint (default: the packaged one)")
    parser.add_argument("--model", help="contamination checkpoint for the real part (default: the packaged one)")
    parser.add_argument("--real", help="folder of real micrographs (NAME.png; labels unused)")
    parser.add_argument("--n-real", dest="n_real", type=int, default=105)
    parser.add_argument("--figure", help="PNG of the best, median and worst real bond maps")
    parser.add_argument("--val", help="the atom model's training file: sweep the peak threshold on its held-out structures")
    parser.add_argument("--ctf-draws", dest="ctf_draws", type=int, default=0,
                        help="optics draws for the {100} CTF table per defocus bin (0: none)")
    parser.add_argument("--json", action="store_true", help="last line: JSON of every figure")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config("simulate", args.overrides)
    evaluate_cfg = load_config("evaluate")
    apply_cfg, atoms_cfg = evaluate_cfg.apply, evaluate_cfg.atoms
    atom_predictor = Predictor(Path(args.atom_model) if args.atom_model else None, apply_cfg, "cpu", task="atoms")
    result = {}
    if args.val:
        result["threshold_sweep"] = sweep = threshold_sweep(Path(args.val), atom_predictor.models, atoms_cfg)
        print(f"threshold sweep on the {sweep[0]['images']} held-out images of {args.val} (pooled over their atoms):")
        for t in sweep:
            print(f"  threshold {t['threshold']:.1f}: precision {t['precision']:.3f}, recall {t['recall']:.3f}")
    if args.ctf_draws:
        result["ctf_100"] = table = ctf_100_table(cfg, args.ctf_draws)
        print(f"CTF at the {{100}} ring (0.47 1/A), {args.ctf_draws} optics draws at random grain orientations:")
        for t in table:
            print(f"  defocus {t['defocus_A']}: median |sin chi| {t['median_abs_sin_chi']:.2f}, a pair near a zero "
                  f"(|sin chi| < 0.2) {t['near_zero_share']:.2f}, mixed signs {t['mixed_share']:.2f} ({t['draws']} draws)")
    if args.n:
        result["simulated"] = sim = simulated(args, cfg, atom_predictor, atoms_cfg)
        print("simulated, pooled over the atoms of each defocus bin (precision / recall within 0.5 A):")
        for b in sim["bins"] + [{"defocus_A": "all", "images": len(sim["images"]), **sim["pooled"],
                                 "network_by_ring": sim["network_by_ring"],
                                 "network_by_registration": sim["network_by_registration"]}]:
            print(f"  defocus {b['defocus_A']}: {b['images']} images, " + ", ".join(
                f"{m} {b[m]['precision']:.3f} / {b[m]['recall']:.3f}" for m in METHODS) + "; network by {100} CTF signs: "
                + ", ".join(f"{c} {v['images']} images {v['precision']:.3f} / {v['recall']:.3f}"
                            for c, v in b["network_by_ring"].items()) + "; network by registration flag: "
                + ", ".join(f"{c} {v['images']} images ({v['mixed']} mixed) {v['precision']:.3f} / {v['recall']:.3f}"
                            for c, v in b["network_by_registration"].items()))
    if args.real:
        seg_predictor = Predictor(Path(args.model) if args.model else None, apply_cfg, "cpu")
        result["real"] = rl = real(args, atom_predictor, seg_predictor, atoms_cfg)
        print(f"real ({len(rl['images'])} images), medians over images with >= {MIN_ATOMS} interior atoms:")
        for method, s in rl["summary"].items():
            print(f"  {method}: 3-bonded {s['three_bonded_median']:.3f} (quartiles {s['three_bonded_quartiles']}), "
                  f"unbonded {s['unbonded_median']:.3f}, bond-length spread {s['bond_spread_median']:.3f}, "
                  f"{s['images']} images ({s['left_out']} left out), {s['ms_per_image_median']} ms/image")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
