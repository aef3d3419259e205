"""Scoring a report's model arms: every model is scored through the Predictor
(evaluate.apply.predictor), as `evaluate score` and `evaluate predict` segment, so the arms of one
report (and a mask a user makes with the same model) come from one code path."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from grapheneseg.config import load_config
from grapheneseg.splits import image_key

from .report import Arm


def predictor_for(model: Path, device: str = "auto") -> Any:
    """The Predictor of `model` under the default apply config: every model arm of the report is
    scored as `evaluate score` and `evaluate predict` segment (evaluate.apply.predictor)."""
    from evaluate.apply.predictor import Predictor

    return Predictor(model, load_config("evaluate").apply, device)


def fold_arm(run_dir: Path, name: str, real: Path, splits: list[dict], device: str = "auto") -> Arm:
    """A cross-validated arm: each fold's model (fold_*/model.ckpt of `run_dir`) scored through
    the Predictor on that fold's test images of `real`, pooled per fold of `splits`."""
    from train.crossval import fold_dir
    from train.models.checkpoints import MODEL_FILE

    per_fold, counts = [], {}
    for split in splits:
        scored = predictor_for(fold_dir(run_dir, split) / MODEL_FILE, device).score(real, split["test"])
        per_fold.append({"repeat": split["repeat"], "fold": split["fold"], **scored["pooled"]})
        for n in split["test"]:
            counts[image_key(n, split["repeat"])] = scored["counts"][n]
    return Arm(name, per_fold, counts, str(run_dir))
