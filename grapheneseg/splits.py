"""k-fold cross-validation splits, computed once and saved as JSON (as nnU-Net's splits_final.json).

Every arm that trains on the same data (Bragg, real-only, fine-tuned) reads the same file, so all
compared methods see identical folds. Splits depend only on the sorted names, k, repeats and seed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def image_key(name: str, repeat: int) -> str:
    """Key of one image's test result in repeated CV: NAME in the first repeat, NAME@repeatR after."""
    return name if repeat == 0 else f"{name}@repeat{repeat}"


def kfold_splits(names: list[str], folds: int, repeats: int = 1, seed: int = 12345) -> list[dict]:
    """[{"repeat", "fold", "train": [...], "test": [...]}] over `repeats` reshuffles of sorted names."""
    names = sorted(names)
    if folds < 2 or folds > len(names):
        raise ValueError(f"need 2 <= folds <= number of images ({len(names)}), got {folds}")
    splits = []
    for repeat in range(repeats):
        order = np.random.default_rng([seed, repeat]).permutation(len(names))
        for fold, test_idx in enumerate(np.array_split(order, folds)):
            test = sorted(names[i] for i in test_idx)
            train = sorted(set(names) - set(test))
            splits.append({"repeat": repeat, "fold": fold, "train": train, "test": test})
    return splits


def save_splits(splits: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits, indent=1))


def load_or_make_splits(path: Path, names: list[str], folds: int, repeats: int, seed: int) -> list[dict]:
    """Reuse the splits at `path` when they match (names, folds, repeats), else compute and save."""
    wanted = kfold_splits(names, folds, repeats, seed)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved == wanted:
            return saved
        raise ValueError(
            f"{path}: saved splits differ from (data, folds={folds}, repeats={repeats}, seed={seed}); "
            "use another output folder or delete the file"
        )
    save_splits(wanted, path)
    return wanted


def adopt_splits(path: Path, splits: list[dict], names: list[str]) -> list[dict]:
    """Use splits handed over by a caller (one splits.json for every arm of a comparison): they
    must cover exactly `names` in every split, and match a splits.json already at `path`."""
    for split in splits:
        if sorted(split["train"] + split["test"]) != sorted(names) or set(split["train"]) & set(split["test"]):
            raise ValueError(f"{path}: handed-over split (repeat {split['repeat']}, fold {split['fold']}) does not "
                             "partition the labelled images")
    if path.exists() and json.loads(path.read_text()) != splits:
        raise ValueError(f"{path}: saved splits differ from the ones handed over; use another output folder")
    save_splits(splits, path)
    return splits
