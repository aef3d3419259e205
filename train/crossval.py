"""Training on the real labelled micrographs: k-fold cross-validation or one model on all images.

A cross-validation run folder (as nnU-Net's) holds:
    config.yaml       resolved config
    splits.json       the folds (grapheneseg.splits), reused by every arm trained on the same data;
                      by default whole focal series per fold (`cv.grouping`, `cv.series_pattern`)
    fold_K/           model.ckpt, metrics.json (history + test metrics of that fold)
                      (fold_K_repeat_R/ for repeats after the first)
    cv_metrics.json   pooled metrics over all test pixels, per fold, mean and spread over folds,
                      per image, timing

Two config sections turn the same protocol into the other arms of the comparison:
- `cv.n_real: K` trains each fold on a fixed seeded subset of K images of its training part
  (`real_subset`: the K=5 subset lies inside the K=10 subset); the test part is unchanged.
  `cv.subset_seed` draws other random subsets from the same folds (null: `cv.split_seed`), and
  `cv.train_names` names each fold's training images in a JSON file instead (`fold_train_names`:
  e.g. the images `evaluate suggest` chose, for the active-labelling comparison).
- `cv.only_folds: [0, 1]` trains and tests only those folds of the saved splits (`chosen_folds`):
  a costly preset measured on part of the same folds.
- `finetune.pretrained: sim.ckpt` initialises every model from the pretrained weights (the
  network as stored, unless `finetune.architecture: config` asks that `model` match it; the
  preprocessing must match) and trains with the fine-tuning options:
  its own learning rate, warm-up and epochs, the encoder frozen for the first epochs, and
  optionally a fraction of simulated samples (`sim_data`) mixed into the batches.
The arms thus differ only by config and reuse the same saved splits.json.

Both arms choose their training length by the same inner validation on their own training
images (`select`, train/selection.py; the test fold is never a validation set; whole series held
out as in the outer folds); fine-tuning also keeps the pretrained model unchanged when fine-tuning
did not beat it there beyond noise. The choice, its inner scores and the interval of the gain are
in each fold's metrics.json, cv_metrics.json and the checkpoint.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from grapheneseg.config import save_config, to_plain, write_json
from grapheneseg.lattice import read_lattice
from grapheneseg.metrics import mean_and_spread, pooled, scores
from grapheneseg.micrographs import LabelledSet, load_labelled
from grapheneseg.splits import SERIES_PATTERN, adopt_splits, image_key, load_or_make_splits, series_of, straddling
from train.models.checkpoints import CheckpointError, check_task, read_checkpoint, save_checkpoint
from train.models.registry import packaged_path
from train.datasets import MixedPairs, real_pairs, sim_pairs
from train.loops import choose_device, fit, validate
from train.models.unet import architecture, build_model
from train.selection import choose, inner_splits


def fold_dir(run_dir: Path, split: dict) -> Path:
    name = f"fold_{split['fold']}" + (f"_repeat_{split['repeat']}" if split["repeat"] else "")
    return Path(run_dir) / name


def real_subset(names: list[str], k: int | None, seed: int, repeat: int = 0, fold: int = 0) -> list[str]:
    """The first `k` of a seeded shuffle of sorted `names` (all when `k` is None): fixed per
    (seed, repeat, fold) and nested, the k=5 subset is the start of the k=10 subset."""
    if k is None:
        return list(names)
    if not 0 < int(k) <= len(names):
        raise ValueError(f"cv.n_real = {k}, but a training part holds {len(names)} images")
    order = np.random.default_rng([int(seed), 7, int(repeat), int(fold)]).permutation(len(names))
    ordered = sorted(names)
    return [ordered[i] for i in order[:int(k)]]


def given_train_names(path: Path, split: dict) -> list[str]:
    """The training images that the JSON file `path` ([{"repeat", "fold", "train": [...]}, ...])
    names for `split`; ValueError naming the file unless they are distinct images of that fold's
    training part (a test image would leak into training)."""
    try:
        entries = json.loads(Path(path).read_text())
        names = next(e["train"] for e in entries
                     if (int(e.get("repeat", 0)), int(e["fold"])) == (split["repeat"], split["fold"]))
    except (OSError, json.JSONDecodeError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable cv.train_names file ([{{repeat, fold, train: [...]}}]): {err}") from err
    except StopIteration:
        raise ValueError(f"{path}: no training names for repeat {split['repeat']} fold {split['fold']}") from None
    outside = sorted(set(names) - set(split["train"]))
    if outside:
        raise ValueError(f"{path}: repeat {split['repeat']} fold {split['fold']}: {outside} are not in that fold's "
                         "training part" + (" (test images)" if set(outside) <= set(split["test"]) else ""))
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{path}: repeat {split['repeat']} fold {split['fold']}: the names must be distinct and at "
                         f"least one, got {len(names)} ({len(set(names))} distinct)")
    return list(names)


def subset_seed(cv: Mapping[str, Any]) -> int:
    """The seed of `real_subset`: `cv.subset_seed`, or `cv.split_seed` when that is null."""
    return cv["split_seed"] if cv.get("subset_seed") is None else cv["subset_seed"]


def fold_train_names(cv: Mapping[str, Any], split: dict) -> list[str]:
    """The images a CV fold trains on: those `cv.train_names` names for it (then `cv.n_real` must
    be null or their number), else `real_subset` of its training part with `cv.n_real` and
    `cv.subset_seed` (null: `cv.split_seed`)."""
    if cv.get("train_names"):
        names = given_train_names(Path(cv["train_names"]), split)
        if cv.get("n_real") is not None and int(cv["n_real"]) != len(names):
            raise ValueError(f"cv.n_real = {cv['n_real']} but {cv['train_names']} names {len(names)} images for "
                             f"repeat {split['repeat']} fold {split['fold']}")
        return names
    return real_subset(split["train"], cv.get("n_real"), subset_seed(cv), split["repeat"], split["fold"])


def chosen_folds(splits: list[dict], only: list[int] | None) -> list[dict]:
    """The splits whose fold number is in `only` (`cv.only_folds`; None: all); ValueError naming
    the folds that do not exist, so that a typo never trains a silently smaller comparison."""
    if only is None:
        return splits
    wanted = {int(f) for f in only}
    missing = sorted(wanted - {s["fold"] for s in splits})
    if not wanted or missing:
        raise ValueError(f"cv.only_folds = {list(only)}: folds {missing or '(none given)'} do not exist; "
                         f"the folds are {sorted({s['fold'] for s in splits})}")
    return [s for s in splits if s["fold"] in wanted]


def check_compatible(payload: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """CheckpointError naming the first field where the pretrained model differs from `config`
    (its preprocessing was checked when `read_checkpoint` read it)."""
    check_task(payload, "contamination", path)
    wanted = architecture(config["model"])
    for key, value in wanted.items():
        if payload["architecture"].get(key) != value:
            raise CheckpointError(f"{path}: model.{key} is {payload['architecture'].get(key)!r} in the "
                                  f"pretrained checkpoint but {value!r} in the fine-tuning config")


def adopt_architecture(payload: dict[str, Any], model: dict[str, Any], path: Path) -> dict[str, Any]:
    """The model config of a fine-tuning run: the pretrained checkpoint's architecture (its weights
    fit no other), so that a larger pretrained network fine-tunes without naming its size; a
    warning names every key the config set otherwise (e.g. the cpu preset's 8 features), except
    for the packaged default model, the documented start of every plain `train finetune` (its
    card gives its network), which would otherwise warn on every run."""
    stored = payload["architecture"]
    wanted = architecture(model)
    differ = [f"model.{k} {wanted[k]!r} -> {stored[k]!r}" for k in wanted
              if k in stored and stored[k] != wanted[k] and k != "classes"]
    if differ and Path(path).resolve() != packaged_path("contamination").resolve():
        warnings.warn(f"{path}: fine-tuning the pretrained network as it is: " + ", ".join(differ)
                      + " (the config's values are not used)", stacklevel=3)
    return {k: stored.get(k, wanted[k]) for k in wanted}


def finetune_setup(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None, list[float] | None]:
    """The effective training config, initial weights and inherited pixel range: unchanged, None and
    None with `finetune.pretrained` null; else the fine-tuning learning rate, warm-up, epochs and
    encoder freezing applied, the pretrained weights (checked against the config) and the
    simulated pixel range the pretrained model recorded (a fine-tuned model keeps its scale). A
    four-class ("classes") pretrained model keeps its four outputs and task: contamination-only
    labels then train it through the partial-label loss (train.loops.marginal_loss)."""
    tune = config.get("finetune") or {}
    if not tune.get("pretrained"):
        return config, None, None
    path = Path(tune["pretrained"])
    payload = read_checkpoint(path)
    config = json.loads(json.dumps(config))  # a deep copy of plain data
    if payload["task"] == "classes":  # a structure model stays one: trained on the labels' marginal
        config["task"] = "classes"
    follow = tune.get("architecture", "checkpoint")
    if follow not in ("checkpoint", "config"):
        raise ValueError(f"finetune.architecture must be checkpoint or config, not {follow!r}")
    if follow == "checkpoint":
        config["model"] = adopt_architecture(payload, config["model"], path)
    elif payload["task"] == "classes":
        config["model"]["classes"] = payload["architecture"]["classes"]
    check_compatible(payload, config, path)
    if float(tune["lr"]) > float(config["optim"]["lr"]):
        warnings.warn(f"finetune.lr {tune['lr']} exceeds the preset's own optim.lr {config['optim']['lr']}: "
                      "fine-tuning may destroy the pretrained features", stacklevel=2)
    config["optim"]["lr"] = tune["lr"]
    config["optim"]["pct_start"] = tune["warmup"]
    config["loop"]["epochs"] = tune.get("epochs") or config["loop"]["epochs"]
    config["loop"]["freeze_encoder_epochs"] = tune.get("freeze_encoder_epochs", 0)
    return config, payload["state_dict"], payload.get("pixel_range")


def trained_range(pixel_range: list[float] | None, data: LabelledSet, names: list[str]) -> list[float] | None:
    """The pixel sizes (A/px) a model trained on the real images `names` has seen: the range of
    their graphene lattice readings (grapheneseg.lattice.read_lattice; unreadable and ambiguous
    readings left out) joined with `pixel_range`, the pretrained model's; None when neither is
    known. Recorded in the checkpoint, it keeps `evaluate predict` from resampling micrographs at
    scales the model was trained on (a real-only model otherwise gets the 0.28-0.50 A/px fallback)."""
    index = {n: i for i, n in enumerate(data.names)}
    readings = [read_lattice(data.images[index[n]]) for n in names]
    sizes = [r.pixel_size for r in readings if r.pixel_size and not r.ambiguous]
    if not sizes:
        return pixel_range
    if not pixel_range:
        return [round(min(sizes), 4), round(max(sizes), 4)]
    return [round(min(pixel_range[0], min(sizes)), 4), round(max(pixel_range[1], max(sizes)), 4)]


def _train_sets(config: dict[str, Any], data: LabelledSet, train: list[str], test: list[str] | None):
    loop = config["loop"]
    args = dict(augment=config["augment"], crop=loop["crop"], crops_per_image=loop["crops_per_image"],
                seed=config["seed"])
    train_set = real_pairs(data, train, **args)
    tune = config.get("finetune") or {}
    if tune.get("pretrained") and tune.get("sim_data") and tune.get("sim_fraction"):
        from train.pretrain import sim_rows

        paths = [Path(p) for p in tune["sim_data"]]
        train_set = MixedPairs(train_set, sim_pairs(paths, sim_rows(paths), **args),
                               float(tune["sim_fraction"]), config["seed"])
    test_set = real_pairs(data, test) if test else None
    return train_set, test_set


def _pretrained_counts(config: dict[str, Any], init: Mapping[str, torch.Tensor], val_set) -> list[list[int]]:
    """[tp, fp, fn, tn] of the pretrained weights, as they are, on each image of `val_set`."""
    model = build_model(architecture(config["model"]))
    model.load_state_dict(init)
    device = choose_device(config.get("device", "auto"))
    pairs = [val_set[i] for i in range(len(val_set))]
    counts = validate(model.to(device).eval(), [img[0].numpy() for img, _ in pairs],
                      [m.numpy().astype(bool) for _, m in pairs], config["loop"]["batch_size"], device)[1]
    return [np.asarray(c).tolist() for c in counts]


def grouping(config: Mapping[str, Any]) -> tuple[str, str]:
    """(`cv.grouping`, `cv.series_pattern`) of a config: how folds and inner splits group images
    (grapheneseg.splits; defaults "series" and the frame-suffix pattern)."""
    cv = config.get("cv") or {}
    return str(cv.get("grouping") or "series"), str(cv.get("series_pattern") or SERIES_PATTERN)


def _inner_runs(config: dict[str, Any], data: LabelledSet, names: list[str],
                init: Mapping[str, torch.Tensor] | None, out: Path, resume: bool, desc: str) -> list[dict]:
    """Train once per inner split of `names` (whole series held out, `cv.grouping`) with
    validation on its held-out images; each run's pooled and per-image counts per validated epoch
    (in config epochs), and the pretrained model's per-image counts, are kept in
    out/inner_I/curve.json."""
    runs = []
    epochs = int(config["loop"]["epochs"])
    for i, (train, held_out) in enumerate(inner_splits(names, config["select"], *grouping(config))):
        path = out / f"inner_{i}" / "curve.json"
        if resume and path.exists():
            run = json.loads(path.read_text())
            # a run from before per-image counts were kept cannot feed the guard's noise check: redo it
            if run.get("train") == train and (init is None or "pretrained_images" in run):
                runs.append(run)
                continue
            shutil.rmtree(path.parent)
        train_set, val_set = _train_sets(config, data, train, held_out)
        _, result = fit(config, train_set, val_set, path.parent, resume=resume, init=init, desc=f"{desc} inner {i}",
                        image_counts=True)
        if any("image_counts" not in h for h in result["history"] if "counts" in h):  # resumed from older code
            shutil.rmtree(path.parent)
            _, result = fit(config, train_set, val_set, path.parent, init=init, desc=f"{desc} inner {i}",
                            image_counts=True)
        scale = result["history"][-1]["epoch"] // epochs  # loop.min_steps repeats every epoch `scale` times
        validated = [h for h in result["history"] if "counts" in h]
        pretrained = None if init is None else _pretrained_counts(config, init, val_set)
        run = {"train": train, "held_out": held_out, "seconds": result["seconds"],
               "counts": {str(h["epoch"] // scale): h["counts"] for h in validated},
               "image_counts": {str(h["epoch"] // scale): h["image_counts"] for h in validated},
               "pretrained": None if pretrained is None else np.sum(pretrained, axis=0).tolist(),
               "pretrained_images": pretrained}
        write_json(path, run)
        (path.parent / "last.ckpt").unlink(missing_ok=True)
        runs.append(run)
    return runs


def fit_selected(config: dict[str, Any], data: LabelledSet, names: list[str],
                 init: Mapping[str, torch.Tensor] | None, out: Path, resume: bool = False,
                 desc: str = "train") -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any] | None]:
    """Train on `names` for the length chosen by inner validation (train.selection), or keep the
    pretrained `init` when fine-tuning did not beat it there beyond noise. Returns (model, fit
    result, selection); selection is None when `select.enabled` is false or fewer than 2 images (or,
    grouped by series, 2 series) are given (then a warning, and the configured length)."""
    select = config.get("select") or {}
    runs = _inner_runs(config, data, names, init, out, resume, desc) if select.get("enabled") else []
    if select.get("enabled") and not runs:
        kind, _ = grouping(config)
        few = " in fewer than 2 series" if kind == "series" else ""
        warnings.warn(f"{desc}: {len(names)} training image(s){few}: too few for inner validation; training for "
                      "the configured length without a check", stacklevel=2)
    selection = None
    if runs:
        epochs = int(config["loop"]["epochs"])
        total = {e: np.sum([r["counts"][e] for r in runs], axis=0) for e in runs[0]["counts"]}
        zero_shot = None if init is None else np.sum([r["pretrained"] for r in runs], axis=0)
        splits = [] if init is None else [(r["counts"], r["pretrained"]) for r in runs]
        images = None if init is None else (
            {e: [c for r in runs for c in r["image_counts"][e]] for e in runs[0]["counts"]},
            [c for r in runs for c in r["pretrained_images"]])
        noise = {"n_boot": int(select.get("bootstrap", 2000)), "level": float(select.get("level", 0.95)),
                 "seed": int(select["seed"])}
        selection = {**choose(total, epochs, zero_shot, splits, images, **noise), "inner_splits": len(runs),
                     "inner_images": sum(len(r["held_out"]) for r in runs),
                     "inner_seconds": round(sum(r["seconds"] for r in runs), 1)}
        if selection["choice"] == "pretrained":
            model = build_model(architecture(config["model"]))
            model.load_state_dict(init)
            return model.eval(), {"history": [], "final": {}, "seconds": 0.0}, selection
        config = json.loads(json.dumps(config))  # the chosen length, the same steps per epoch
        config["loop"]["min_steps"] = round(int(config["loop"].get("min_steps") or 0) * selection["epochs"] / epochs)
        config["loop"]["epochs"] = selection["epochs"]
    train_set, _ = _train_sets(config, data, names, None)
    model, result = fit(config, train_set, None, out, resume=resume, init=init, desc=desc)
    return model, result, selection


def train_fold(config: dict[str, Any], data: LabelledSet, split: dict, run_dir: Path,
               resume: bool = False) -> dict[str, Any]:
    """Train on split["train"], test on split["test"]; writes fold_K/model.ckpt and metrics.json.
    With `resume`, a finished fold is read back and an interrupted one continues."""
    out = fold_dir(run_dir, split)
    metrics_path = out / "metrics.json"
    if resume and metrics_path.exists() and (out / "model.ckpt").exists():
        return json.loads(metrics_path.read_text())
    config, init, pixel_range = finetune_setup(config)
    train_names = fold_train_names(config["cv"], split)
    # the test fold is only scored once, after training: never a validation set
    model, result, selection = fit_selected(
        config, data, train_names, init, out, resume=resume,
        desc=f"fold {split['fold']}" + (f" repeat {split['repeat']}" if split["repeat"] else ""))
    test_set = real_pairs(data, split["test"])
    images = [test_set[i][0][0].numpy() for i in range(len(test_set))]
    masks = [test_set[i][1].numpy().astype(bool) for i in range(len(test_set))]
    test_metrics, counts = validate(model, images, masks, config["loop"]["batch_size"],
                                    next(model.parameters()).device)
    record = {"repeat": split["repeat"], "fold": split["fold"], "train_images": train_names,
              "test": test_metrics,
              "counts": {n: c.tolist() for n, c in zip(split["test"], counts)},
              "seconds": result["seconds"] + (selection or {}).get("inner_seconds", 0.0),
              "history": result["history"], "selection": selection}
    save_checkpoint(out / "model.ckpt", model, architecture(config["model"]), config,
                    len(result["history"]), test_metrics, train_images=train_names, selection=selection,
                    pixel_range=trained_range(pixel_range, data, train_names))
    write_json(metrics_path, record)
    (out / "last.ckpt").unlink(missing_ok=True)
    return record


def cross_validate(cfg: DictConfig, real: Path, run_dir: Path, resume: bool = False,
                   splits: list[dict] | None = None) -> dict[str, Any]:
    """k-fold CV (cfg.cv.folds x cfg.cv.repeats) on the labelled folder `real` into `run_dir`.
    `splits`: folds handed over by a comparison (every arm the same), else made from cfg.cv."""
    config = to_plain(cfg)
    run_dir = Path(run_dir)
    data = load_labelled(Path(real))
    if splits is None:
        splits = load_or_make_splits(run_dir / "splits.json", data.names, int(cfg.cv.folds),
                                     int(cfg.cv.repeats), int(cfg.cv.split_seed), *grouping(config))
    else:
        splits = adopt_splits(run_dir / "splits.json", splits, data.names)
    save_config(cfg, run_dir)
    t0 = time.perf_counter()
    folds = [train_fold(config, data, split, run_dir, resume)
             for split in chosen_folds(splits, cfg.cv.get("only_folds"))]
    counts = {(f["repeat"], name): np.array(c) for f in folds for name, c in f["counts"].items()}
    summary = {
        "pooled": pooled(counts.values()),
        "per_fold": [{"repeat": f["repeat"], "fold": f["fold"], **f["test"]} for f in folds],
        "fold_mean_std": mean_and_spread([f["test"] for f in folds]),
        "per_image": {image_key(name, r): scores(c)
                      for (r, name), c in counts.items()},
        "train_seconds": round(sum(f["seconds"] for f in folds), 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "n_images": len(data), "test_images": len(counts), "folds": int(cfg.cv.folds), "repeats": int(cfg.cv.repeats),
        # how the folds were made (splits.json records it too); series with frames on both sides of a fold
        "grouping": splits[0].get("grouping", "image"), "series_pattern": splits[0].get("series_pattern"),
        "series": len({series_of(n, grouping(config)[1]) for n in data.names}),
        "straddling_series": len(straddling(splits, grouping(config)[1])),
        "n_real": cfg.cv.get("n_real"), "subset_seed": cfg.cv.get("subset_seed"),
        "train_names": cfg.cv.get("train_names"), "only_folds": config["cv"].get("only_folds"),
        "pretrained": cfg.get("finetune", {}).get("pretrained"),
        "selection": [{"repeat": f["repeat"], "fold": f["fold"], **(f.get("selection") or {})} for f in folds],
    }
    write_json(run_dir / "cv_metrics.json", summary)
    return summary


def train_all(cfg: DictConfig, real: Path, out: Path, resume: bool = False) -> dict[str, Any]:
    """One model on the images of `real` (all, or the `cv.n_real` subset), saved at `out` (a .ckpt
    file; config beside it). Returns its metrics and the record the checkpoint keeps: the
    `train_images`, the folder's `n_images` and the `pretrained` checkpoint (None: from scratch)."""
    config = to_plain(cfg)
    out = Path(out)
    data = load_labelled(Path(real))
    work = out.parent / f"{out.stem}.training"
    if resume and out.exists():
        payload = read_checkpoint(out)
        return {"out": str(out), **payload["metrics"], "train_images": payload.get("train_images", []),
                "n_images": len(data), "pretrained": (payload["config"].get("finetune") or {}).get("pretrained")}
    save_config(cfg, out.parent, name=f"{out.stem}.yaml")
    if config["cv"].get("train_names"):
        raise ValueError(f"cv.train_names ({config['cv']['train_names']}) names images per CV fold; with "
                         "cv.folds=0 use cv.n_real (and cv.subset_seed)")
    if config["cv"].get("only_folds") is not None:
        raise ValueError(f"cv.only_folds ({config['cv']['only_folds']}) chooses CV folds; with cv.folds=0 "
                         "there are none")
    config, init, pixel_range = finetune_setup(config)
    names = real_subset(data.names, config["cv"].get("n_real"), subset_seed(config["cv"]))
    model, result, selection = fit_selected(config, data, names, init, work, resume=resume, desc="all images")
    metrics = {"train_loss": result["final"].get("loss"),
               "seconds": result["seconds"] + (selection or {}).get("inner_seconds", 0.0), "selection": selection}
    save_checkpoint(out, model, architecture(config["model"]), config, len(result["history"]), metrics,
                    train_images=names, selection=selection, pixel_range=trained_range(pixel_range, data, names))
    shutil.rmtree(work, ignore_errors=True)  # last.ckpt and inner runs: the checkpoint holds the choice
    return {"out": str(out), **metrics, "train_images": names, "n_images": len(data),
            "pretrained": (config.get("finetune") or {}).get("pretrained")}
