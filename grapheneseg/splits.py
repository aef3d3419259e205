"""k-fold cross-validation splits, computed once and saved as JSON (as nnU-Net's splits_final.json).

Every arm that trains on the same data (Bragg, real-only, fine-tuned) reads the same file, so all
compared methods see identical folds. Splits depend only on the sorted names, k, repeats, seed
and the grouping.

Grouping (`cv.grouping`): frames of one focal series are nearly the same picture, so by default
("series") a fold holds whole series: the series of a name is the name less the match of
`cv.series_pattern` (default `_layer_\\d+$`, the frame suffix of the public set's names), and the
shuffled series go, larger first, each to the fold with the fewest images (`fill`).
"image" is the paper's image-wise protocol (Sadre et al.), frames of one series on both sides.
When every series is a single image both give the same folds. Each entry of splits.json records
its grouping and pattern; a saved file made with another grouping is refused, never reused.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

GROUPINGS = ("series", "image")
SERIES_PATTERN = r"_layer_\d+$"


def image_key(name: str, repeat: int) -> str:
    """Key of one image's test result in repeated CV: NAME in the first repeat, NAME@repeatR after."""
    return name if repeat == 0 else f"{name}@repeat{repeat}"


def series_of(name: str, pattern: str = SERIES_PATTERN) -> str:
    """The focal series of image `name`: the name less the first match of `pattern` (the name
    itself when nothing matches)."""
    return re.sub(pattern, "", name, count=1) or name


def series_grouper(grouping: str | None, pattern: str | None = SERIES_PATTERN) -> Callable[[str], str] | None:
    """The function from an image name to the group a bootstrap resamples whole: its focal series
    under the "series" grouping, None (each image alone) otherwise."""
    if grouping != "series":
        return None
    pattern = pattern or SERIES_PATTERN
    return lambda name: series_of(name, pattern)


def check_grouping(grouping: str, pattern: str | None = SERIES_PATTERN) -> None:
    """ValueError unless `grouping` is one of GROUPINGS and, for "series", `pattern` a regular expression."""
    if grouping not in GROUPINGS:
        raise ValueError(f"cv.grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    if grouping == "series":
        try:
            re.compile(pattern or "")
        except (re.error, TypeError) as err:
            raise ValueError(f"cv.series_pattern {pattern!r} is not a regular expression: {err}") from err
        if not pattern:
            raise ValueError("cv.grouping=series needs a cv.series_pattern (e.g. '_layer_\\d+$')")


def groups_of(names: Sequence[str], grouping: str = "series", pattern: str = SERIES_PATTERN) -> list[list[str]]:
    """The groups of `names` that a split never divides, each sorted, ordered by their first name:
    one per series ("series"), one per image ("image", the sorted names one by one)."""
    check_grouping(grouping, pattern)
    if grouping == "image":
        return [[n] for n in sorted(names)]
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(series_of(name, pattern), []).append(name)
    return sorted(groups.values(), key=lambda g: g[0])


def fill(groups: Sequence[Sequence[str]], order: Sequence[int], parts: int) -> list[list[str]]:
    """`parts` non-empty parts of the groups, balanced in images. Single-image groups only: the
    contiguous parts of `order` that numpy.array_split makes (so series of one image give exactly
    the image-wise folds). Else greedy: the groups in `order`, larger groups first (a stable sort,
    so the shuffle decides among equal sizes), each to the part with the fewest images (then the
    fewest groups, then the lowest number); parts then differ by at most the largest group."""
    if not 1 <= parts <= len(order):
        raise ValueError(f"cannot make {parts} part(s) of {len(order)} group(s)")
    if all(len(groups[i]) == 1 for i in order):
        return [sorted(groups[i][0] for i in chunk) for chunk in np.array_split(np.asarray(order, dtype=int), parts)]
    out: list[list[str]] = [[] for _ in range(parts)]
    counts = [0] * parts
    for i in sorted(order, key=lambda g: -len(groups[g])):
        p = min(range(parts), key=lambda q: (len(out[q]), counts[q], q))
        out[p].extend(groups[i])
        counts[p] += 1
    return [sorted(part) for part in out]


def kfold_splits(names: list[str], folds: int, repeats: int = 1, seed: int = 12345, grouping: str = "series",
                 pattern: str = SERIES_PATTERN) -> list[dict]:
    """[{"repeat", "fold", "grouping", "series_pattern", "train": [...], "test": [...]}] over
    `repeats` reshuffles of the groups (`groups_of`) of sorted names; the test parts hold whole
    groups and numbers of images that differ by at most the largest group (`fill`)."""
    groups = groups_of(names, grouping, pattern)
    n = sum(len(g) for g in groups)
    if folds < 2 or folds > len(groups):
        what = f"number of images ({n})" if grouping == "image" else f"number of series ({len(groups)} in {n} images)"
        raise ValueError(f"need 2 <= folds <= {what}, got {folds}")
    everything = sorted(names)
    splits = []
    for repeat in range(repeats):
        order = np.random.default_rng([seed, repeat]).permutation(len(groups)).tolist()
        for fold, test in enumerate(fill(groups, order, folds)):
            held = set(test)
            splits.append({"repeat": repeat, "fold": fold, "grouping": grouping,
                           "series_pattern": pattern if grouping == "series" else None,
                           "train": [n for n in everything if n not in held], "test": test})
    return splits


def straddling(splits: Sequence[dict], pattern: str = SERIES_PATTERN) -> list[tuple[int, str]]:
    """[(repeat, series)] of the series with frames on both sides of some split (sorted, each once
    per repeat): empty for series-grouped splits."""
    found = set()
    for split in splits:
        train = {series_of(n, pattern) for n in split["train"]}
        found |= {(int(split["repeat"]), s) for s in train & {series_of(n, pattern) for n in split["test"]}}
    return sorted(found)


def grouping_of(splits: Sequence[dict]) -> tuple[str, str | None]:
    """(grouping, series pattern) that `splits` record; files written before grouping was recorded
    were image-wise: ("image", None)."""
    first = splits[0] if splits else {}
    return first.get("grouping", "image"), first.get("series_pattern")


def _folds(splits: Sequence[dict]) -> list[tuple]:
    return [(s["repeat"], s["fold"], sorted(s["train"]), sorted(s["test"])) for s in splits]


def save_splits(splits: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits, indent=1))


def load_or_make_splits(path: Path, names: list[str], folds: int, repeats: int, seed: int, grouping: str = "series",
                        pattern: str = SERIES_PATTERN) -> list[dict]:
    """Reuse the splits at `path` when they match (names, folds, repeats, seed, grouping), else
    compute and save. A saved file made with another grouping is refused; one written before
    grouping was recorded is read as image-wise, and reused only when its folds are the wanted ones."""
    wanted = kfold_splits(names, folds, repeats, seed, grouping, pattern)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved == wanted:
            return saved
        made = grouping_of(saved)
        legacy = bool(saved) and "grouping" not in saved[0]
        if legacy and _folds(saved) == _folds(wanted):
            return saved
        if made != (grouping, wanted[0]["series_pattern"]):
            how = "image-wise" if made[0] == "image" else f"grouped by series (pattern {made[1]!r})"
            now = "image-wise" if grouping == "image" else f"grouped by series (pattern {pattern!r})"
            raise ValueError(f"{path}: saved splits were made {how}"
                             f"{' (before splits.json recorded its grouping)' if legacy else ''}, this run's are "
                             f"{now}; set cv.grouping (and cv.series_pattern) as the saved run had them, use another "
                             "output folder or delete the file")
        raise ValueError(
            f"{path}: saved splits differ from (data, folds={folds}, repeats={repeats}, seed={seed}, "
            f"grouping={grouping}); use another output folder or delete the file"
        )
    save_splits(wanted, path)
    return wanted


def adopt_splits(path: Path, splits: list[dict], names: list[str]) -> list[dict]:
    """Use splits handed over by a caller (one splits.json for every arm of a comparison): they
    must cover exactly `names` in every split, keep every series on one side when they say they are
    grouped by series, and match a splits.json already at `path`."""
    for split in splits:
        if sorted(split["train"] + split["test"]) != sorted(names) or set(split["train"]) & set(split["test"]):
            raise ValueError(f"{path}: handed-over split (repeat {split['repeat']}, fold {split['fold']}) does not "
                             "partition the labelled images")
    grouping, pattern = grouping_of(splits)
    if grouping == "series":
        both = straddling(splits, pattern)
        if both:
            raise ValueError(f"{path}: handed-over splits say they are grouped by series but {len(both)} series "
                             f"lie on both sides of a fold (e.g. {both[0][1]!r} in repeat {both[0][0]})")
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != splits:
            made = grouping_of(saved)
            differs = "" if made == (grouping, pattern) else f" (saved: grouping {made[0]}, handed over: {grouping})"
            raise ValueError(f"{path}: saved splits differ from the ones handed over{differs}; "
                             "use another output folder")
    save_splits(splits, path)
    return splits
