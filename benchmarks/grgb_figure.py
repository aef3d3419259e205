"""The one figure per grain-boundary micrograph of bench_grgb.py (its module doc): the micrograph,
the structure classes, the network's classes with the boundary lines, the orientation and the
numbered grains with the non-hexagonal rings; saved as a palette PNG. Kept apart from the
measures: it only draws what `analyse` returned.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.ndimage

from evaluate.apply.structure import COLOURS, draw_orientation, draw_wheel, scale_bar_nm
from grapheneseg.classes import BOUNDARY, CONTAMINATION, VACUUM
from grapheneseg.preprocessing import preprocess

QUANTIZE_COLOURS = 96  # the figures as palette PNGs (Floyd-Steinberg dithered): ~4x smaller



def tinted(pre: np.ndarray, classes: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(pre, [1, 99])
    rgb = np.repeat(np.clip((pre - lo) / max(hi - lo, 1e-6), 0, 1)[..., None], 3, axis=2)
    for cls in (CONTAMINATION, VACUUM, BOUNDARY):
        where = classes == cls
        rgb[where] = 0.45 * rgb[where] + 0.55 * np.array(COLOURS[cls]) / 255
    return rgb


def figure(row: dict, path: Path) -> None:
    import matplotlib.colors as mcolors
    from matplotlib import patheffects
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    image, s, mask, net, rings, lines = row["_maps"]
    px = s.pixel_size
    pre = preprocess(image)
    lo, hi = np.percentile(pre, [1, 99])
    grey = np.clip((pre - lo) / max(hi - lo, 1e-6), 0, 1)
    fig = Figure(figsize=(14, 3.1))
    width, bottom, height = 0.178, 0.01, 0.8
    lefts = [0.003, 0.184, 0.365, 0.546, 0.819]
    axes = [fig.add_axes([left, bottom, width, height]) for left in lefts]
    h, w = image.shape
    small = dict(fontsize=8)

    axes[0].imshow(grey, cmap="gray", interpolation="nearest")
    bar_nm = scale_bar_nm(w, px)
    bar = bar_nm * 10 / px
    axes[0].plot([0.05 * w, 0.05 * w + bar], [0.93 * h] * 2, color="white", lw=4, solid_capstyle="butt")
    axes[0].text(0.05 * w + bar / 2, 0.9 * h, f"{bar_nm:g} nm", color="white", ha="center", va="bottom",
                 fontsize=8, fontweight="bold", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    axes[0].set_title(f"{row['short']}\n{px:.3f} \u00c5/px ({row['pixel_size_source']})", **small)

    axes[1].imshow(tinted(pre, s.classes), interpolation="nearest")
    shares = {c: 100 * np.mean(s.classes == c) for c in (CONTAMINATION, VACUUM, BOUNDARY)}
    axes[1].set_title(f"structure classes: contamination {shares[CONTAMINATION]:.0f} %,\n"
                      f"vacuum {shares[VACUUM]:.0f} %, boundary (from lines) {shares[BOUNDARY]:.1f} %", **small)

    rgb = tinted(pre, net)
    rgb[lines] = 0.0
    axes[2].imshow(rgb, interpolation="nearest")
    ag = row["agreement"]
    axes[2].set_title(f"network: boundary {100 * np.mean(net == BOUNDARY):.1f} %, lines black;\n"
                      f"within 3 \u00c5: {100 * ag['network_near_lines'] / max(ag['network_px'], 1):.0f} % of network, "
                      f"{100 * ag['lines_near_network'] / max(ag['line_px'], 1):.0f} % of lines", **small)

    draw_orientation(axes[3], image, s)
    wheel = fig.add_axes([0.731, 0.3, 0.062, 0.38], projection="polar")
    draw_wheel(wheel)
    mis = ", ".join(f"{m:g}" for m in row["misorientation_deg"]) or "none"
    axes[3].set_title(f"orientation (hue), boundary lines black;\nmisorientation {mis} deg", **small)

    labels = s.grains.labels if s.grains is not None else np.zeros(image.shape, int)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    palette = np.array([(0.95, 0.6, 0.2), (0.3, 0.6, 0.95), (0.4, 0.85, 0.4), (0.85, 0.4, 0.85), (0.9, 0.85, 0.3)])
    for g in range(1, labels.max() + 1):
        where = labels == g
        rgb[where] = 0.6 * rgb[where] + 0.4 * palette[(g - 1) % len(palette)]
    rgb[mask] *= 0.4
    rgb[scipy.ndimage.binary_dilation(lines)] = 0
    axes[4].imshow(rgb, interpolation="nearest")
    for g in range(1, labels.max() + 1):
        inside = np.pad(labels == g, 1)
        depth = scipy.ndimage.distance_transform_edt(inside)[1:-1, 1:-1]
        r, c = np.unravel_index(np.argmax(depth), depth.shape)
        axes[4].text(c, r, str(g), ha="center", va="center", fontsize=14, fontweight="bold", color="white",
                     bbox=dict(boxstyle="circle", facecolor="black", alpha=0.6, linewidth=0))
    if rings is not None and lines.any():
        d = scipy.ndimage.distance_transform_edt(~lines) * px
        rc = np.clip(np.round(rings.centres).astype(int), 0, np.array(lines.shape) - 1)
        along = d[rc[:, 0], rc[:, 1]] <= 10.0
        styles = {5: ("red", "5"), 7: ("blue", "7"), 4: ("orange", "4, 8, 9"), 8: ("orange", None), 9: ("orange", None)}
        for size, (colour, _) in styles.items():
            pick = along & (rings.sizes == size)
            axes[4].scatter(rings.centres[pick, 1], rings.centres[pick, 0], s=14, c=colour, edgecolors="white",
                            linewidths=0.3)
        handles = [Line2D([], [], marker="o", ls="", color=c, label=l, markersize=4) for c, l in styles.values() if l]
        axes[4].legend(handles=handles, loc="lower right", fontsize=6, framealpha=0.7, handletextpad=0.1,
                       borderpad=0.2, title="rings", title_fontsize=6)
        note = f"rings within 1 nm of the lines ({row['registration']})"
    elif rings is None:
        note = f"no rings: registration {row['registration']}"
    else:
        note = "no boundary line: no rings shown"
    axes[4].set_title(f"{row['grains']} grain(s) numbered;\n{note}", **small)
    for ax in axes:
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        # the palette from the figure beside a strip of every hue, so the colour wheel keeps its hues
        hues = (255 * mcolors.hsv_to_rgb(np.stack(np.broadcast_arrays(np.linspace(0, 1, im.width)[None, :],
                                                                       1.0, 1.0), -1))).astype(np.uint8)
        both = Image.new("RGB", (im.width, im.height + 60))
        both.paste(im, (0, 0))
        both.paste(Image.fromarray(np.repeat(hues, 60, axis=0)), (0, im.height))
        palette = both.quantize(colors=QUANTIZE_COLOURS, method=Image.Quantize.MEDIANCUT)
        im.quantize(palette=palette).save(path, optimize=True)
