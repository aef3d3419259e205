"""The packaged models: which checkpoint answers which task when the user names none, where each
file and model card lies, the out-of-distribution reference ranges shipped beside them, and a
content key that tells two versions of one checkpoint file apart.

The files live in the installed package (grapheneseg/models/: checkpoints, their model cards
NAME.md and ood_reference.json); this module is the one place that names them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from train.models.checkpoints import checkpoint_paths


class MissingModel(ValueError):
    """A packaged file is missing from this installation."""


@dataclass(frozen=True)
class Packaged:
    """One packaged checkpoint: its file name, what it is in a sentence, and the option that replaces it."""

    file: str
    what: str
    option: str = "--model CKPT"


PACKAGED = {
    "contamination": Packaged("sim_default.ckpt", "simulation-only contamination model (zero human labels)"),
    "classes": Packaged("classes_default.ckpt", "four-class structure model (zero human labels)"),
    "atoms": Packaged("atoms_default.ckpt", "atom-map model (trained on simulations only)", "--atom-model CKPT"),
}
OOD_REFERENCE = "ood_reference.json"


def models_dir() -> Path:
    """The installed folder of the packaged models and their cards."""
    from importlib.resources import files

    return Path(str(files("grapheneseg") / "models"))


def packaged_path(task: str = "contamination") -> Path:
    """Where the packaged checkpoint of `task` lies in this installation, whether or not it is there
    (to recognise it among paths the user gives)."""
    if task not in PACKAGED:
        raise ValueError(f"no packaged model for task {task!r}; known: {', '.join(PACKAGED)}")
    return models_dir() / PACKAGED[task].file


def packaged(task: str = "contamination") -> Path:
    """The packaged checkpoint that answers `task` (contamination, classes or atoms); a
    MissingModel naming the file and the option to use instead when it is not installed."""
    path = packaged_path(task)
    if not path.is_file():
        raise MissingModel(f"{path}: the default {PACKAGED[task].what} is missing from this installation; "
                           f"give {PACKAGED[task].option}")
    return path


def default_notice(task: str = "contamination") -> str:
    """What a command says when it falls back on the packaged model of `task`."""
    path = packaged(task)
    return f"no model given: using the default {PACKAGED[task].what} {path} (model card {card(path)})"


def card(path: Path) -> Path:
    """The model card beside a checkpoint (NAME.md)."""
    return Path(path).with_suffix(".md")


def ood_reference() -> Path:
    """The packaged reference ranges of the out-of-distribution check (evaluate.apply.ood)."""
    return models_dir() / OOD_REFERENCE


def content_key(model: Path | Sequence[Path]) -> str:
    """SHA-256 over the bytes of every checkpoint a model path stands for (a file, a run folder's
    folds, or several): equal keys mean the same weights, whatever the paths; a checkpoint
    overwritten in place gets a new key."""
    digest = hashlib.sha256()
    for path in checkpoint_paths(model):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
