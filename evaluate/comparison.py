"""`evaluate report`: run (or reuse) every arm on identical folds, then write the report.

Arms: the Bragg filter, a U-Net trained on real labels only, a U-Net trained on simulations only
(zero-shot) and one pretrained on simulations then fine-tuned on real labels; the last two also
at K real labels per fold for the data-efficiency curve. Every trained arm lives in a folder
named after a hash of its resolved config, so a rerun reuses exactly the runs whose config
matches (finished folds are read back) and never a stale one.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from . import bragg
from grapheneseg.config import load_config, save_config
from grapheneseg.metrics import scores
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess
from .report import (Arm, arm_from_bragg_cv, arm_from_train_cv, plot_data_efficiency, plot_error_examples,
                     plot_per_image, write_report)
from grapheneseg.splits import load_or_make_splits

REAL_ONLY, SIM_ONLY, FINETUNED, BRAGG = ("U-Net real-only", "U-Net sim-only", "U-Net sim-pretrained + fine-tuned",
                                         "Bragg filter")


def _hash(cfg: Any) -> str:
    return hashlib.sha1(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()[:8]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _train_cfg(real: Path, budget: Any, extra: list[str], k: int | None, pretrained: Path | None,
               folds: int | None = None):
    overrides = [f"data.real_dir={real}", f"cv.folds={budget.folds if folds is None else folds}",
                 f"cv.repeats={budget.repeats}", f"cv.n_real={'null' if k is None else k}",
                 f"finetune.pretrained={'null' if pretrained is None else pretrained}", *budget.train, *extra]
    return load_config("train", overrides)


def _sim_only_arm(ckpt: Path, real: Path, splits: list[dict], device: str = "auto") -> Arm:
    """The simulation-only model scored on every fold's test images (it never saw real labels)."""
    from train.inference import score_model

    counts = score_model(ckpt, real, device=device)["counts"]
    per_fold, all_counts = [], {}
    for split in splits:
        fold_counts = [np.array(counts[n]) for n in split["test"]]
        per_fold.append({"repeat": split["repeat"], "fold": split["fold"], **scores(np.sum(fold_counts, axis=0))})
        for n in split["test"]:
            all_counts[n if split["repeat"] == 0 else f"{n}@repeat{split['repeat']}"] = counts[n]
    return Arm(SIM_ONLY, per_fold, all_counts, str(ckpt))


def _error_examples(arms: dict[str, Arm], real: Path, splits: list[dict], bragg_dir: Path,
                    run_dirs: dict[str, Path], sim_ckpt: Path, device: str = "auto") -> list:
    """Best, median and worst test images of the fine-tuned arm, with every arm's prediction."""
    from train.inference import load_models, predict_probability
    from train.crossval import fold_dir

    data = load_labelled(real)
    index = {n: i for i, n in enumerate(data.names)}
    ranked = sorted((v, n) for n, v in arms[FINETUNED].image_scores().items() if "@" not in n)
    picks = [("worst", ranked[0][1]), ("median", ranked[len(ranked) // 2][1]), ("best", ranked[-1][1])]
    bragg_params = {(s["repeat"], s["fold"]): bragg.BraggParams(**s["params"])
                    for s in json.loads((bragg_dir / "bragg_cv.json").read_text())["splits"]}
    examples = []
    for title, name in picks:
        split = next(s for s in splits if s["repeat"] == 0 and name in s["test"])
        image, truth = data.images[index[name]], data.masks[index[name]]
        pre = preprocess(image)
        masks = {"truth": truth, "Bragg": bragg.segment(pre, bragg_params[(0, split["fold"])], preprocessed=True)}
        for label, arm in (("real-only", REAL_ONLY), ("fine-tuned", FINETUNED)):
            models = load_models(fold_dir(run_dirs[arm], split) / "model.ckpt", device)
            masks[label] = predict_probability(models, pre[None])[0] > 0.5
        masks["sim-only"] = predict_probability(load_models(sim_ckpt, device), pre[None])[0] > 0.5
        examples.append((f"{title}: {name[:28]}", pre, masks))
    return examples


def _pretrained(out: Path, budget: Any, sim: Path | None, pretrained: Path | None, extra: list[str],
                provenance: dict[str, Any]) -> Path:
    """The given simulation checkpoint, or one pretrained here on `sim` (reused when present)."""
    if pretrained is None:
        from train.pretrain import pretrain

        pcfg = load_config("pretrain", [*budget.pretrain, *extra])
        pretrained = out / "arms" / f"pretrain-{_hash(pcfg)}" / "sim.ckpt"
        pretrain(pcfg, [Path(sim)], pretrained, resume=True)
        provenance["runs"]["pretraining"] = {"data": str(sim), "data_sha256": sha256(Path(sim)),
                                             "config_hash": _hash(pcfg)}
    provenance["sim_checkpoint"] = {"path": str(pretrained), "sha256": sha256(Path(pretrained))}
    return Path(pretrained)


def _held_out_report(real: Path, test: Path, out: Path, cfg: Any, budget: Any, sim: Path | None,
                     pretrained: Path | None, train_extra: list[str], pretrain_extra: list[str],
                     eval_extra: list[str], progress: bool, device: str = "auto") -> dict[str, Path]:
    """Every arm trained on all of `real` and scored once on the labelled folder `test`."""
    from .bragg import fit_bragg, score_bragg
    from train.inference import score_model
    from train.crossval import train_all

    provenance: dict[str, Any] = {"command": " ".join(sys.argv), "git_commit": _git_commit(),
                                  "budget": OmegaConf.to_container(cfg.report), "real_dir": str(real), "test_dir": str(test), "runs": {}}
    bragg_cfg = load_config("evaluate", [f"data.real_dir={real}", *eval_extra])
    params = out / "arms" / f"bragg-{_hash(bragg_cfg)}" / "bragg.json"
    if not params.exists():
        fit_bragg(bragg_cfg, params, progress=progress)
    results = {BRAGG: score_bragg(bragg.BraggParams(**json.loads(params.read_text())["params"]), test)}
    pretrained = _pretrained(out, budget, sim, pretrained, pretrain_extra, provenance)
    results[SIM_ONLY] = score_model(pretrained, test, device=device)
    curves: dict[str, dict[int, float]] = {REAL_ONLY: {}, FINETUNED: {}}
    n_all = len(load_labelled(real))
    for k in [*budget.ks, None]:
        for name, init in ((REAL_ONLY, None), (FINETUNED, pretrained)):
            tcfg = _train_cfg(real, budget, train_extra, k, init, folds=0)
            ckpt = out / "arms" / f"{'real' if init is None else 'finetuned'}-K{k or 'all'}-all-{_hash(tcfg)}.ckpt"
            train_all(tcfg, real, ckpt, resume=True)
            scored = score_model(ckpt, test, device=device)
            curves[name][k or n_all] = scored["pooled"]["jaccard"]
            provenance["runs"][f"{name} K={k or 'all'}"] = {"checkpoint": str(ckpt), "sha256": sha256(ckpt)}
            if k is None:
                results[name] = scored
    ordered = [Arm(n, [{"repeat": 0, "fold": 0, **results[n]["pooled"]}], results[n]["counts"], str(test))
               for n in (BRAGG, REAL_ONLY, SIM_ONLY, FINETUNED)]
    figures = {
        "Per-image Jaccard of every arm on the test folder": plot_per_image(ordered, out / "per_image_jaccard.png"),
        "Data efficiency: test Jaccard vs real training labels": plot_data_efficiency(
            curves, out / "data_efficiency.png", n_all=n_all),
    }
    notes = [f"Every arm trained on all {n_all} images of {real} and scored on {test} (no CV: spreads are 0)."]
    return write_report(out, ordered, figures, provenance, curves=curves, notes=notes)


def run_report(real: Path, out: Path, budget_name: str = "quick", sim: Path | None = None,
               pretrained: Path | None = None, test_dir: Path | None = None, overrides: list[str] = (),
               progress: bool = True, device: str = "auto") -> dict[str, Path]:
    """Run or reuse all arms and write report.html / report.md / metrics.json and figures in `out`.

    `device` (auto, cpu, cuda) runs the scoring; training follows `train.device` / `pretrain.device`.
    `overrides` prefixed `train.` go to the U-Net training config, `pretrain.` to pretraining,
    the rest to the evaluate config.
    """
    from train.crossval import cross_validate

    if (sim is None) == (pretrained is None):
        raise ValueError("give exactly one of --sim FILE.h5 (pretrain here) or --pretrained sim.ckpt")
    train_extra = [o[len("train."):] for o in overrides if o.startswith("train.")]
    pretrain_extra = [o[len("pretrain."):] for o in overrides if o.startswith("pretrain.")]
    eval_extra = [o for o in overrides if not o.startswith(("train.", "pretrain."))]
    cfg = load_config("evaluate", [f"report={budget_name}", f"data.real_dir={real}", *eval_extra])
    budget = cfg.report
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    if test_dir is not None:
        return _held_out_report(real, Path(test_dir), out, cfg, budget, sim, pretrained, train_extra,
                                pretrain_extra, eval_extra, progress, device)
    names = load_labelled(real).names
    splits = load_or_make_splits(out / "splits.json", names, budget.folds, budget.repeats, cfg.seed)
    provenance: dict[str, Any] = {"command": " ".join(sys.argv), "git_commit": _git_commit(),
                                  "budget": budget_name, "real_dir": str(real), "runs": {}}

    # Bragg baseline on the same folds (its fit grid is cheap; reuse the folder when configs match)
    from .bragg import run_bragg_cv

    bragg_cfg = load_config("evaluate", [f"data.real_dir={real}", f"cv.folds={budget.folds}",
                                         f"cv.repeats={budget.repeats}", *eval_extra])
    bragg_dir = out / "arms" / f"bragg-{_hash(bragg_cfg)}"
    if not (bragg_dir / "bragg_cv.json").exists():
        run_bragg_cv(bragg_cfg, bragg_dir, progress=progress)
    arms = {BRAGG: arm_from_bragg_cv(bragg_dir / "bragg_cv.json")}
    provenance["runs"][BRAGG] = {"folder": str(bragg_dir), "config_hash": _hash(bragg_cfg)}

    pretrained = _pretrained(out, budget, sim, pretrained, pretrain_extra, provenance)
    arms[SIM_ONLY] = _sim_only_arm(pretrained, real, splits, device)

    curves: dict[str, dict[int, float]] = {REAL_ONLY: {}, FINETUNED: {}}
    run_dirs: dict[str, Path] = {}
    for k in [*budget.ks, None]:
        for name, init in ((REAL_ONLY, None), (FINETUNED, pretrained)):
            tcfg = _train_cfg(real, budget, train_extra, k, init)
            run_dir = out / "arms" / f"{'real' if init is None else 'finetuned'}-K{k or 'all'}-{_hash(tcfg)}"
            summary = cross_validate(tcfg, real, run_dir, resume=True)
            arm = arm_from_train_cv(run_dir, name if k is None else f"{name} K={k}")
            curves[name][k or len(splits[0]["train"])] = arm.summary["jaccard"]["mean"]
            provenance["runs"][arm.name] = {"folder": str(run_dir), "config_hash": _hash(tcfg),
                                            "train_seconds": summary.get("train_seconds")}
            if k is None:
                arms[name], run_dirs[name] = arm, run_dir

    ordered = [arms[n] for n in (BRAGG, REAL_ONLY, SIM_ONLY, FINETUNED)]
    figures = {
        "Per-image Jaccard of every arm": plot_per_image(ordered, out / "per_image_jaccard.png"),
        "Data efficiency: Jaccard vs real labels per fold": plot_data_efficiency(
            curves, out / "data_efficiency.png", n_all=len(splits[0]["train"])),
        "Errors (Figure 4 colours) on the fine-tuned arm's best, median and worst images": plot_error_examples(
            _error_examples(arms, real, splits, bragg_dir, run_dirs, pretrained, device), out / "error_examples.png"),
    }
    if sim is not None:
        from simulate.report import compare, preview

        figures["Simulated training data (contact sheet)"] = preview(load_config("simulate"), 8, out / "sim_sheet.png",
                                                                    source=Path(sim))
        compare(Path(sim), real, out / "sim_vs_real")
        figures["Simulated vs real statistics (simulate compare)"] = out / "sim_vs_real" / "compare.png"
    notes = ["Data-efficiency curve (fold-mean pooled Jaccard): " + "; ".join(
        f"{name}: " + ", ".join(f"K={k} {v:.3f}" for k, v in sorted(c.items())) for name, c in curves.items())]
    return write_report(out, ordered, figures, provenance, curves=curves, notes=notes)
