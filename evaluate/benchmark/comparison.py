"""`evaluate report`: run (or reuse) every arm on identical folds, then write the report.

Arms: the Bragg filter, a U-Net trained on real labels only, a U-Net trained on simulations only
(zero-shot) and one pretrained on simulations then fine-tuned on real labels; the last two also
at K real labels per fold for the data-efficiency curve. One splits.json (from the evaluate
`seed`; whole focal series per fold unless `cv.grouping=image`, recorded in the file and the
report's provenance) is handed to every arm, so all see identical folds by construction. Every trained arm
lives in a folder named after a key of its contents: its resolved config (paths left out), the
SHA-256 of the labelled images, of the splits, of the --sim file or --pretrained checkpoint it
starts from, and of the code that produces it; a rerun reuses exactly the runs whose key matches
(finished folds are read back) and never a stale one. Fine-tuned minus real-only and minus
sim-only differences get paired bootstrap 95% intervals at every K (resampling whole focal series
under series-grouped folds, images under image-wise ones). With
`report.active.ks` (the full budget) the report also simulates active labelling on the first
repeat's folds (evaluate/active.py: `suggest`'s K against K at random, from the same checkpoint).
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
from .active import active_markdown, run_active
from grapheneseg.config import load_config, override, save_config
from grapheneseg.fetch import sha256
from grapheneseg.formats import Micrograph
from grapheneseg.metrics import scores
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess
from grapheneseg.splits import (SERIES_PATTERN, image_key, load_or_make_splits, series_grouper, series_of,
                                straddling)
from grapheneseg.stats import paired_bootstrap

from .scoring import fold_arm, predictor_for
from .report import (Arm, arm_from_bragg_cv, error_example_names, plot_data_efficiency,
                     plot_error_examples, plot_per_image, plot_structure_panel, write_report)

REAL_ONLY, SIM_ONLY, FINETUNED, BRAGG = ("U-Net real-only", "U-Net sim-only", "U-Net sim-pretrained + fine-tuned",
                                         "Bragg filter")


PATH_KEYS = (("data", "real_dir"), ("finetune", "pretrained"))  # located files: keyed by contents instead
PACKAGES = Path(__file__).resolve().parents[2]  # the install root, above grapheneseg/ ... evaluate/
ACTIVE_CODE = ("evaluate/apply", "evaluate/benchmark/active.py")  # the code behind the active arms


def _key(*parts: Any) -> str:
    """Short content key of JSON-able parts (the folder name of an arm)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _config_key(cfg: Any) -> dict[str, Any]:
    """The resolved config without the paths of input files (their contents are keyed instead)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for section, name in PATH_KEYS:
        if isinstance(plain.get(section), dict) and name in plain[section]:
            plain[section][name] = None
    return plain


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


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _train_cfg(real: Path, budget: Any, extra: list[str], k: int | None, pretrained: Path | None,
               folds: int | None = None):
    overrides = [override("data.real_dir", real), f"cv.folds={budget.folds if folds is None else folds}",
                 f"cv.repeats={budget.repeats}", f"cv.n_real={'null' if k is None else k}",
                 override("finetune.pretrained", pretrained), *budget.train, *extra]
    return load_config("train", overrides)


def _arm_name(name: str, k: int | None) -> str:
    return name if k is None else f"{name} K={k}"


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


def _active(real: Path, out: Path, budget: Any, splits: list[dict], pretrained: Path, pretrained_sha: str,
            images: str, train_extra: list[str], device: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """The active-labelling simulation on the folds of the first repeat, in a folder keyed like
    the arms (its train config, the images, the splits, the checkpoint, the code)."""
    first = [s for s in splits if s["repeat"] == 0]
    extra = [*budget.train, *train_extra, *budget.active.train]
    key = _key(_config_key(load_config("train", extra)), OmegaConf.to_container(budget.active), images, _key(first),
               pretrained_sha, code_sha256("grapheneseg", "train", *ACTIVE_CODE))
    folder = out / "arms" / f"active-{key}"
    result = run_active(real, pretrained, folder, first, list(budget.active.ks), list(budget.active.seeds), extra,
                        device=device)
    provenance["runs"]["active labelling"] = {"folder": str(folder), "key": key}
    return result


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


def _pretrained(out: Path, budget: Any, sim: Path | None, pretrained: Path | None, extra: list[str],
                provenance: dict[str, Any]) -> tuple[Path, str]:
    """(the given simulation checkpoint, or one pretrained here on `sim`, and its SHA-256); a
    pretraining is reused only when config, code and the bytes of `sim` all match."""
    if pretrained is None:
        from train.pretrain import pretrain

        pcfg = load_config("pretrain", [*budget.pretrain, *extra])
        data_sha = sha256(Path(sim))
        key = _key(_config_key(pcfg), data_sha, code_sha256("grapheneseg", "train"))
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


def _scored_arm(name: str, scored: dict[str, Any], test: Path) -> Arm:
    """An arm scored once on the labelled folder `test` (one "fold": no spread)."""
    return Arm(name, [{"repeat": 0, "fold": 0, **scored["pooled"]}], scored["counts"], str(test))


def _trained_arms(out: Path, real: Path, budget: Any, train_extra: list[str], pretrained: Path, pretrained_sha: str,
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
    splits_key = [_key(splits)] if splits else []
    code = code_sha256("grapheneseg", "train")
    for k in [*budget.ks, None]:
        for name, init in ((REAL_ONLY, None), (FINETUNED, pretrained)):
            tcfg = _train_cfg(real, budget, train_extra, k, init, folds=None if splits else 0)
            stem = f"{'real' if init is None else 'finetuned'}-K{k or 'all'}"
            if splits:
                longer: list[str] = []
                for doublings in range(int(budget.get("extend_capped") or 0) + 1):
                    tcfg = _train_cfg(real, budget, [*train_extra, *longer], k, init)
                    key = _key(_config_key(tcfg), images, *splits_key, None if init is None else pretrained_sha, code)
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
                key = _key(_config_key(tcfg), images, *splits_key, None if init is None else pretrained_sha, code)
                run_dir = out / "arms" / f"{stem}-all-{key}.ckpt"
                train_all(tcfg, real, run_dir, resume=True)
                scored = predictor_for(run_dir, device).score(test)
                arm = _scored_arm(_arm_name(name, k), scored, test)
                jaccard = arm.pooled_all["jaccard"]
                record = {"checkpoint": str(run_dir), "sha256": sha256(run_dir), "key": key}
            by_k.setdefault(k or n_all, {})[name] = arm
            curves[name][k or n_all] = jaccard
            provenance["runs"][arm.name] = record
            if k is None:
                final[name], run_dirs[name] = arm, run_dir
    return final, by_k, curves, run_dirs


def _held_out_report(real: Path, test: Path, out: Path, cfg: Any, budget: Any, sim: Path | None,
                     pretrained: Path | None, train_extra: list[str], pretrain_extra: list[str],
                     eval_extra: list[str], progress: bool, device: str = "auto") -> dict[str, Path]:
    """Every arm trained on all of `real` and scored once on the labelled folder `test`."""
    from .bragg import fit_bragg, score_bragg

    images = images_sha256(real)
    provenance: dict[str, Any] = {"command": " ".join(sys.argv), "git_commit": _git_commit(),
                                  "budget": OmegaConf.to_container(cfg.report), "real_dir": str(real),
                                  "test_dir": str(test), "images_sha256": images, "runs": {}}
    bragg_cfg = load_config("evaluate", [override("data.real_dir", real), *eval_extra])
    params = out / "arms" / f"bragg-{_key(_config_key(bragg_cfg), images, code_sha256('grapheneseg', 'evaluate/benchmark/bragg.py'))}" / "bragg.json"
    if not params.exists():
        fit_bragg(bragg_cfg, params, progress=progress)
    arms = {BRAGG: _scored_arm(BRAGG, score_bragg(bragg.BraggParams(**json.loads(params.read_text())["params"]), test),
                               test)}
    pretrained, pretrained_sha = _pretrained(out, budget, sim, pretrained, pretrain_extra, provenance)
    arms[SIM_ONLY] = _scored_arm(SIM_ONLY, predictor_for(pretrained, device).score(test), test)
    n_all = len(load_labelled(real))
    trained, by_k, curves, _ = _trained_arms(out, real, budget, train_extra, pretrained, pretrained_sha, images,
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


def run_report(real: Path, out: Path, budget_name: str = "quick", sim: Path | None = None,
               pretrained: Path | None = None, test_dir: Path | None = None, overrides: list[str] = (),
               progress: bool = True, device: str = "auto") -> dict[str, Path]:
    """Run or reuse all arms and write report.html / report.md / metrics.json and figures in `out`.

    `device` (auto, cpu, cuda) runs the scoring; training follows `train.device` / `pretrain.device`.
    `overrides` prefixed `train.` go to the U-Net training config, `pretrain.` to pretraining,
    the rest to the evaluate config.
    """
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
    save_config(cfg, out)
    if test_dir is not None:
        return _held_out_report(real, Path(test_dir), out, cfg, budget, sim, pretrained, train_extra,
                                pretrain_extra, eval_extra, progress, device)
    names = load_labelled(real).names
    splits = load_or_make_splits(out / "splits.json", names, budget.folds, budget.repeats, cfg.seed, grouping, pattern)
    images, splits_sha = images_sha256(real), _key(splits)
    provenance: dict[str, Any] = {"command": " ".join(sys.argv), "git_commit": _git_commit(),
                                  "budget": budget_name, "real_dir": str(real), "images_sha256": images,
                                  "splits": {"file": str(out / "splits.json"), "seed": int(cfg.seed), "key": splits_sha,
                                             "grouping": grouping, "series_pattern": pattern if grouping == "series"
                                             else None, "straddling_series": len(straddling(splits, pattern))},
                                  "runs": {}}

    # Bragg baseline on the same folds (its fit grid is cheap; reuse the folder when the key matches)
    from .bragg import run_bragg_cv

    bragg_cfg = load_config("evaluate", [override("data.real_dir", real), f"cv.folds={budget.folds}",
                                         f"cv.repeats={budget.repeats}", *eval_extra])
    key = _key(_config_key(bragg_cfg), images, splits_sha, code_sha256("grapheneseg", "evaluate/benchmark/bragg.py"))
    bragg_dir = out / "arms" / f"bragg-{key}"
    if not (bragg_dir / "bragg_cv.json").exists():
        run_bragg_cv(bragg_cfg, bragg_dir, progress=progress, splits=splits)
    arms = {BRAGG: arm_from_bragg_cv(bragg_dir / "bragg_cv.json")}
    provenance["runs"][BRAGG] = {"folder": str(bragg_dir), "key": key}

    pretrained, pretrained_sha = _pretrained(out, budget, sim, pretrained, pretrain_extra, provenance)
    arms[SIM_ONLY] = sim_only_arm(pretrained, real, splits, device)

    trained, by_k, curves, run_dirs = _trained_arms(out, real, budget, train_extra, pretrained, pretrained_sha,
                                                    images, provenance, splits=splits, device=device)
    arms.update(trained)
    intervals = _intervals(by_k, arms[SIM_ONLY], cfg.cv)
    sections, extra_metrics = [], {}
    if budget.get("active") and budget.active.ks:
        active = _active(real, out, budget, splits, pretrained, pretrained_sha, images, train_extra, device, provenance)
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
