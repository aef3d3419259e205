"""Inner validation: how long to train on the labels given, and whether to fine-tune at all.

A run on real labels (real-only or fine-tuning) never sees test labels, so it chooses its
training length from its own training images: it holds out whole images (one seeded split of
`select.holdout` of them; with fewer than `select.few` images, `select.inner_folds`-fold inner
cross-validation), trains on the rest with validation every `loop.val_every` epochs, and pools
the confusion counts of the held-out images per validated epoch. When fine-tuning, the
pretrained model as it is competes too, and wins ties: fine-tuning is kept only when it beat
the pretrained model on the pooled inner validation and, at the chosen length, on every inner
split (with 5 labels and 3 inner folds, one held-out image can carry the pooled gain alone).
The chosen length is then trained on all given labels (crossval.fit_selected).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grapheneseg.metrics import scores


def inner_splits(names: Sequence[str], select: Mapping[str, Any]) -> list[tuple[list[str], list[str]]]:
    """[(inner training names, held-out names)] of sorted `names`: one seeded hold-out split,
    or inner k-fold CV below `select.few` images; [] when fewer than 2 images (nothing to hold out)."""
    names = sorted(names)
    n = len(names)
    if n < 2:
        return []
    order = np.random.default_rng([int(select["seed"]), n]).permutation(n)
    if n < int(select["few"]):
        parts = np.array_split(order, min(int(select["inner_folds"]), n))
    else:
        parts = [order[:min(n - 1, max(1, round(float(select["holdout"]) * n)))]]
    return [([names[i] for i in range(n) if i not in set(p.tolist())], sorted(names[i] for i in p))
            for p in parts]


def _jaccard(counts: Sequence[int]) -> float:
    return scores(np.asarray(counts))["jaccard"]


def choose(curve: Mapping[int, Sequence[int]], epochs: int, pretrained: Sequence[int] | None = None,
           splits: Sequence[tuple[Mapping[int, Sequence[int]], Sequence[int]]] = ()) -> dict[str, Any]:
    """The choice from pooled inner-validation counts [tp, fp, fn, tn] per validated epoch
    (`curve`) and, when fine-tuning, of the pretrained model as it is; `splits` holds each inner
    split's own (curve, pretrained counts), and fine-tuning must beat the pretrained model on
    every one of them at the chosen length too.

    Returns {"choice": "pretrained" | "fine-tuned" | "trained", "epochs": the chosen length (0 for
    the pretrained model), "of_epochs", "jaccard": its inner Jaccard, "best_trained_jaccard",
    "pretrained_jaccard" (or None), "splits_won": how many inner splits fine-tuning won at the
    best length (None unless fine-tuning with `splits`), "curve": {epoch: inner Jaccard}}. Ties
    go to the pretrained model, then to the shorter length."""
    jaccard = {int(e): _jaccard(c) for e, c in curve.items()}
    best = max(sorted(jaccard), key=lambda e: jaccard[e])  # first (shortest) of the best
    zero_shot = None if pretrained is None else _jaccard(pretrained)
    won = None
    if zero_shot is not None and splits:
        won = sum(_jaccard({int(e): c for e, c in split.items()}[best]) > _jaccard(pre) for split, pre in splits)
    keep = zero_shot is not None and (zero_shot >= jaccard[best] or (won is not None and won < len(splits)))
    return {"choice": "pretrained" if keep else ("trained" if pretrained is None else "fine-tuned"),
            "epochs": 0 if keep else best, "of_epochs": int(epochs),
            "jaccard": zero_shot if keep else jaccard[best], "best_trained_jaccard": jaccard[best],
            "pretrained_jaccard": zero_shot, "splits_won": won,
            "curve": {str(e): round(j, 4) for e, j in sorted(jaccard.items())}}


def describe(selection: Mapping[str, Any]) -> str:
    """One line for the user, e.g. "kept the pretrained model: inner validation J 0.840 vs best
    fine-tuned 0.810 (epoch 10 of 20)"."""
    best, of = selection["best_trained_jaccard"], selection["of_epochs"]
    where = f"{selection['inner_images']} held-out image(s), {selection['inner_splits']} inner split(s)"
    if selection["choice"] == "pretrained":
        won = selection.get("splits_won")
        if best > selection["pretrained_jaccard"] and won is not None:
            return (f"kept the pretrained model: best fine-tuned inner validation J {best:.3f} vs pretrained "
                    f"{selection['pretrained_jaccard']:.3f} pooled, but fine-tuning won only {won} of "
                    f"{selection['inner_splits']} inner splits ({where})")
        return (f"kept the pretrained model: inner validation J {selection['pretrained_jaccard']:.3f} vs best "
                f"fine-tuned {best:.3f} ({where})")
    if selection["choice"] == "fine-tuned":
        return (f"fine-tuned for {selection['epochs']} of {of} epochs: inner validation J {best:.3f} vs "
                f"pretrained {selection['pretrained_jaccard']:.3f} ({where})")
    return f"trained for {selection['epochs']} of {of} epochs: inner validation J {best:.3f} ({where})"
