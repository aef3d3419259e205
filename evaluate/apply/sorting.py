"""Sorting image sets by how clean they are (the paper's Figure 6): rank by graphene fraction.

Graphene fraction = share of the field not covered by amorphous carbon (1 - contamination
fraction of the predicted mask); the cleanest image ranks first.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from grapheneseg.tables import merge_rows

from .segment import PROVENANCE, Segmentation, overlay

RANKING_COLUMNS = ["rank", "file", "frame", "graphene_fraction", "contamination_fraction", "pixel_size_A", "ood",
                   *PROVENANCE]


def rank(results: Sequence[Segmentation]) -> list[Segmentation]:
    """Cleanest first (highest graphene fraction); ties broken by file name for a stable order."""
    return sorted(results, key=lambda s: (-s.graphene_fraction, str(s.micrograph.path)))


def write_ranking(ranked: Sequence[Segmentation], path: Path) -> Path:
    """ranking.csv: rank, file (absolute path), frame (of a stack), graphene_fraction,
    contamination_fraction, pixel_size_A, ood (the out-of-range measures of evaluate.apply.ood,
    `;`-separated, empty when none) and the provenance columns of predictions.csv. Rows of earlier runs into the same folder are kept (a file ranked again replaces its
    row) and every row is ranked anew, cleanest first (grapheneseg.tables.merge_rows)."""
    rows = [{"file": str(seg.micrograph.path.resolve()), "graphene_fraction": f"{seg.graphene_fraction:.5f}",
             "contamination_fraction": f"{seg.contamination_fraction:.5f}",
             "pixel_size_A": None if seg.pixel_size is None else f"{seg.pixel_size:.4f}", "ood": ";".join(seg.ood),
             "frame": seg.frame, **seg.provenance}
            for seg in ranked]
    return merge_rows(path, RANKING_COLUMNS, rows, order=lambda r: (-float(r["graphene_fraction"]), r["file"]),
                      number="rank")


def thumbnail_sheet(tiles: Sequence[tuple[np.ndarray, str]], path: Path, title: str, columns: int,
                    thumb_inches: float, title_inches: float) -> Path:
    """PNG grid of RGB thumbnails in the given order, each with its small title (`title_inches`
    of figure height per row for it), under one overall title."""
    rows = max(1, int(np.ceil(len(tiles) / columns)))
    fig = Figure(figsize=(columns * thumb_inches, rows * (thumb_inches + title_inches)))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for (rgb, label), ax in zip(tiles, axes.flat):
        ax.imshow(rgb, interpolation="lanczos")
        ax.set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def contact_sheet(ranked: Sequence[Segmentation], path: Path, columns: int = 10, thumb_inches: float = 1.3) -> Path:
    """PNG grid of overlays in rank order, each titled with its rank and graphene fraction."""
    tiles = [(overlay(seg.micrograph.image, seg.mask), f"#{i}  {seg.graphene_fraction:.2f}")
             for i, seg in enumerate(ranked, 1)]
    return thumbnail_sheet(tiles, path, "ranked by graphene fraction (cleanest first; red = predicted contamination)",
                           columns, thumb_inches, title_inches=0.25)


def export_best(ranked: Sequence[Segmentation], n: int, dest: Path, mode: str = "copy") -> list[Path]:
    """Copy or symlink the `n` cleanest micrographs into `dest`."""
    if mode not in ("copy", "link"):
        raise ValueError(f"mode must be copy or link, not {mode!r}")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for seg in ranked[:n]:
        src = seg.micrograph.path.resolve()
        target = dest / src.name
        if target.exists() or target.is_symlink():
            target.unlink()
        if mode == "copy":
            shutil.copy2(src, target)
        else:
            os.symlink(src, target)
        written.append(target)
    return written
