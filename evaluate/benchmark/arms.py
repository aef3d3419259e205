"""The trained arms of `evaluate report` and the keys that make their runs reusable.

The real-only and fine-tuned U-Nets (at every K of the budget, an arm that hit its training cap
trained again longer), the simulation-only model scored on the folds, the pretraining and the
active-labelling runs. Every trained arm lives in a folder named after a key of its contents: its
resolved config (paths left out), the SHA-256 of the labelled images, of the splits, of the --sim
file or --pretrained checkpoint it starts from, and of the code that produces it; a rerun reuses
exactly the runs whose key matches (finished folds are read back) and never a stale one. Kept
apart from the report's assembly (comparison.py) so that what is trained, and when it is reused,
reads in one place.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from .active import run_active
from grapheneseg.config import load_config, override
from grapheneseg.fetch import sha256
from grapheneseg.metrics import scores
from grapheneseg.micrographs import load_labelled
from grapheneseg.splits import image_key

from .scoring import fold_arm, predictor_for
from .report import Arm

REAL_ONLY, SIM_ONLY, FINETUNED, BRAGG = ("U-Net real-only", "U-Net sim-only", "U-Net sim-pretrained + fine-tuned",
                                         "Bragg filter")


PATH_KEYS = (("data", "real_dir"), ("finetune", "pretrained"))  # located files: keyed by contents instead
PACKAGES = Path(__file__).resolve().parents[2]  # the install root, above grapheneseg/ ... evaluate/
ACTIVE_CODE = ("evaluate/apply", "evaluate/benchmark/active.py")  # the code behind the active arms


def run_key(*parts: Any) -> str:
    """Short content key of JSON-able parts (the folder name of an arm)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_key(cfg: Any) -> dict[str, Any]:
    """The resolved config without the paths of input files (their contents are keyed instead)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for section, name in PATH_KEYS:
        if isinstance(plain.get(section), dict) and name in plain[section]:
            plain[section][name] = None
    return plain


BRAGG_SECTIONS = ("data", "bragg", "cv", "seed")  # all the Bragg arm reads of the evaluate config


def bragg_config_key(cfg: Any) -> dict[str, Any]:
    """`config_key` of the sections the Bragg arm reads (`BRAGG_SECTIONS`): a report setting such as
    `report.extend_capped` changes the report, not the Bragg fit, so it does not refit the arm."""
    plain = config_key(cfg)
    return {name: plain.get(name) for name in BRAGG_SECTIONS}


def images_sha256(real: Path) -> str:
    """SHA-256 over the names and bytes of every NAME.png / NAME_LABEL.png of a labelled folder."""
    digest = hashlib.sha256()
    for path in sorted(Path(real).glob("*.png")):
        digest.update(path.name.encode() + bytes.fromhex(sha256(path)))
    return digest.hexdigest()


def code_sha256(*parts: str) -> str:
    """SHA-256 of the Python sources of the given packages or files (relative to the install root):
    the code version of an arm, unchanged by edits elsewhere (README, other packages)."""
    digest = hashlib.sha256()
    for part in parts:
        root = PACKAGES / part
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(str(path.relative_to(PACKAGES)).encode() + path.read_bytes())
    return digest.hexdigest()


def _train_cfg(real: Path, budget: Any, extra: list[str], k: int | None, pretrained: Path | None,
               folds: int | None = None):
    overrides = [override("data.real_dir", real), f"cv.folds={budget.folds if folds is None else folds}",
                 f"cv.repeats={budget.repeats}", f"cv.n_real={'null' if k is None else k}",
                 override("finetune.pretrained", pretrained), *budget.train, *extra]
    return load_config("train", overrides)


def _arm_name(name: str, k: int | None) -> str:
    return name if k is None else f"{name} K={k}"


def pretrained_checkpoint(out: Path, budget: Any, sim: Path | None, pretrained: Path | None, extra: list[str],
                          provenance: dict[str, Any]) -> tuple[Path, str]:
    """(the given simulation checkpoint, or one pretrained here on `sim`, and its SHA-256); a
    pretraining is reused only when config, code and the bytes of `sim` all match."""
    if pretrained is None:
        from train.pretrain import pretrain

        pcfg = load_config("pretrain", [*budget.pretrain, *extra])
        data_sha = sha256(Path(sim))
        key = run_key(config_key(pcfg), data_sha, code_sha256("grapheneseg", "train"))
        pretrained = out / "arms" / f"pretrain-{key}" / "sim.ckpt"
        pretrain(pcfg, [Path(sim)], pretrained, resume=True)
        provenance["runs"]["pretraining"] = {"data": str(sim), "data_sha256": data_sha, "key": key}
    digest = sha256(Path(pretrained))
    provenance["sim_checkpoint"] = {"path": str(pretrained), "sha256": digest}
    return Path(pretrained), digest


def capped(run: dict[str, Any]) -> int:
    """In how many folds a trained arm's inner validation chose its longest training (its curve
    still rising at the budget's cap)."""
    return sum(c is not None and c == m for c, m in zip(run.get("chosen_epochs") or [], run.get("of_epochs") or []))


def doubled(tcfg: Any, longer: list[str]) -> list[str]:
    """`longer` plus the overrides that double the training of `tcfg` (epochs, fine-tuning epochs
    and the step floor): an arm that hit its cap runs again, so that no arm is compared under-trained."""
    words = [f"loop.epochs={2 * int(tcfg.loop.epochs)}"]
    if tcfg.finetune.get("epochs"):
        words.append(f"finetune.epochs={2 * int(tcfg.finetune.epochs)}")
    if tcfg.loop.get("min_steps"):
        words.append(f"loop.min_steps={2 * int(tcfg.loop.min_steps)}")
    return [*longer, *words]


def capped_notes(runs: dict[str, dict[str, Any]]) -> list[str]:
    """One caveat per arm whose inner validation chose the budget's longest training in some fold:
    the curve was still rising at the cap, so the arm may be under-trained and its gap to the
    others overstated."""
    notes = []
    for name, run in runs.items():
        chosen, cap = run.get("chosen_epochs") or [], run.get("of_epochs") or []
        if capped(run):
            notes.append(f"{name} chose its longest training ({cap[0]} epochs"
                         + (f", after {run['doublings']} doubling(s) of the budget's" if run.get("doublings") else "")
                         + f") in {capped(run)} of {len(chosen)} folds: its inner validation was still improving at the "
                         "cap, so it may be under-trained and its gap to the other arms overstated (report.extend_capped "
                         "allows more doublings)")
        elif run.get("doublings"):
            notes.append(f"{name} hit the budget's training length and was trained again {run['doublings']} time(s) at "
                         f"twice the length; at {cap[0]} epochs no fold chose the cap")
    return notes


def scored_arm(name: str, scored: dict[str, Any], test: Path) -> Arm:
    """An arm scored once on the labelled folder `test` (one "fold": no spread)."""
    return Arm(name, [{"repeat": 0, "fold": 0, **scored["pooled"]}], scored["counts"], str(test))


def sim_only_arm(ckpt: Path, real: Path, splits: list[dict], device: str = "auto") -> Arm:
    """The simulation-only model scored on every fold's test images (it never saw real labels),
    pooled per fold of `splits` as the trained arms are."""
    counts = predictor_for(ckpt, device).score(real)["counts"]
    per_fold, all_counts = [], {}
    for split in splits:
        fold_counts = [np.array(counts[n]) for n in split["test"]]
        per_fold.append({"repeat": split["repeat"], "fold": split["fold"], **scores(np.sum(fold_counts, axis=0))})
        for n in split["test"]:
            all_counts[image_key(n, split["repeat"])] = counts[n]
    return Arm(SIM_ONLY, per_fold, all_counts, str(ckpt))


def trained_arms(out: Path, real: Path, budget: Any, train_extra: list[str], pretrained: Path, pretrained_sha: str,
                 images: str, provenance: dict[str, Any], splits: list[dict] | None = None, test: Path | None = None,
                 device: str = "auto") -> tuple[dict[str, Arm], dict[int, dict[str, Arm]], dict[str, dict[int, float]],
                                                dict[str, Path]]:
    """The real-only and fine-tuned arms at every K of the budget, K = all last: cross-validated on
    `splits`, or (`test`) trained on all of `real` and scored once on `test`; each run reused when
    its config, images, folds, pretrained checkpoint and code all match. Returns (the arms at K =
    all, {K: arms}, {arm: {K: Jaccard}}, {arm: run folder at K = all})."""
    from train.crossval import cross_validate, train_all

    final: dict[str, Arm] = {}
    by_k: dict[int, dict[str, Arm]] = {}
    curves: dict[str, dict[int, float]] = {REAL_ONLY: {}, FINETUNED: {}}
    run_dirs: dict[str, Path] = {}
    n_all = len(splits[0]["train"]) if splits else len(load_labelled(real))
    splits_key = [run_key(splits)] if splits else []
    code = code_sha256("grapheneseg", "train")
    for k in [*budget.ks, None]:
        for name, init in ((REAL_ONLY, None), (FINETUNED, pretrained)):
            tcfg = _train_cfg(real, budget, train_extra, k, init, folds=None if splits else 0)
            stem = f"{'real' if init is None else 'finetuned'}-K{k or 'all'}"
            if splits:
                longer: list[str] = []
                for doublings in range(int(budget.get("extend_capped") or 0) + 1):
                    tcfg = _train_cfg(real, budget, [*train_extra, *longer], k, init)
                    key = run_key(config_key(tcfg), images, *splits_key, None if init is None else pretrained_sha, code)
                    run_dir = out / "arms" / f"{stem}-{key}"
                    summary = cross_validate(tcfg, real, run_dir, resume=True, splits=splits)
                    record = {"folder": str(run_dir), "key": key, "train_seconds": summary.get("train_seconds"),
                              "chosen_epochs": [f.get("epochs") for f in summary["selection"]],
                              "of_epochs": [f.get("of_epochs") for f in summary["selection"]],
                              "choices": [f.get("choice") for f in summary["selection"]], "doublings": doublings}
                    if not capped(record):
                        break
                    longer = doubled(tcfg, longer)
                arm = fold_arm(run_dir, _arm_name(name, k), real, splits, device)
                jaccard = arm.summary["jaccard"]["mean"]
            else:
                key = run_key(config_key(tcfg), images, *splits_key, None if init is None else pretrained_sha, code)
                run_dir = out / "arms" / f"{stem}-all-{key}.ckpt"
                train_all(tcfg, real, run_dir, resume=True)
                scored = predictor_for(run_dir, device).score(test)
                arm = scored_arm(_arm_name(name, k), scored, test)
                jaccard = arm.pooled_all["jaccard"]
                record = {"checkpoint": str(run_dir), "sha256": sha256(run_dir), "key": key}
            by_k.setdefault(k or n_all, {})[name] = arm
            curves[name][k or n_all] = jaccard
            provenance["runs"][arm.name] = record
            if k is None:
                final[name], run_dirs[name] = arm, run_dir
    return final, by_k, curves, run_dirs


def active_arm(real: Path, out: Path, budget: Any, splits: list[dict], pretrained: Path, pretrained_sha: str,
               images: str, train_extra: list[str], device: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """The active-labelling simulation on the folds of the first repeat, in a folder keyed like
    the arms (its train config, the images, the splits, the checkpoint, the code)."""
    first = [s for s in splits if s["repeat"] == 0]
    extra = [*budget.train, *train_extra, *budget.active.train]
    key = run_key(config_key(load_config("train", extra)), OmegaConf.to_container(budget.active), images,
                  run_key(first), pretrained_sha, code_sha256("grapheneseg", "train", *ACTIVE_CODE))
    folder = out / "arms" / f"active-{key}"
    result = run_active(real, pretrained, folder, first, list(budget.active.ks), list(budget.active.seeds), extra,
                        device=device)
    provenance["runs"]["active labelling"] = {"folder": str(folder), "key": key}
    return result
