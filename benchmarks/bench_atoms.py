"""Atom finding against the true atom positions of simulated images.

    python benchmarks/bench_atoms.py [--n 12] [--seed 7] [key=value ...simulate overrides]

For each simulated image (simulator defaults) the true graphene atoms are the structure's
non-amorphous carbon atoms projected onto the image grid, minus those under the contamination
label or in holes. `evaluate.atoms.find_atoms` runs with the true contamination mask (to measure
atom finding, not segmentation); a found atom matches a true one within 0.5 A (one-to-one).
Prints precision and recall per image and pooled, and the detected contrast against the defocus.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from evaluate.atoms import find_atoms, match_atoms
from grapheneseg.config import load_config
from simulate.labels import VACUUM
from simulate.pipeline import simulate_structure, structure_for

BORDER = 4  # px ignored at the image edge (extrema there are truncated)


def true_atoms(cfg, seed: int, s: int) -> tuple[np.ndarray, float]:
    """Graphene atom positions (row, col) in image px of structure s, and the pixel size."""
    structure, pixel_size, margin = structure_for(cfg, seed, s)  # the structure simulate_structure images
    keep = ~structure.amorphous & (structure.atoms.numbers == 6)
    xy = np.mod(structure.atoms.positions[keep, :2], structure.extent)
    return xy / pixel_size - margin, pixel_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config("simulate", args.overrides)
    size, rows, found_total, truth_total, matched_total = cfg.grid.image_px, [], 0, 0, 0
    for s in range(args.n):
        (sample,), _ = simulate_structure(cfg, args.seed, s, [0])
        truth, pixel_size = true_atoms(cfg, args.seed, s)
        excluded = (sample.mask > 0) | (sample.classes == VACUUM)
        inside = np.all((truth >= BORDER) & (truth < size - BORDER), axis=1)
        truth = truth[inside]
        r, c = np.clip(np.round(truth).astype(int), 0, size - 1).T
        truth = truth[~excluded[r, c]]
        graph = find_atoms(sample.image, mask=excluded, pixel_size=pixel_size)
        found = graph.atoms[np.all((graph.atoms >= BORDER) & (graph.atoms < size - BORDER), axis=1)]
        precision, recall = match_atoms(found, truth, tolerance=0.5 / pixel_size)
        matched = round(recall * len(truth))
        found_total, truth_total, matched_total = found_total + len(found), truth_total + len(truth), matched_total + matched
        defocus = float(sample.meta["defocus"]) if "defocus" in sample.meta.dtype.names else float("nan")
        rows.append({"structure": s, "pixel_size": pixel_size, "defocus_A": defocus, "contrast": graph.contrast,
                     "true": len(truth), "found": len(found),
                     "precision": precision, "recall": recall})
        print(f"structure {s}: {pixel_size:.3f} A/px, defocus {defocus:+.0f} A, {graph.contrast}-atom contrast, "
              f"precision {rows[-1]['precision']:.3f}, recall {rows[-1]['recall']:.3f} ({len(truth)} true atoms)")
    pooled = {"precision": matched_total / max(found_total, 1), "recall": matched_total / max(truth_total, 1)}
    print(f"pooled over {args.n} images: precision {pooled['precision']:.3f}, recall {pooled['recall']:.3f}")
    print(json.dumps({"pooled": pooled, "images": rows}))


if __name__ == "__main__":
    main()
