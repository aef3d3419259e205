"""Active labelling simulated on labelled CV folds: does labelling what `suggest` picks beat
labelling K images at random?

For each fold (of one repeat of the splits), the fold's training images are treated as unlabelled:
the simulation checkpoint segments them with their uncertainty (1 member x 8 symmetries, as
`evaluate suggest`) and `evaluate.suggest.choose` ranks them; its first K are the "suggest" arm
(the greedy choice is nested: the first 10 of 20 are the choice for 10). The "random" arm draws K
from the same training part with `cv.subset_seed` = each seed. Every arm is fine-tuned from the
same checkpoint on its K images with the same training config and scored on the fold's test part
(train.crossval.cross_validate, one run folder per arm). Reported per K: the Jaccard pooled over
all test pixels of all folds per arm, the mean, sd and range of the random arms, suggest minus the
random mean, and per image the suggest Jaccard minus the mean of the random arms with a paired
bootstrap 95 % interval (whole focal series resampled under series-grouped folds); beside them the
checkpoint's own Jaccard on the same test pixels (zero-shot, no label).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grapheneseg.config import load_config, override, write_json
from grapheneseg.fetch import sha256
from grapheneseg.metrics import pooled
from grapheneseg.micrographs import find_pairs
from grapheneseg.splits import series_grouper
from grapheneseg.stats import paired_bootstrap

from .scoring import fold_arm, predictor_for
from evaluate.apply.suggest import choose


def suggested_order(pretrained: Path, real: Path, splits: Sequence[dict], n: int, apply_cfg: Any,
                    device: str = "cpu", progress: bool = False) -> list[dict]:
    """[{"repeat", "fold", "train": the first `n` names `suggest` ranks among the fold's training
    part, best first}] per split. Every image is segmented once (the model is the same for all
    folds); the choice is made among each fold's training images only."""
    from evaluate.apply.predictor import Predictor

    files = [image for _, image, _ in find_pairs(Path(real))]
    results, failed = Predictor(Path(pretrained), apply_cfg, device).segment_files(files, uncertainty=True,
                                                                                   progress=progress)
    if failed:
        raise ValueError(f"active labelling: could not segment {sorted(failed)}")
    by_name = {seg.micrograph.path.stem: seg for seg in results}
    return [{"repeat": s["repeat"], "fold": s["fold"],
             "train": [c.segmentation.micrograph.path.stem for c in choose([by_name[n] for n in s["train"]], n)]}
            for s in splits]


def zero_shot(pretrained: Path, real: Path, splits: Sequence[dict], device: str = "auto") -> float:
    """Jaccard of the checkpoint as it is (no label), pooled over the test pixels of `splits`:
    what either arm's fine-tuning has to beat."""
    counts = predictor_for(Path(pretrained), device).score(Path(real))["counts"]
    return pooled(np.array(counts[n]) for s in splits for n in s["test"])["jaccard"]


def _by_label_area(suggest: Any, randoms: Sequence[Any]) -> list[dict[str, Any]]:
    """Where the arms differ: the test images in thirds by labelled contamination area (smallest
    first; images with an empty label apart, first), each with the mean per-image Jaccard
    difference suggest minus random mean and both arms' pooled Jaccard."""
    names = sorted(suggest.counts)
    area = np.array([suggest.counts[n][0] + suggest.counts[n][2] for n in names])  # tp + fn = label pixels
    groups = [("empty label", np.flatnonzero(area == 0))]
    groups += [(f"label area third {i + 1}", g) for i, g in
               enumerate(np.array_split(np.flatnonzero(area > 0)[np.argsort(area[area > 0], kind="stable")], 3))]
    mine, theirs = suggest.image_scores(), [a.image_scores() for a in randoms]
    rows = []
    for label, idx in groups:
        chosen = [names[i] for i in idx]
        if not chosen:
            continue
        diff = [mine[n] - np.mean([t[n] for t in theirs]) for n in chosen]
        rows.append({"group": label, "images": len(chosen), "label_pixels_mean": float(area[idx].mean()),
                     "per_image_suggest_minus_random": float(np.mean(diff)),
                     "suggest_pooled": pooled(np.array(suggest.counts[n]) for n in chosen)["jaccard"],
                     "random_pooled_mean": float(np.mean([pooled(np.array(a.counts[n]) for n in chosen)["jaccard"]
                                                          for a in randoms]))})
    return rows


def _summary(suggest_dir: Path, random_dirs: Sequence[Path], real: Path, splits: Sequence[dict],
             device: str = "auto") -> dict[str, Any]:
    """Pooled Jaccard of the suggest arm and of each random arm (each fold's model scored through
    the Predictor, as the zero-shot model is), their spread and differences."""
    suggest = fold_arm(suggest_dir, "suggest", real, splits, device)
    randoms = [fold_arm(d, f"random {i}", real, splits, device) for i, d in enumerate(random_dirs)]
    values = np.array([a.pooled_all["jaccard"] for a in randoms])
    per_image = [a.image_scores() for a in randoms]
    random_mean_image = {n: float(np.mean([p[n] for p in per_image])) for n in per_image[0]}
    return {"suggest": suggest.pooled_all["jaccard"], "random": values.tolist(),
            "random_mean": float(values.mean()), "random_sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "random_min": float(values.min()), "random_max": float(values.max()),
            "suggest_minus_random_mean": float(suggest.pooled_all["jaccard"] - values.mean()),
            "per_image_suggest_minus_random": paired_bootstrap(
                suggest.image_scores(), random_mean_image,
                group_of=series_grouper(splits[0].get("grouping"), splits[0].get("series_pattern"))),
            "by_label_area": _by_label_area(suggest, randoms),
            "suggest_fold_jaccard": [f["jaccard"] for f in suggest.per_fold],
            "random_fold_jaccard": [[f["jaccard"] for f in a.per_fold] for a in randoms]}


def run_active(real: Path, pretrained: Path, out: Path, splits: Sequence[dict], ks: Sequence[int],
               seeds: Sequence[int], train_overrides: Sequence[str] = (), apply_cfg: Any = None,
               device: str = "auto", progress: bool = False) -> dict[str, Any]:
    """The simulation of the module doc in `out` on the given `splits` (one repeat; a subset of its
    folds is allowed and pools only those folds): suggested.json, suggest-K{K}/ and
    random-K{K}-seed{S}/ run folders (finished folds are reused), active.json. `train_overrides`
    go to the train config of every arm (e.g. "select.enabled=false")."""
    from train.crossval import cross_validate

    if len({s["repeat"] for s in splits}) != 1:
        raise ValueError("active labelling runs on the folds of one repeat; give the splits of one repeat")
    if not ks or not seeds:
        raise ValueError(f"active labelling needs at least one K and one random seed, got ks={list(ks)}, "
                         f"seeds={list(seeds)}")
    out, digest = Path(out), sha256(Path(pretrained))
    order_path = out / "suggested.json"
    saved = json.loads(order_path.read_text()) if order_path.exists() else None
    if saved and saved["pretrained_sha256"] != digest:
        raise ValueError(f"{out}: its runs start from another checkpoint than {pretrained} (SHA-256 differs); "
                         "use another output folder")
    wanted = {(s["repeat"], s["fold"]) for s in splits}
    if saved and saved["n"] >= max(ks) and wanted <= {(s["repeat"], s["fold"]) for s in saved["splits"]}:
        order = [s for s in saved["splits"] if (s["repeat"], s["fold"]) in wanted]
    else:
        cfg = apply_cfg if apply_cfg is not None else load_config("evaluate").apply
        order = suggested_order(pretrained, real, splits, max(ks), cfg, device, progress)
        write_json(order_path, {"n": max(ks), "pretrained": str(pretrained), "pretrained_sha256": digest,
                                "splits": order})
    base = [override("data.real_dir", real), override("finetune.pretrained", pretrained), f"cv.folds={len(splits)}",
            "cv.repeats=1", "device=" + device, *train_overrides]
    results: dict[str, Any] = {"ks": list(ks), "seeds": list(seeds), "folds": [s["fold"] for s in splits],
                               "train_overrides": list(train_overrides),
                               "zero_shot": zero_shot(pretrained, real, splits, device), "by_k": {}}
    for k in ks:
        names = write_json(out / f"suggested-K{k}.json",
                           [{**s, "train": s["train"][:k]} for s in order])
        suggest_dir = out / f"suggest-K{k}"
        cross_validate(load_config("train", [*base, override("cv.train_names", names)]), real, suggest_dir,
                       resume=True, splits=list(splits))
        random_dirs = []
        for seed in seeds:
            random_dirs.append(out / f"random-K{k}-seed{seed}")
            cross_validate(load_config("train", [*base, f"cv.n_real={k}", f"cv.subset_seed={seed}"]), real,
                           random_dirs[-1], resume=True, splits=list(splits))
        results["by_k"][str(k)] = _summary(suggest_dir, random_dirs, real, splits, device)
    write_json(out / "active.json", results)
    return results


def active_markdown(results: dict[str, Any]) -> str:
    """The table: per K, pooled Jaccard of the checkpoint unchanged, of suggest and of the random
    arms, and the differences."""
    lines = ["| K | zero-shot (no label) | suggest | random: mean (sd; min-max) over seeds | suggest - random mean | "
             "per image, suggest - random mean [95 % CI] |", "|---|---|---|---|---|---|"]
    for k, r in results["by_k"].items():
        d = r["per_image_suggest_minus_random"]
        lines.append(f"| {k} | {results['zero_shot']:.3f} | {r['suggest']:.3f} | {r['random_mean']:.3f} ({r['random_sd']:.3f}; "
                     f"{r['random_min']:.3f}-{r['random_max']:.3f}), {len(r['random'])} seeds | "
                     f"{r['suggest_minus_random_mean']:+.3f} | {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |")
    return "\n".join(lines)
