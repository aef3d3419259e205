"""`evaluate report`: run (or reuse) every arm on identical folds, then write the report.

Arms: the Bragg filter, a U-Net trained on real labels only, a U-Net trained on simulations only
(zero-shot) and one pretrained on simulations then fine-tuned on real labels; the last two also
at K real labels per fold for the data-efficiency curve. One splits.json (from the evaluate
`seed`; whole focal series per fold unless `cv.grouping=image`, recorded in the file and the
report's provenance) is handed to every arm, so all see identical folds by construction. The
trained arms, and the content keys under which a rerun reuses them, are in arms.py; this module
assembles the report from them. Fine-tuned minus real-only and minus sim-only differences get
paired bootstrap 95% intervals at every K (resampling whole focal series under series-grouped
folds, images under image-wise ones). With `report.active.ks` (the full budget) the report also
simulates active labelling on the first repeat's folds (evaluate/active.py: `suggest`'s K against
K at random, from the same checkpoint).
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from . import bragg
from .active import active_markdown
from .arms import (BRAGG, FINETUNED, REAL_ONLY, SIM_ONLY, active_arm, bragg_config_key, capped_notes, code_sha256,
                   images_sha256, pretrained_checkpoint, run_key, scored_arm, sim_only_arm, trained_arms)
from grapheneseg.config import load_config, override, save_config
from grapheneseg.formats import Micrograph
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess
from grapheneseg.splits import (SERIES_PATTERN, load_or_make_splits, series_grouper, series_of, straddling)
from grapheneseg.stats import paired_bootstrap
from train.loops import progress_bars

from .scoring import predictor_for
from .report import (Arm, arm_from_bragg_cv, error_example_names, plot_data_efficiency,
                     plot_error_examples, plot_per_image, plot_structure_panel, write_report)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf} of a nested plain config."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: tree}


def _warn_if_replacing(out: Path, cfg: Any) -> None:
    """Warn when `out` holds a report made with another config: its report files are replaced by
    this run's (the arms are reused only where their own keys match, so none is served wrongly)."""
    old_path = out / "config.yaml"
    if not (out / "metrics.json").is_file() or not old_path.is_file():
        return
    old = _flat(OmegaConf.to_container(OmegaConf.load(old_path), resolve=True))
    new = _flat(OmegaConf.to_container(cfg, resolve=True))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        warnings.warn(f"{out} holds a report made with another config ({shown}{more}): its report.md, report.html, "
                      "metrics.json and figures are replaced by this run's; finished arms are reused where they match",
                      stacklevel=3)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

def _intervals(by_k: dict[int, dict[str, Arm]], sim_only: Arm, cv: Any) -> dict[int, dict[str, dict[str, Any]]]:
    """Paired bootstrap intervals of fine-tuned minus real-only and minus sim-only at every K,
    resampling whole focal series when the folds are series-grouped (`cv.grouping`)."""
    group_of = series_grouper(cv.get("grouping", "series"), cv.get("series_pattern", SERIES_PATTERN))
    return {k: {"fine-tuned - real-only": paired_bootstrap(arms[FINETUNED].image_scores(),
                                                            arms[REAL_ONLY].image_scores(), group_of=group_of),
                "fine-tuned - sim-only": paired_bootstrap(arms[FINETUNED].image_scores(), sim_only.image_scores(),
                                                          group_of=group_of)}
            for k, arms in sorted(by_k.items())}


ACTIVE_CAPTION = ("Per fold of the first repeat ({folds} folds), the fold's training images are ranked by "
                  "`evaluate suggest` with the simulation checkpoint as if unlabelled; its top K, and K drawn at "
                  "random (one arm per seed), are fine-tuned from that checkpoint (train overrides: {overrides}) "
                  "and scored on the fold's test images. Jaccard pooled over all test pixels of the folds; the "
                  "last column is the mean over images of the per-image Jaccard difference with a paired "
                  "bootstrap 95 % interval.")


UNCERTAINTY_CAPTION = ("Each image is predicted under the 8 symmetries of the square (first repeat) by the "
                       "fine-tuned arm's (all labels) held-out fold ensemble: its own fold model and every other "
                       "fold model that did not train on it (evaluate.benchmark.uncertainty_study.held_out_members), and by its "
                       "fold model alone. Spearman correlation over images of the error 1 - Jaccard of that "
                       "prediction with each per-image score: the Jaccard disagreement (the uncertainty column "
                       "of `evaluate predict --uncertainty`), the band std (mean std over 0.1 < p < 0.9, the "
                       "score `evaluate suggest` ranks by) and the plain mean pixel std; bootstrap 95 % "
                       "intervals over images.")


def uncertainty_markdown(check: dict[str, Any]) -> str:
    """The uncertainty-vs-error table of the report (evaluate.benchmark.uncertainty_study.uncertainty_vs_error)."""
    ens = check["ensemble"]
    lines = ["| prediction | per-image score | Spearman with 1 - Jaccard | 95 % interval |", "|---|---|---|---|"]
    for title, table in ((f"held-out ensemble ({ens['members_mean']:.1f} models)", ens["by_ensemble_error"]),
                         ("fold model alone", check["fold_model"])):
        lines += [f"| {title} | {name} | {table[key]['spearman']:.3f} | {table[key]['ci95'][0]:.2f} to "
                  f"{table[key]['ci95'][1]:.2f} |" for key, name in (("disagreement", "Jaccard disagreement"),
                                                                   ("band_std", "band std"),
                                                                   ("mean_std", "mean pixel std"))]
    return "\n".join(lines + [
        "", f"Held-out ensemble: mean error over the {check['n_images']} images {ens['mean_error']:.3f}; of the 10 "
        f"highest in disagreement {ens['error_top10_uncertain']:.3f}; of the 10 worst {ens['error_top10_worst']:.3f}. "
        f"Out-of-distribution flags: {check['n_ood']} image(s)."])

def _error_examples(arms: dict[str, Arm], real: Path, splits: list[dict], bragg_dir: Path,
                    run_dirs: dict[str, Path], sim_ckpt: Path, device: str = "auto") -> list:
    """Best, median and worst contaminated test images of the fine-tuned arm, with every arm's prediction."""
    from train.crossval import fold_dir

    from evaluate.apply.scale import decide_scale

    data = load_labelled(real)
    index = {n: i for i, n in enumerate(data.names)}
    picks = error_example_names(arms[FINETUNED])
    bragg_params = {(s["repeat"], s["fold"]): bragg.BraggParams(**s["params"])
                    for s in json.loads((bragg_dir / "bragg_cv.json").read_text())["splits"]}
    examples = []
    for title, name in picks:
        split = next(s for s in splits if s["repeat"] == 0 and name in s["test"])
        image, truth = data.images[index[name]], data.masks[index[name]]
        pre = preprocess(image)
        micrograph = Micrograph(real / name, image, None)
        scale = decide_scale(micrograph)
        masks = {"truth": truth, "Bragg": bragg.segment(pre, bragg_params[(0, split["fold"])], preprocessed=True)}
        for label, arm in (("real-only", REAL_ONLY), ("fine-tuned", FINETUNED)):
            masks[label] = predictor_for(fold_dir(run_dirs[arm], split) / "model.ckpt", device).segment(micrograph, scale).mask
        masks["sim-only"] = predictor_for(sim_ckpt, device).segment(micrograph, scale).mask
        examples.append((f"{title}: {name[:28]}", pre, masks))
    return examples


def structure_examples(real: Path, model: Path, n: int = 6, device: str = "auto") -> list:
    """Up to `n` real micrographs for the Figure-1-style panel, half of them grain-boundary ones
    (`_GrGB_` in the name) when there are, evenly spaced in name order; each with its four-class
    map (evaluate.apply.structure.structure_of: the contamination predicted by `model`, the other
    classes from the lattice orientation at the lattice's own pixel size)."""
    from evaluate.apply.scale import decide_scale
    from evaluate.apply.structure import structure_of

    data = load_labelled(real)
    gb = [i for i, name in enumerate(data.names) if "_GrGB_" in name]
    other = [i for i in range(len(data)) if i not in set(gb)]
    pick = lambda idx, k: [idx[j] for j in np.linspace(0, len(idx) - 1, k).round().astype(int)] if idx and k else []
    chosen = pick(gb, min(len(gb), n // 2))
    chosen += pick(other, min(len(other), n - len(chosen)))
    predictor = predictor_for(model, device)
    examples = []
    for i in chosen:
        micrograph = Micrograph(real / data.names[i], data.images[i], None)
        seg = predictor.segment(micrograph, decide_scale(micrograph))
        s = structure_of(data.images[i], seg.mask, seg.scale)
        examples.append((data.names[i][:28], data.images[i], s.classes))
    return examples

def _held_out_report(real: Path, test: Path, out: Path, cfg: Any, budget: Any, sim: Path | None,
                     pretrained: Path | None, train_extra: list[str], pretrain_extra: list[str],
                     eval_extra: list[str], progress: bool, device: str = "auto") -> dict[str, Path]:
    """Every arm trained on all of `real` and scored once on the labelled folder `test`."""
    from .bragg import fit_bragg, score_bragg

    images = images_sha256(real)
    provenance: dict[str, Any] = {"command": " ".join(sys.argv), "git_commit": _git_commit(),
                                  "overrides": _overrides(train_extra, pretrain_extra, eval_extra),
                                  "budget": OmegaConf.to_container(cfg.report), "real_dir": str(real),
                                  "test_dir": str(test), "images_sha256": images, "runs": {}}
    bragg_cfg = load_config("evaluate", [override("data.real_dir", real), *eval_extra])
    bragg_key = run_key(bragg_config_key(bragg_cfg), images, code_sha256("grapheneseg", "evaluate/benchmark/bragg.py"))
    params = out / "arms" / f"bragg-{bragg_key}" / "bragg.json"
    if not params.exists():
        fit_bragg(bragg_cfg, params, progress=progress)
    arms = {BRAGG: scored_arm(BRAGG, score_bragg(bragg.BraggParams(**json.loads(params.read_text())["params"]), test),
                              test)}
    pretrained, pretrained_sha = pretrained_checkpoint(out, budget, sim, pretrained, pretrain_extra, provenance)
    arms[SIM_ONLY] = scored_arm(SIM_ONLY, predictor_for(pretrained, device).score(test), test)
    n_all = len(load_labelled(real))
    trained, by_k, curves, _ = trained_arms(out, real, budget, train_extra, pretrained, pretrained_sha, images,
                                            provenance, test=test, device=device)
    arms.update(trained)
    intervals = _intervals(by_k, arms[SIM_ONLY], cfg.cv)
    ordered = [arms[n] for n in (BRAGG, REAL_ONLY, SIM_ONLY, FINETUNED)]
    figures = {
        "Per-image Jaccard of every arm on the test folder": plot_per_image(ordered, out / "per_image_jaccard.png"),
        "Data efficiency: test Jaccard vs real training labels": plot_data_efficiency(
            curves, out / "data_efficiency.png", n_all=n_all, intervals=intervals),
    }
    notes = [f"Every arm trained on all {n_all} images of {real} and scored on {test} (no CV: spreads are 0)."]
    return write_report(out, ordered, figures, provenance, curves=curves, notes=notes, intervals=intervals)


def _overrides(train_extra: list[str], pretrain_extra: list[str], eval_extra: list[str]) -> dict[str, list[str]]:
    """The report's overrides by the config they went to: `command` is the process's argv, which
    says nothing of them when the report runs from Python (run_report), and config.yaml holds the
    evaluate config alone. `train` also holds the report's own cv.* settings for the arms."""
    return {"train": list(train_extra), "pretrain": list(pretrain_extra), "evaluate": list(eval_extra)}


def run_report(real: Path, out: Path, budget_name: str = "quick", sim: Path | None = None,
               pretrained: Path | None = None, test_dir: Path | None = None, overrides: list[str] = (),
               progress: bool = True, device: str = "auto") -> dict[str, Path]:
    """Run or reuse all arms and write report.html / report.md / metrics.json and figures in `out`.

    `device` (auto, cpu, cuda) runs the scoring; training follows `train.device` / `pretrain.device`.
    `overrides` prefixed `train.` go to the U-Net training config, `pretrain.` to pretraining,
    the rest to the evaluate config. `progress`: the report's bars and those of every arm's training.
    """
    with progress_bars(progress):
        return _report(real, out, budget_name, sim, pretrained, test_dir, overrides, progress, device)


def _report(real: Path, out: Path, budget_name: str, sim: Path | None, pretrained: Path | None,
            test_dir: Path | None, overrides: list[str], progress: bool, device: str) -> dict[str, Path]:
    if (sim is None) == (pretrained is None):
        raise ValueError("give exactly one of --sim FILE.h5 (pretrain here) or --pretrained sim.ckpt")
    train_extra = [o[len("train."):] for o in overrides if o.startswith("train.")]
    pretrain_extra = [o[len("pretrain."):] for o in overrides if o.startswith("pretrain.")]
    eval_extra = [o for o in overrides if not o.startswith(("train.", "pretrain."))]
    cfg = load_config("evaluate", [f"report={budget_name}", override("data.real_dir", real), *eval_extra])
    budget = cfg.report
    # the trained arms' inner validation groups images as the report's folds do (a train.cv.* override wins)
    grouping, pattern = cfg.cv.get("grouping", "series"), cfg.cv.get("series_pattern", SERIES_PATTERN)
    train_extra = [f"cv.grouping={grouping}", override("cv.series_pattern", pattern), *train_extra]
    out.mkdir(parents=True, exist_ok=True)
    _warn_if_replacing(out, cfg)
    save_config(cfg, out)
    if test_dir is not None:
        return _held_out_report(real, Path(test_dir), out, cfg, budget, sim, pretrained, train_extra,
                                pretrain_extra, eval_extra, progress, device)
    names = load_labelled(real).names
    splits = load_or_make_splits(out / "splits.json", names, budget.folds, budget.repeats, cfg.seed, grouping, pattern)
    images, splits_sha = images_sha256(real), run_key(splits)
    provenance: dict[str, Any] = {"command": " ".join(sys.argv), "git_commit": _git_commit(),
                                  "overrides": _overrides(train_extra, pretrain_extra, eval_extra),
                                  "budget": budget_name, "real_dir": str(real), "images_sha256": images,
                                  "splits": {"file": str(out / "splits.json"), "seed": int(cfg.seed), "key": splits_sha,
                                             "grouping": grouping, "series_pattern": pattern if grouping == "series"
                                             else None, "straddling_series": len(straddling(splits, pattern))},
                                  "runs": {}}

    # Bragg baseline on the same folds (its fit grid is cheap; reuse the folder when the key matches)
    from .bragg import run_bragg_cv

    bragg_cfg = load_config("evaluate", [override("data.real_dir", real), f"cv.folds={budget.folds}",
                                         f"cv.repeats={budget.repeats}", *eval_extra])
    key = run_key(bragg_config_key(bragg_cfg), images, splits_sha, code_sha256("grapheneseg", "evaluate/benchmark/bragg.py"))
    bragg_dir = out / "arms" / f"bragg-{key}"
    if not (bragg_dir / "bragg_cv.json").exists():
        run_bragg_cv(bragg_cfg, bragg_dir, progress=progress, splits=splits)
    arms = {BRAGG: arm_from_bragg_cv(bragg_dir / "bragg_cv.json")}
    provenance["runs"][BRAGG] = {"folder": str(bragg_dir), "key": key}

    pretrained, pretrained_sha = pretrained_checkpoint(out, budget, sim, pretrained, pretrain_extra, provenance)
    arms[SIM_ONLY] = sim_only_arm(pretrained, real, splits, device)

    trained, by_k, curves, run_dirs = trained_arms(out, real, budget, train_extra, pretrained, pretrained_sha,
                                                   images, provenance, splits=splits, device=device)
    arms.update(trained)
    intervals = _intervals(by_k, arms[SIM_ONLY], cfg.cv)
    sections, extra_metrics = [], {}
    if budget.get("active") and budget.active.ks:
        active = active_arm(real, out, budget, splits, pretrained, pretrained_sha, images, train_extra, device,
                            provenance)
        extra_metrics["active_labelling"] = active
        sections.append(("Active labelling: label what `suggest` picks, or K at random?", ACTIVE_CAPTION.format(
            folds=len(active["folds"]), overrides=" ".join(active["train_overrides"]) or "none"),
            active_markdown(active)))

    if budget.get("uncertainty"):
        from .uncertainty_study import uncertainty_vs_error

        check = uncertainty_vs_error(run_dirs[FINETUNED], load_labelled(real), splits, cfg.apply)
        extra_metrics["uncertainty_vs_error"] = check
        sections.append(("Does the uncertainty say where the model is wrong?", UNCERTAINTY_CAPTION,
                         uncertainty_markdown(check)))

    ordered = [arms[n] for n in (BRAGG, REAL_ONLY, SIM_ONLY, FINETUNED)]
    figures = {
        "Per-image Jaccard of every arm": plot_per_image(ordered, out / "per_image_jaccard.png"),
        "Data efficiency: Jaccard vs real labels per fold": plot_data_efficiency(
            curves, out / "data_efficiency.png", n_all=len(splits[0]["train"]), intervals=intervals),
        "Errors (Figure 4 colours) on the fine-tuned arm's best, median and worst images": plot_error_examples(
            _error_examples(arms, real, splits, bragg_dir, run_dirs, pretrained, device), out / "error_examples.png"),
        "Structure maps (Figure 1 style): contamination by the simulation-only model, grains, boundaries and "
        "vacuum from the lattice orientation (evaluate structure)": plot_structure_panel(
            structure_examples(real, pretrained, device=device), out / "structure_maps.png"),
    }
    if sim is not None:
        from simulate.report import compare, preview

        figures["Simulated training data (contact sheet)"] = preview(load_config("simulate"), 8, out / "sim_sheet.png",
                                                                    source=Path(sim))
        compare(Path(sim), real, out / "sim_vs_real")
        figures["Simulated vs real statistics (simulate compare)"] = out / "sim_vs_real" / "compare.png"
    protocol = provenance["splits"]
    notes = [(f"Folds: {budget.folds}-fold CV x {budget.repeats}, whole focal series per fold (series = the name less "
              f"{protocol['series_pattern']!r}; {len({series_of(n, pattern) for n in names})} series in "
              f"{len(names)} images); the inner validation of the trained arms holds out whole series too."
              if grouping == "series" else
              f"Folds: {budget.folds}-fold CV x {budget.repeats}, image-wise (the paper's protocol): "
              f"{protocol['straddling_series']} series have frames on both sides of a fold, so the arms trained on "
              "real labels are scored partly on near-copies of their training images."),
             "Data-efficiency curve (fold-mean pooled Jaccard): " + "; ".join(
        f"{name}: " + ", ".join(f"K={k} {v:.3f}" for k, v in sorted(c.items())) for name, c in curves.items()),
        "Training lengths chosen by inner validation on each fold's training images (epochs per fold; "
        "0 = the pretrained model kept): " + "; ".join(
            f"{name}: {run['chosen_epochs']}" for name, run in provenance["runs"].items() if "chosen_epochs" in run),
        *capped_notes(provenance["runs"])]
    return write_report(out, ordered, figures, provenance, curves=curves, notes=notes, intervals=intervals,
                        sections=sections, extra_metrics=extra_metrics)
