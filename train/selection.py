"""Inner validation: how long to train on the labels given, and whether to fine-tune at all.

A run on real labels (real-only or fine-tuning) never sees test labels, so it chooses its
training length from its own training images: it holds out whole series of images (frames of one
focal series are near-copies; `cv.grouping` and `cv.series_pattern` as the outer folds) - one
seeded split of about `select.holdout` of the images, or with fewer than `select.few` images
`select.inner_folds`-fold inner cross-validation - trains on the rest with validation every
`loop.val_every` epochs, and records the confusion counts of every held-out image per validated
epoch. When fine-tuning, the pretrained model as it is competes too, and wins ties: fine-tuning
is kept only when, at the chosen length,
  1. it beat the pretrained model on the counts pooled over every held-out image,
  2. it beat it on every inner split (with 5 labels and 3 inner folds, one held-out image can
     carry the pooled gain alone), and
  3. its gain is beyond noise: the paired bootstrap interval of the pooled Jaccard difference over
     the held-out images (`select.bootstrap` resamples, `select.level`) lies above zero.
The chosen length is then trained on all given labels (crossval.fit_selected).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grapheneseg.metrics import scores
from grapheneseg.splits import SERIES_PATTERN, fill, groups_of
from grapheneseg.stats import paired_pooled_bootstrap


def inner_splits(names: Sequence[str], select: Mapping[str, Any], grouping: str = "series",
                 pattern: str = SERIES_PATTERN) -> list[tuple[list[str], list[str]]]:
    """[(inner training names, held-out names)] of sorted `names`, holding out whole groups
    (grapheneseg.splits.groups_of: series, or single images with `grouping` "image"): one seeded
    hold-out of about `select.holdout` of the images, or inner k-fold CV over the groups below
    `select.few` images; [] when fewer than 2 images or 2 groups (nothing to hold out). With one
    image per group this is the image-wise split."""
    names = sorted(names)
    groups = groups_of(names, grouping, pattern)
    n, m = len(names), len(groups)
    if n < 2 or m < 2:
        return []
    order = np.random.default_rng([int(select["seed"]), n]).permutation(m).tolist()
    if n < int(select["few"]):
        parts = fill(groups, order, min(int(select["inner_folds"]), m))
    else:
        wanted = min(n - 1, max(1, round(float(select["holdout"]) * n)))
        held: list[str] = []
        for i in order[:m - 1]:  # whole groups until the share is held out; one group always trains
            if len(held) >= wanted:
                break
            held.extend(groups[i])
        parts = [sorted(held)]
    return [([x for x in names if x not in set(p)], p) for p in parts]


def _jaccard(counts: Sequence[int]) -> float:
    return scores(np.asarray(counts))["jaccard"]


def choose(curve: Mapping[int, Sequence[int]], epochs: int, pretrained: Sequence[int] | None = None,
           splits: Sequence[tuple[Mapping[int, Sequence[int]], Sequence[int]]] = (),
           images: tuple[Mapping[int, Sequence[Sequence[int]]], Sequence[Sequence[int]]] | None = None,
           n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The choice from pooled inner-validation counts [tp, fp, fn, tn] per validated epoch
    (`curve`) and, when fine-tuning, of the pretrained model as it is; `splits` holds each inner
    split's own (curve, pretrained counts), and fine-tuning must beat the pretrained model on
    every one of them at the chosen length too. `images` holds the per-image counts of the
    held-out images ({epoch: [counts of each image]}, [the pretrained model's counts of the same
    images]): fine-tuning must then also gain beyond noise, the paired bootstrap interval
    (`n_boot` resamples at `level`, seeded) of its pooled Jaccard gain lying above zero. When
    fine-tuning, `images` is required unless `n_boot` is 0 (no noise check).

    Returns {"choice": "pretrained" | "fine-tuned" | "trained", "epochs": the chosen length (0 for
    the pretrained model), "of_epochs", "jaccard": its inner Jaccard, "best_trained_jaccard",
    "pretrained_jaccard" (or None), "splits_won": how many inner splits fine-tuning won at the
    best length (None unless fine-tuning with `splits`), "gain": the interval of fine-tuning's
    gain at the best length ({"difference", "low", "high", "level", "n_images", "n_boot",
    "excludes_zero"}; None unless checked), "reason": why the pretrained model was kept ("not
    better", "splits", "noise"; None otherwise), "curve": {epoch: inner Jaccard}}. Ties go to the
    pretrained model, then to the shorter length."""
    jaccard = {int(e): _jaccard(c) for e, c in curve.items()}
    best = max(sorted(jaccard), key=lambda e: jaccard[e])  # first (shortest) of the best
    zero_shot = None if pretrained is None else _jaccard(pretrained)
    won = gain = reason = None
    if zero_shot is not None and splits:
        won = sum(_jaccard({int(e): c for e, c in split.items()}[best]) > _jaccard(pre) for split, pre in splits)
    if zero_shot is not None and int(n_boot) > 0:
        if images is None:
            raise ValueError("the fine-tuning guard needs the held-out images' own counts for its noise check "
                             "(or n_boot=0: no check)")
        tuned, before = images
        gain = paired_pooled_bootstrap({int(e): c for e, c in tuned.items()}[best], before, n_boot, seed, level)
    if zero_shot is not None:
        if zero_shot >= jaccard[best]:
            reason = "not better"
        elif won is not None and won < len(splits):
            reason = "splits"
        elif gain is not None and not gain["low"] > 0:
            reason = "noise"
    keep = reason is not None
    return {"choice": "pretrained" if keep else ("trained" if pretrained is None else "fine-tuned"),
            "epochs": 0 if keep else best, "of_epochs": int(epochs),
            "jaccard": zero_shot if keep else jaccard[best], "best_trained_jaccard": jaccard[best],
            "pretrained_jaccard": zero_shot, "splits_won": won, "gain": gain, "reason": reason,
            "curve": {str(e): round(j, 4) for e, j in sorted(jaccard.items())}}


def _interval(gain: Mapping[str, Any]) -> str:
    return (f"gain {gain['difference']:+.3f} ({100 * gain['level']:.0f} % interval "
            f"[{gain['low']:+.3f}, {gain['high']:+.3f}] over {gain['n_images']} image(s))")


def describe(selection: Mapping[str, Any]) -> str:
    """One line for the user, e.g. "kept the pretrained model: inner validation J 0.840 vs best
    fine-tuned 0.810 (...)", or "kept the pretrained model: best fine-tuned inner validation J
    0.856 vs pretrained 0.855, but the gain +0.001 (95 % interval [-0.004, +0.006] over 21
    image(s)) is within noise: its interval includes zero (...)"."""
    best, of = selection["best_trained_jaccard"], selection["of_epochs"]
    where = f"{selection['inner_images']} held-out image(s), {selection['inner_splits']} inner split(s)"
    gain = selection.get("gain")
    interval = f", {_interval(gain)}" if gain else ""
    if selection["choice"] == "pretrained":
        won = selection.get("splits_won")
        reason = selection.get("reason") or ("splits" if best > selection["pretrained_jaccard"] and won is not None
                                             else "not better")
        if reason == "splits":
            return (f"kept the pretrained model: best fine-tuned inner validation J {best:.3f} vs pretrained "
                    f"{selection['pretrained_jaccard']:.3f} pooled, but fine-tuning won only {won} of "
                    f"{selection['inner_splits']} inner splits{interval} ({where})")
        if reason == "noise":
            return (f"kept the pretrained model: best fine-tuned inner validation J {best:.3f} vs pretrained "
                    f"{selection['pretrained_jaccard']:.3f}, but the {_interval(gain)} is within noise: "
                    f"its interval includes zero ({where})")
        return (f"kept the pretrained model: inner validation J {selection['pretrained_jaccard']:.3f} vs best "
                f"fine-tuned {best:.3f}{interval} ({where})")
    if selection["choice"] == "fine-tuned":
        return (f"fine-tuned for {selection['epochs']} of {of} epochs: inner validation J {best:.3f} vs "
                f"pretrained {selection['pretrained_jaccard']:.3f}{interval} ({where})")
    return f"trained for {selection['epochs']} of {of} epochs: inner validation J {best:.3f} ({where})"
