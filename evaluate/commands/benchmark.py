"""The `evaluate` commands that measure methods on labelled micrographs: bragg, bragg-fit, score,
report and fetch-real. Each parses nothing (evaluate.cli does) and calls the library."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from grapheneseg.config import ConfigError, flag_overrides, load_config, real_dir, save_config, write_json
from grapheneseg.metrics import METRICS

from ..benchmark import bragg
from ..benchmark.bragg import fit_bragg, load_bragg_params, run_bragg_cv, score_bragg
from .apply import model_predictor, show


def _print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    """Table-1 style: one line per metric, mean +- spread when available."""
    print(title)
    for metric in METRICS:
        value = rows[metric]
        text = f"{value['mean']:.3f} +- {value['std']:.3f}" if isinstance(value, dict) else f"{value:.3f}"
        print(f"  {metric:<18} {text}")


def bragg_cv(args: argparse.Namespace) -> int:
    cfg = load_config("evaluate", flag_overrides(args, {"real": "data.real_dir", "folds": "cv.folds",
                                                     "repeats": "cv.repeats", "seed": "seed"}))
    out_dir = Path(args.out or Path(cfg.out_dir) / "bragg_cv")
    summary = run_bragg_cv(cfg, out_dir, progress=not args.quiet)
    _print_table(f"Bragg filter, {cfg.cv.folds}-fold CV x {cfg.cv.repeats} repeats on "
                 f"{summary['n_images']} images (pooled per fold, mean +- std over folds):",
                 summary["pooled_spread"])
    print(f"results: {out_dir / 'bragg_cv.json'}")
    if args.json:
        print(json.dumps(summary["pooled_mean"]))
    return 0


def bragg_fit(args: argparse.Namespace) -> int:
    cfg = load_config("evaluate", flag_overrides(args, {"real": "data.real_dir", "seed": "seed"}))
    result = fit_bragg(cfg, Path(args.out), progress=not args.quiet)
    print(f"fitted on {result['n_images']} images: " + ", ".join(
        f"{k}={result['params'][k]:.4g}" for k in ("sigma", "g_thresh", "m_thresh"))
          + f" (training pooled Jaccard {result['train_pooled_jaccard']:.3f}) -> {args.out}")
    return 0


def score(args: argparse.Namespace) -> int:
    if args.method == "bragg" and args.model is not None:
        raise ConfigError("give either --method bragg [--params FILE] or --model CKPT_OR_RUN_DIR, not both")
    cfg = load_config("evaluate", flag_overrides(args, {"tta": "apply.tta"}))
    if args.method != "bragg":
        predictor = model_predictor(args, cfg.apply)  # torch is imported only when a network is scored
        result = predictor.score(Path(args.test), progress=not args.quiet)
        show(result.pop("notices"))
        args.model = predictor.model
    else:
        params = load_bragg_params(Path(args.params)) if args.params else bragg.BraggParams.from_config(cfg.bragg)
        result = score_bragg(params, Path(args.test))
    if args.out:
        write_json(Path(args.out), result)
        save_config(cfg, Path(args.out).parent, f"{Path(args.out).stem}.config.yaml")
    if not args.json:
        _print_table(f"{args.model or 'bragg'} on {result['n_images']} images of {args.test} (pooled):",
                     result["pooled"])
    else:
        print(json.dumps(result["pooled"]))
    return 0


def fetch_real(args: argparse.Namespace) -> int:
    from grapheneseg.fetch import fetch_real

    record = fetch_real(Path(args.out), Path(args.archive) if args.archive else None, overwrite=args.overwrite,
                        progress=not args.quiet)
    print(f"{record['pairs']} labelled pairs from {record['repository']} (commit {record['commit'] or 'unknown'}) "
          f"-> {args.out} (SOURCE.json, {record['licence'] or 'no licence file'})")
    return 0


def report(args: argparse.Namespace) -> int:
    from ..apply.predictor import check_device
    from ..benchmark.comparison import run_report

    check_device(args.device)  # fail now, not after an hour of training, when CUDA is absent
    real = Path(args.real) if args.real else real_dir(load_config("evaluate"))
    overrides = list(args.overrides)
    if args.device != "auto":  # training and pretraining follow the same device
        overrides += [f"train.device={args.device}", f"pretrain.device={args.device}"]
    out = run_report(real, Path(args.out), args.budget, Path(args.sim) if args.sim else None,
                     Path(args.pretrained) if args.pretrained else None,
                     Path(args.test_dir) if args.test_dir else None, overrides, progress=not args.quiet,
                     device=args.device)
    print(f"report: {out['html']} ({out['md'].name}, {out['metrics'].name})")
    return 0
