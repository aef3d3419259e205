"""The evaluation report: every arm on identical folds, as a microscopist reads it.

Arms are summarised in one shape (`Arm`): pooled metrics per fold and the confusion counts of
every test image. From that come Table 1 of the paper (mean +- std over folds, difference to
Bragg), per-image distributions, the data-efficiency curve and Figure-4 style error overlays;
`write_report` writes report.md, a self-contained report.html (figures embedded) and metrics.json.
"""
from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
import numpy as np  # noqa: E402

from grapheneseg.metrics import METRICS, mean_and_spread, pooled, scores  # noqa: E402
from grapheneseg.splits import image_key  # noqa: E402

LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "jaccard": "Jaccard", "f1": "F1",
          "precision": "precision", "recall": "recall"}
ERROR_COLOURS = {"tp": (255, 255, 255), "tn": (0, 0, 0), "fp": (230, 30, 30), "fn": (40, 90, 255)}


@dataclass
class Arm:
    """One compared method: per-fold pooled metrics and per-image confusion counts."""

    name: str
    per_fold: list[dict[str, float]]
    counts: dict[str, list[int]]
    source: str = ""

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and std over folds of each fold's pooled metrics (the paper's averaging)."""
        return mean_and_spread(self.per_fold)

    @property
    def pooled_all(self) -> dict[str, float]:
        """Metrics of all test pixels of all folds together."""
        return pooled(np.array(c) for c in self.counts.values())

    def image_scores(self, metric: str = "jaccard") -> dict[str, float]:
        return {name: scores(np.array(c))[metric] for name, c in self.counts.items()}


def arm_from_bragg_cv(path: Path, name: str = "Bragg filter") -> Arm:
    """From `evaluate bragg`'s bragg_cv.json."""
    data = json.loads(Path(path).read_text())
    per_fold = [{"repeat": s["repeat"], "fold": s["fold"], **s["pooled"]} for s in data["splits"]]
    counts = {image_key(n, s["repeat"]): c
              for s in data["splits"] for n, c in s["per_image"].items()}
    return Arm(name, per_fold, counts, str(path))


def arm_from_train_cv(run_dir: Path, name: str) -> Arm:
    """From a `train real` / `train finetune` CV run folder (fold_*/metrics.json)."""
    folds = []
    for path in sorted(Path(run_dir).glob("fold_*/metrics.json")):
        folds.append(json.loads(path.read_text()))
    if not folds:
        raise ValueError(f"{run_dir}: no fold_*/metrics.json (not a finished CV run folder)")
    per_fold = [{"repeat": f["repeat"], "fold": f["fold"], **{m: f["test"][m] for m in METRICS}} for f in folds]
    counts = {image_key(n, f["repeat"]): c for f in folds for n, c in f["counts"].items()}
    return Arm(name, per_fold, counts, str(run_dir))


def error_example_names(arm: Arm, metric: str = "jaccard") -> list[tuple[str, str]]:
    """(title, image name) of the worst, median and best test images of `arm` by `metric`, among
    the images whose label holds contamination: an empty label scores 1.0 by definition and would
    always be "best". First repeat only (names without "@repeatR")."""
    ranked = sorted((scores(np.array(c))[metric], n) for n, c in arm.counts.items()
                    if "@" not in n and c[0] + c[2] > 0)  # counts [tp, fp, fn, tn]: truth = tp + fn
    if not ranked:
        raise ValueError(f"{arm.name}: no test image holds contamination; no error examples to show")
    return [("worst", ranked[0][1]), ("median", ranked[len(ranked) // 2][1]), ("best", ranked[-1][1])]


def table1(arms: list[Arm], baseline: str = "Bragg filter") -> list[dict[str, Any]]:
    """Rows of Table 1: per arm and metric, mean, std and the difference to the baseline in %."""
    base = next((a.summary for a in arms if a.name == baseline), None)
    rows = []
    for arm in arms:
        summary = arm.summary
        row: dict[str, Any] = {"arm": arm.name, "folds": len(arm.per_fold)}
        for m in METRICS:
            row[m] = summary[m]["mean"]
            row[f"{m}_std"] = summary[m]["std"]
            if base is not None and base[m]["mean"] > 0:
                row[f"{m}_vs_bragg_pct"] = 100 * (summary[m]["mean"] - base[m]["mean"]) / base[m]["mean"]
        rows.append(row)
    return rows


def intervals_markdown(intervals: dict[int, dict[str, dict[str, Any]]]) -> str:
    """Table of the paired differences per K (K = all images last)."""
    pairs = sorted({p for by_pair in intervals.values() for p in by_pair})
    lines = ["| K | " + " | ".join(pairs) + " |", "|" + "---|" * (len(pairs) + 1)]
    for k in sorted(intervals):
        cells = [f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" + (" *" if d["excludes_zero"] else "")
                 for d in (intervals[k][p] for p in pairs)]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table1_markdown(rows: list[dict[str, Any]]) -> str:
    head = "| arm | folds | " + " | ".join(LABELS[m] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for r in rows:
        cells = []
        for m in METRICS:
            cell = f"{r[m]:.3f} ± {r[m + '_std']:.3f}"
            if f"{m}_vs_bragg_pct" in r and r["arm"] != "Bragg filter":
                cell += f" ({r[m + '_vs_bragg_pct']:+.1f}%)"
            cells.append(cell)
        lines.append(f"| {r['arm']} | {r['folds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_per_image(arms: list[Arm], path: Path, metric: str = "jaccard") -> Path:
    """Distribution of the per-image metric for every arm (box + points), worst images named."""
    fig = Figure(figsize=(1.8 + 1.6 * len(arms), 4))
    ax = fig.subplots()
    values = [list(a.image_scores(metric).values()) for a in arms]
    ax.boxplot(values, showfliers=False)
    rng = np.random.default_rng(0)
    for i, v in enumerate(values, 1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=6, alpha=0.5)
    ax.set_xticks(range(1, len(arms) + 1), [a.name.replace(" + ", "\n+ ") for a in arms], fontsize=8)
    ax.set_ylabel(f"per-image {LABELS[metric]}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"per-image {LABELS[metric]} (images with no contamination in truth and prediction score 1)",
                 fontsize=9)
    return _save(fig, path)


def plot_data_efficiency(curves: dict[str, dict[int, float]], path: Path, n_all: int | None = None,
                         intervals: dict[int, dict[str, dict[str, Any]]] | None = None) -> Path:
    """Pooled Jaccard vs number of real training labels K, one line per arm; with `intervals`
    a second panel of the paired per-image differences and their bootstrap 95% intervals."""
    fig = Figure(figsize=(10 if intervals else 5, 3.6))
    axes = fig.subplots(1, 2 if intervals else 1, squeeze=False)
    ax = axes[0, 0]
    for name, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], "o-", label=name)
    ax.set_xscale("log")
    ks = sorted({k for c in curves.values() for k in c})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("real labelled training images K" + (f" (all = {n_all})" if n_all else ""))
    ax.set_ylabel("pooled Jaccard (CV)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if intervals:
        diff = axes[0, 1]
        ks = sorted(intervals)
        for shift, pair in zip((0.97, 1.03), sorted({p for v in intervals.values() for p in v})):
            d = [intervals[k][pair] for k in ks]
            diff.errorbar([k * shift for k in ks], [x["mean"] for x in d],
                          yerr=[[x["mean"] - x["low"] for x in d], [x["high"] - x["mean"] for x in d]],
                          fmt="o-", capsize=3, label=pair)
        diff.axhline(0, color="k", lw=0.8)
        diff.set_xscale("log")
        diff.set_xticks(ks, [str(k) for k in ks])
        diff.minorticks_off()
        diff.set_xlabel("real labelled training images K")
        diff.set_ylabel("per-image Jaccard difference")
        diff.set_title("mean over images, paired bootstrap 95% interval", fontsize=9)
        diff.grid(alpha=0.3)
        diff.legend(fontsize=8)
    return _save(fig, path)


def error_overlay(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Figure 4 colours: true positive white, true negative black, false positive red, false negative blue."""
    rgb = np.zeros(pred.shape + (3,), np.uint8)
    for key, sel in (("tp", pred & truth), ("tn", ~pred & ~truth), ("fp", pred & ~truth), ("fn", ~pred & truth)):
        rgb[sel] = ERROR_COLOURS[key]
    return rgb


def plot_error_examples(examples: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], path: Path) -> Path:
    """Rows: (title, micrograph, {arm: predicted mask}) with the truth mask under key 'truth'."""
    arms = [k for k in examples[0][2] if k != "truth"]
    fig = Figure(figsize=(2.2 * (1 + len(arms)), 2.3 * len(examples)))
    axes = fig.subplots(len(examples), 1 + len(arms), squeeze=False)
    for row, (title, image, masks) in zip(axes, examples):
        row[0].imshow(image, cmap="gray")
        row[0].set_title(title, fontsize=8)
        for ax, arm in zip(row[1:], arms):
            counts = scores(np.array([np.sum(masks[arm] & masks["truth"]), np.sum(masks[arm] & ~masks["truth"]),
                                      np.sum(~masks[arm] & masks["truth"]), np.sum(~masks[arm] & ~masks["truth"])]))
            ax.imshow(error_overlay(masks[arm], masks["truth"]))
            ax.set_title(f"{arm}\nJaccard {counts['jaccard']:.2f}", fontsize=7)
        for ax in row:
            ax.axis("off")
    fig.suptitle("white TP, black TN, red FP, blue FN", fontsize=9)
    return _save(fig, path)


def plot_structure_panel(examples: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> Path:
    """Figure 1 of Sadre et al. (g-l) for our maps: each (title, micrograph, four-class map) as the
    micrograph above its map in the paper's colours (lattice white, grain boundary red, vacuum
    green, contamination blue; evaluate.apply.structure.classes_rgb)."""
    from evaluate.apply.structure import classes_rgb

    fig = Figure(figsize=(2.3 * len(examples), 4.8))

    axes = fig.subplots(2, len(examples), squeeze=False)
    for column, (title, image, classes) in zip(axes.T, examples):
        lo, hi = np.percentile(image, [1, 99])
        column[0].imshow(np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1), cmap="gray")
        column[0].set_title(title, fontsize=7)
        column[1].imshow(classes_rgb(classes))
        for ax in column:
            ax.axis("off")
    fig.suptitle("lattice white, grain boundary red, vacuum green, contamination blue", fontsize=9)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write at the report's resolution and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _embed(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def write_report(out_dir: Path, arms: list[Arm], figures: dict[str, Path], provenance: dict[str, Any],
                 curves: dict[str, dict[int, float]] | None = None, notes: list[str] | None = None,
                 intervals: dict[int, dict[str, dict[str, Any]]] | None = None,
                 sections: list[tuple[str, str, str]] = (), extra_metrics: dict[str, Any] | None = None
                 ) -> dict[str, Path]:
    """report.md, self-contained report.html and metrics.json in `out_dir`; `intervals` (from
    grapheneseg.stats.paired_bootstrap, per K) are tabulated under Table 1; `sections` are (title, caption,
    markdown table) placed after the notes; `extra_metrics` are added to metrics.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table1(arms)
    by_series = any(d.get("resampled") == "series" for per_k in (intervals or {}).values() for d in per_k.values())
    caption = ("Paired differences per K: mean over test images of the per-image Jaccard difference, "
               "with its paired bootstrap 95% interval "
               + ("resampling whole focal series (frames of one series are near-copies)" if by_series else "over images")
               + " (* = the interval excludes 0). This is a per-image mean, not the pooled Jaccard of Table 1.")
    table2 = intervals_markdown(intervals) if intervals else ""
    metrics = {"table1": rows, "pooled_all_folds": {a.name: a.pooled_all for a in arms},
               "per_fold": {a.name: a.per_fold for a in arms},
               "per_image_jaccard": {a.name: a.image_scores() for a in arms},
               "data_efficiency": {k: {str(n): v for n, v in c.items()} for k, c in (curves or {}).items()},
               "paired_bootstrap": {str(k): v for k, v in (intervals or {}).items()},
               "sources": {a.name: a.source for a in arms}, **(extra_metrics or {}), "provenance": provenance}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    md = ["# Contamination segmentation: evaluation report", "",
          "Table 1 (pooled metrics per fold, mean ± std over folds and repeats; in brackets the difference "
          "to the Bragg filter):", "", table1_markdown(rows), ""]
    if table2:
        md += [caption, "", table2, ""]
    for note in notes or []:
        md += [note, ""]
    for title, text, table in sections:
        md += [f"## {title}", "", text, "", table, ""]
    for title, path in figures.items():
        md += [f"## {title}", "", f"![{title}]({os.path.relpath(path, out_dir)})", ""]
    md += ["## Provenance", "", "```", json.dumps(provenance, indent=1), "```", ""]
    (out_dir / "report.md").write_text("\n".join(md))
    table_html = _markdown_table_to_html(table1_markdown(rows))
    body = ["<h1>Contamination segmentation: evaluation report</h1>",
            "<p>Table 1: pooled metrics per fold, mean ± std over folds and repeats; in brackets the "
            "difference to the Bragg filter.</p>", table_html]
    if table2:
        body += [f"<p>{html.escape(caption)}</p>", _markdown_table_to_html(table2)]
    body += [f"<p>{html.escape(n)}</p>" for n in notes or []]
    for title, text, table in sections:
        body += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(text)}</p>", _markdown_table_to_html(table)]
    for title, path in figures.items():
        body += [f"<h2>{html.escape(title)}</h2>", _embed(path)]
    body += ["<h2>Provenance</h2>", f"<pre>{html.escape(json.dumps(provenance, indent=1))}</pre>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #bbb;padding:4px 7px}"
             "img{max-width:100%;border:1px solid #ddd}pre{background:#f5f5f5;padding:1em;overflow:auto}")
    (out_dir / "report.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    return {"md": out_dir / "report.md", "html": out_dir / "report.html", "metrics": out_dir / "metrics.json"}


def _markdown_table_to_html(table: str) -> str:
    lines = [line.strip("|").split("|") for line in table.splitlines() if not line.startswith("|---")]
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in lines[0])
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in lines[1:])
    return f"<table><tr>{head}</tr>{rows}</table>"
