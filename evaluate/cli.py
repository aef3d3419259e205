"""`evaluate`: the Bragg-filter baseline, scoring and prediction on real micrographs.

Common options are --flags; anything else is a Hydra override `key=value` of configs/evaluate.yaml
(e.g. `bragg.lowpass=4 cv.repeats=1`). Every run writes its resolved config beside its outputs.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .benchmark import bragg
from .benchmark.bragg import fit_bragg, load_bragg_params, run_bragg_cv, score_bragg
from grapheneseg.config import (DEFAULT_REAL_DIR, ConfigError, add_debug, flag_overrides, load_config, real_dir, run_command,
                                save_config, save_run_config, write_json)
from grapheneseg.metrics import METRICS

EXAMPLES = """examples:
  evaluate bragg --folds 5 --repeats 2            # paper protocol on the default real folder
  evaluate bragg-fit --out bragg.json             # fit the filter on all labelled images
  evaluate score --method bragg --params bragg.json --test DIR --json
  evaluate score --model RUN_DIR --test DIR --json  # a fold ensemble (mean softmax) or one .ckpt
  evaluate score --model RUN_DIR --test DIR --tta   # also over the 8 dihedral symmetries
  evaluate predict --input scans/*.dm4 --out masks/  # the packaged simulation-only model
  evaluate predict --model model.ckpt --input scans/*.dm4 --out masks/ [--tta] [--device cuda]
  evaluate predict --model RUN_DIR --input scans/ --out masks/ --uncertainty  # + <stem>_uncertainty.png
  evaluate predict --model a.ckpt b.ckpt --input scans/ --out masks/ --uncertainty  # ensemble of both
  evaluate suggest --model RUN_DIR --input scans/ --n 10 --out next/  # which micrographs to label next
  evaluate sort --model model.ckpt --input DIR --out sorted/ --best 20
  evaluate atoms --model model.ckpt --input image.png --out atoms/   # atom-map network (packaged default)
  evaluate atoms --input image.png --out atoms/ --method extrema    # local extrema of the image instead
  evaluate bragg --real DIR bragg.lowpass=4       # any config key as a Hydra override
  evaluate fetch-real --out data/real             # the public labelled set (GitHub, one archive)

predict, sort, atoms, suggest and structure answer every file of a folder or refuse it with a reason,
before computing (an overview image coarser than 1.065 A/px, under 32 px, or over --max-memory);
refused and failed files are listed at the end and in predictions.csv's status and note columns. Their exit code: 0 every
file answered, 1 some file failed (unreadable, or an error), 3 none failed but some were refused.
Several runs may share one --out folder: predictions.csv and ranking.csv keep every run's rows.
"""


def _print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    """Table-1 style: one line per metric, mean +- spread when available."""
    print(title)
    for metric in METRICS:
        value = rows[metric]
        text = f"{value['mean']:.3f} +- {value['std']:.3f}" if isinstance(value, dict) else f"{value:.3f}"
        print(f"  {metric:<18} {text}")


def _cmd_bragg(args: argparse.Namespace) -> int:
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


def _cmd_bragg_fit(args: argparse.Namespace) -> int:
    cfg = load_config("evaluate", flag_overrides(args, {"real": "data.real_dir", "seed": "seed"}))
    result = fit_bragg(cfg, Path(args.out), progress=not args.quiet)
    print(f"fitted on {result['n_images']} images: " + ", ".join(
        f"{k}={result['params'][k]:.4g}" for k in ("sigma", "g_thresh", "m_thresh"))
          + f" (training pooled Jaccard {result['train_pooled_jaccard']:.3f}) -> {args.out}")
    return 0


def _show(notices: Iterable[Any]) -> None:
    """Print the library's notices (evaluate.apply.segment.Notice) on stderr: the default model
    used as a plain line, everything else as `warning: ...`."""
    for notice in notices:
        print(str(notice) if notice.kind == "model" and str(notice).startswith("no model given")
              else f"warning: {notice}", file=sys.stderr)


def _models(args: argparse.Namespace) -> Path | list[Path] | None:
    """--model (several of them: one ensemble), None when not given (the Predictor then takes the
    packaged model of its task and says so)."""
    if not args.model:
        return None
    if isinstance(args.model, list):
        return [Path(m) for m in args.model] if len(args.model) > 1 else Path(args.model[0])
    return Path(args.model)


def _predictor(args: argparse.Namespace, apply_cfg: Any, task: str = "contamination") -> Any:
    """The Predictor of --model (or the packaged model of `task`), its notices shown."""
    from .apply.predictor import Predictor

    predictor = Predictor(_models(args), apply_cfg, args.device, args.backend, task)
    _show(predictor.notices)
    return predictor


def _cmd_score(args: argparse.Namespace) -> int:
    if args.method == "bragg" and args.model is not None:
        raise ConfigError("give either --method bragg [--params FILE] or --model CKPT_OR_RUN_DIR, not both")
    cfg = load_config("evaluate", flag_overrides(args, {"tta": "apply.tta"}))
    if args.method != "bragg":
        predictor = _predictor(args, cfg.apply)  # torch is imported only when a network is scored
        result = predictor.score(Path(args.test), progress=not args.quiet)
        _show(result.pop("notices"))
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


def _apply_config(args: argparse.Namespace) -> Any:
    """The evaluate config with the apply commands' flags and overrides."""
    return load_config("evaluate", flag_overrides(args, {"threshold": "apply.threshold", "tta": "apply.tta",
                                                         "max_memory": "apply.max_memory_gb", "frames": "apply.frames"}))


def _segment(args: argparse.Namespace, uncertainty: bool = False, files: list[Path] | None = None,
             task: str = "contamination", frames: str | None = None) -> tuple[Any, Path, list, dict[str, Any]]:
    """Config, output folder, segmentations and {path: Skipped} for predict/sort/atoms/suggest/structure;
    the notices of the model and of each segmentation shown."""
    from .apply.segment import input_files

    cfg = _apply_config(args)
    predictor = _predictor(args, cfg.apply, task)
    files = input_files(args.input, exclude=Path(args.out)) if files is None else files
    results, skipped = predictor.segment_files(files, args.pixel_size, uncertainty, progress=not args.quiet,
                                               frames=frames)
    _show(n for seg in results for n in seg.notices)
    return cfg, Path(args.out), results, skipped


def _report_failures(skipped: dict[str, Any]) -> int:  # {path: evaluate.apply.segment.Skipped}
    """Every file without an answer, listed at the end; the exit code: 0 all answered, 1 some
    failed (unreadable, or an error), 3 none failed but some were refused (not images the model
    can answer for: an overview, a few pixels, too large)."""
    for skip in skipped.values():
        print(f"{skip.status}: {skip}", file=sys.stderr)
    refused = sum(s.status == "refused" for s in skipped.values())
    failed = len(skipped) - refused
    if skipped:
        print(f"error: {refused} file(s) refused, {failed} failed (listed above)", file=sys.stderr)
    return 1 if failed else (3 if refused else 0)


def _used(results: list) -> str:
    """What the answers rest on (segmentations, or (pixel size source, frames) pairs): how many
    pixel sizes came from where, and the stacks ("none" without answers)."""
    if not results:
        return "none"
    pairs = [r if isinstance(r, tuple) else (r.pixel_size_source, r.micrograph.frames) for r in results]
    sources: dict[str, int] = {}
    for source, _ in pairs:
        sources[source] = sources.get(source, 0) + 1
    stacks = sum(frames > 1 for _, frames in pairs)
    text = "pixel size " + ", ".join(f"{n} from {source}" for source, n in sorted(sources.items()))
    return text + (f"; {stacks} answer(s) from stacks (see the frame column)" if stacks else "")


def _cmd_predict(args: argparse.Namespace) -> int:
    return _run_batch(args, "predict")


def _run_batch(args: argparse.Namespace, command: str) -> int:
    """predict, atoms or structure over every input, in chunks (evaluate.apply.batch: here, or on a
    dask.distributed cluster with --scheduler), each chunk's files and rows written before the
    next; for predict, files an earlier run into --out finished with the same file, model, tool,
    config and pixel size are skipped (--force redoes them)."""
    from tqdm import tqdm

    from .apply.batch import Job, predictor_of, run_batch
    from .apply.segment import Notice, Skipped, already_done, input_files, output_stems

    cfg = _apply_config(args)
    out_dir = Path(args.out)
    predictor = _predictor(args, cfg.apply)
    files = input_files(args.input, exclude=out_dir)
    stems = output_stems(files)
    image_format, uncertainty = getattr(args, "format", "png"), getattr(args, "uncertainty", False)
    done = set()
    if command == "predict" and not args.force:
        done = already_done(out_dir, files, stems, predictor.provenance, image_format, uncertainty, args.pixel_size)
    todo = [f for f in files if f not in done]
    if done:
        print(f"{len(done)} of {len(files)} micrograph(s) already segmented in {out_dir} with this model and "
              "config: skipped (--force redoes them)", file=sys.stderr)
    save_run_config(cfg, out_dir)
    atom_predictor = None
    if (command == "atoms" and args.method == "network") or (command == "structure" and args.rings):
        atom_predictor = _atom_predictor(args, cfg.apply)
    options = {"image_format": image_format, "uncertainty": uncertainty, "given": args.pixel_size, "command": command,
               "atoms": _plain(cfg.atoms), "structure": _plain(cfg.get("structure_maps") or {}),
               "method": getattr(args, "method", "network"), "contrast": getattr(args, "contrast", "auto"),
               "rings": getattr(args, "rings", False)}
    job = Job.of(predictor, out_dir, atom_predictor, **options)
    predictor_of(job, predictor)  # the models loaded here serve the local chunks
    if atom_predictor is not None:
        predictor_of(job, atom_predictor, task="atoms")
    failed: dict[str, Any] = {}
    used: list = []
    lines: list[str] = []
    with tqdm(total=len(todo), desc=command, unit="img", disable=args.quiet) as bar:
        for n, summary in run_batch(job, todo, stems, args.scheduler):
            _show(Notice(kind, text) for kind, text in summary["notices"])
            failed.update({path: Skipped(*skip) for path, skip in summary["skipped"].items()})
            used += [tuple(u) for u in summary["used"]]
            lines += summary["lines"]
            bar.update(n)
    where = f" on {args.scheduler}" if args.scheduler else ""
    what = {"predict": "masks, overlays, predictions.csv", "atoms": "<stem>_atoms.csv, _bonds.csv, _bonds.png",
            "structure": "<stem>_classes.png, <stem>_orientation.png, structure.csv, grains.csv"}[command]
    print(f"{len(used)} micrograph(s) {'segmented' if command == 'predict' else 'answered'}{where} ({_used(used)}) "
          f"-> {out_dir} ({what})")
    for line in lines[:10] if command == "structure" else lines:
        print(("  " if command == "structure" else "") + line)
    return _report_failures(failed)


def _plain(cfg: Any) -> str:
    from .apply.batch import _plain as plain

    return plain(cfg)


def _cmd_suggest(args: argparse.Namespace) -> int:
    from grapheneseg.micrographs import DataError

    from .apply.suggest import COVERAGE_EVERY, check_coverage_every, choose, suggestion_sheet, unlabelled, write_suggestions

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, not {args.n}")
    if args.coverage_every is not None:  # before the segmentation, not after it
        check_coverage_every(args.coverage_every, "--coverage-every")
    files = unlabelled(args.input)
    if not files:
        raise DataError(f"every micrograph in {args.input} already has a NAME_LABEL.png: nothing to suggest")
    cfg, out_dir, results, failed = _segment(args, uncertainty=True, files=files, frames="first")  # a label is one image
    chosen = choose(results, args.n, COVERAGE_EVERY if args.coverage_every is None else args.coverage_every)
    table = write_suggestions(chosen, out_dir / "suggestions.csv")
    if chosen:
        suggestion_sheet(chosen, table.with_suffix(".png"))
    save_run_config(cfg, out_dir)
    print(f"{len(chosen)} of {len(results)} unlabelled micrograph(s) suggested ({_used(results)}) "
          f"-> {table}, {table.with_suffix('.png')}")
    for c in chosen[:10]:
        print(f"  #{c.rank} {c.segmentation.micrograph.path.name}: {c.why}")
    if args.json:
        print(json.dumps([{"rank": c.rank, "file": str(c.segmentation.micrograph.path), "score": c.score}
                          for c in chosen]))
    return _report_failures(failed)


def _cmd_sort(args: argparse.Namespace) -> int:
    from .apply.sorting import contact_sheet, export_best, rank, write_ranking

    cfg, out_dir, results, failed = _segment(args)
    ranked = rank(results)
    write_ranking(ranked, out_dir / "ranking.csv")
    if ranked:
        contact_sheet(ranked, out_dir / "contact_sheet.png")
    if args.best:
        export_best(ranked, args.best, out_dir / "best", mode="link" if args.link else "copy")
    save_run_config(cfg, out_dir)
    print(f"{len(ranked)} micrograph(s) ranked ({_used(results)}) -> {out_dir / 'ranking.csv'} "
          f"(with the rows of earlier runs into {out_dir}), {out_dir / 'contact_sheet.png'} (this run's)")
    for i, seg in enumerate(ranked[:5], 1):
        print(f"  #{i} {seg.micrograph.path.name}: graphene fraction {seg.graphene_fraction:.3f}")
    return _report_failures(failed)


def _atom_predictor(args: argparse.Namespace, apply_cfg: Any) -> Any:
    """The atom-map Predictor of --atom-model, else the packaged one (said on stderr), with the
    note on atom registration under astigmatism."""
    from train.models.registry import card

    from .apply.atoms import ASTIGMATISM_NOTE
    from .apply.predictor import Predictor

    predictor = Predictor(Path(args.atom_model) if args.atom_model else None, apply_cfg, args.device, args.backend,
                          task="atoms")
    _show(predictor.notices)
    print(f"note: {ASTIGMATISM_NOTE}; measured in the model card {card(predictor.model).name}", file=sys.stderr)
    return predictor


def _cmd_atoms(args: argparse.Namespace) -> int:
    if args.method == "extrema" and args.atom_model:
        raise ConfigError("--atom-model is the network method's; --method extrema finds atoms without one")
    if args.method == "network" and args.contrast != "auto":
        raise ConfigError("--contrast belongs to --method extrema; the network method needs no contrast")
    return _run_batch(args, "atoms")


def _cmd_structure(args: argparse.Namespace) -> int:
    return _run_batch(args, "structure")  # the contamination of `evaluate predict`, mask for mask


def _cmd_fetch_real(args: argparse.Namespace) -> int:
    from grapheneseg.fetch import fetch_real

    record = fetch_real(Path(args.out), Path(args.archive) if args.archive else None, overwrite=args.overwrite,
                        progress=not args.quiet)
    print(f"{record['pairs']} labelled pairs from {record['repository']} (commit {record['commit'] or 'unknown'}) "
          f"-> {args.out} (SOURCE.json, {record['licence'] or 'no licence file'})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .apply.predictor import check_device
    from .benchmark.comparison import run_report

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


def _add_scheduler(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a dask.distributed cluster (e.g. tcp://host:8786), chunks of 16 files per task; the "
                        "workers must see the input and output folders at the same paths; the same bytes as a local run")


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["torchscript", "onnx"], default="torchscript",
                   help="how the network runs on the CPU: torchscript (default) or onnx (ONNX Runtime: the same "
                        "masks, no faster on 256 px images; needs pip install -e '.[export]'; CPU only, not with "
                        "--device cuda)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, network: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra config overrides")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if network:
            p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                           help="where the network runs: auto (default: CUDA with autocast when present, "
                                "else the CPU's frozen TorchScript), cpu or cuda")
        return p

    p = add("bragg", "Cross-validate the Bragg-filter baseline (fit on training folds, score held-out fold).")
    p.add_argument("--real", help="folder of NAME.png + NAME_LABEL.png (default: data.real_dir)")
    p.add_argument("--folds", type=int, help="k of k-fold CV (default 5)")
    p.add_argument("--repeats", type=int, help="reshuffled repeats of the CV (default 2)")
    p.add_argument("--seed", type=int, help="seed of the fold assignment (default 12345)")
    p.add_argument("--out", help="output folder (default data/runs/evaluate/bragg_cv)")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON of the mean pooled metrics")
    p.set_defaults(func=_cmd_bragg)

    p = add("bragg-fit", "Fit the Bragg filter's sigma, g_thresh and m_thresh on all labelled images.")
    p.add_argument("--real", help="folder of NAME.png + NAME_LABEL.png (default: data.real_dir)")
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", default="bragg.json", help="parameter file to write (default bragg.json)")
    p.set_defaults(func=_cmd_bragg_fit)

    p = add("score", "Metrics of a method on a labelled folder (the six pooled metrics).", network=True)
    p.add_argument("--method", choices=["bragg"], help="classical baseline to score")
    p.add_argument("--params", help="Bragg parameters from `evaluate bragg-fit` (default: config values)")
    p.add_argument("--model", help="U-Net checkpoint, or a CV run folder (ensemble of its folds); "
                                   "default: the packaged simulation-only model")
    p.add_argument("--test", required=True, help="labelled folder to score on")
    p.add_argument("--out", help="also write all metrics (pooled, per image) to this JSON file")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON of the six pooled metrics")
    p.add_argument("--tta", action="store_true", help="U-Net: average over the 8 dihedral symmetries (8x the time)")
    _add_backend(p)
    p.set_defaults(func=_cmd_score)

    def add_apply(name: str, help_text: str) -> argparse.ArgumentParser:
        p = add(name, help_text, network=True)
        _add_backend(p)
        p.add_argument("--model", nargs="+", metavar="CKPT_OR_RUN_DIR",
                       help="U-Net checkpoint, or a CV run folder (fold ensemble), or several of them (one "
                            "ensemble of all their models); default: the packaged simulation-only model "
                            "(see its model card)")
        p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                       help="micrographs (.dm3 .dm4 .emd .ser .tif .png) or folders of them, searched recursively; the "
                            "outputs mirror the folders below the one that holds all the inputs")
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--pixel-size", type=float, help="A/px when the files do not say (else: from the lattice)")
        p.add_argument("--threshold", type=float, help="contamination probability threshold (default 0.5)")
        p.add_argument("--frames", choices=["all", "first", "mean"],
                       help="a stack or focal series: all (default: every frame, a row and outputs each, plus their "
                            "drift-registered consensus, flagged where the frames disagree), first (the first frame "
                            "only: fastest), mean (one answer for the drift-registered mean of the frames: more dose)")
        p.add_argument("--max-memory", type=float, metavar="GB",
                       help="refuse, before computing, a micrograph whose segmentation would need more memory "
                            "(estimated from its size and the model's scale; default 4, apply.max_memory_gb)")
        return p

    p = add_apply("predict", "Segment micrographs: <stem>_mask.png (255 = contamination), "
                             "<stem>_overlay.png and predictions.csv.")
    p.add_argument("--tta", action="store_true", default=None,
                   help="average over the 8 dihedral symmetries (8x the time; apply.tta)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also the per-pixel std over ensemble members x 8 symmetries: <stem>_uncertainty.png, "
                        "and an uncertainty column (the Jaccard disagreement of the members' masks with their "
                        "consensus: the error it stands in for); the probability is then their mean")
    _add_scheduler(p)
    p.add_argument("--force", action="store_true",
                   help="segment every input again, even those an earlier run into --out finished with the same "
                        "file, model, tool version and config (by default they are skipped: a rerun resumes)")
    p.add_argument("--format", choices=["png", "tiff", "both"], default="png",
                   help="png (default: <stem>_mask.png, as before); tiff: Fiji-ready ImageJ TIFFs at the "
                        "micrograph's pixel size instead (<stem>_mask.tif, _probability.tif, _uncertainty.tif), "
                        "whose scale bar Fiji and napari show; both: the two")
    p.set_defaults(func=_cmd_predict)
    p = add_apply("suggest", "Which unlabelled micrographs to label next (uncertainty with diversity): "
                             "suggestions.csv and suggestions.png. Files with a NAME_LABEL.png are skipped.")
    p.add_argument("--n", type=int, default=10, help="how many to suggest (default 10)")
    p.add_argument("--coverage-every", type=int, default=None, metavar="N",
                   help="every N-th pick by predicted coverage, so clean images are not all passed over "
                        "(default 5; 0: never)")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON list of {rank, file, score}")
    p.set_defaults(func=_cmd_suggest)
    p = add_apply("sort", "Rank micrographs by graphene fraction: ranking.csv and a contact sheet in rank order.")
    p.add_argument("--best", type=int, help="also copy the N cleanest micrographs into OUT/best")
    p.add_argument("--link", action="store_true", help="symlink instead of copying with --best")
    p.set_defaults(func=_cmd_sort)
    p = add_apply("atoms", "Find atoms outside the contamination and their bonds (coloured by angle mod 60).")
    p.add_argument("--method", choices=["network", "extrema"], default="network",
                   help="network (default): peaks of the atom map of a U-Net trained on simulations; "
                        "extrema: local extrema of the image")
    p.add_argument("--atom-model", dest="atom_model",
                   help="atom-map checkpoint (train pretrain --task atoms); default: the packaged one")
    p.add_argument("--contrast", choices=["auto", "white", "black"], default="auto",
                   help="atom contrast for --method extrema (default: detected from the honeycomb)")
    _add_scheduler(p)
    p.set_defaults(func=_cmd_atoms)

    p = add_apply("structure", "Structure maps (the paper's four classes): lattice orientation (angle mod 60), grains, "
                               "grain boundaries and vacuum outside the contamination: <stem>_classes.png, "
                               "<stem>_orientation.png, structure.csv (one row per micrograph, areas in nm2) and "
                               "grains.csv (one row per grain, misorientations). The contamination comes from the "
                               "same model as `evaluate predict` (default: the packaged simulation-only one), so the "
                               "two commands' masks agree.")
    p.add_argument("--rings", action="store_true",
                   help="also the ring census (4- to 9-membered rings) from the atom-map network's bond graph, "
                        "counted only where the registration check is ok")
    p.add_argument("--atom-model", dest="atom_model", help="atom-map checkpoint for --rings (default: the packaged one)")
    p.add_argument("--format", choices=["png", "tiff", "both"], default="png",
                   help="png (default): <stem>_classes.png (the classes over the micrograph, legend, scale bar) and "
                        "<stem>_orientation.png; tiff or both: also Fiji-ready ImageJ TIFFs at the micrograph's pixel "
                        "size: <stem>_classes.tif (uint8: 0 lattice, 1 contamination, 2 vacuum, 3 grain boundary), "
                        "<stem>_orientation.tif (degrees mod 60, NaN off the lattice), <stem>_grains.tif (grain ids)")
    _add_scheduler(p)
    p.set_defaults(func=_cmd_structure)

    p = add("fetch-real", "Download the public labelled micrographs (github.com/lbnlcomputerarch/graphene-u-net, "
                          "training_images/) as one archive over HTTPS, check them and unpack the pairs.")
    p.add_argument("--out", default=str(DEFAULT_REAL_DIR), help=f"folder to create (default {DEFAULT_REAL_DIR})")
    p.add_argument("--archive", help="a local copy of the repository's .tar.gz instead of downloading it")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that already holds files")
    p.set_defaults(func=_cmd_fetch_real)

    p = add("report", "Every arm (Bragg, real-only, sim-only, sim-pretrained + fine-tuned) on identical "
                      "folds: report.html, report.md, metrics.json and figures. Overrides prefixed train. "
                      "or pretrain. go to those configs.", network=True)
    p.add_argument("--real", help="labelled folder (default: data.real_dir)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--sim", help="simulated HDF5 dataset: pretrain on it here")
    group.add_argument("--pretrained", help="a simulation-pretrained checkpoint (train pretrain)")
    p.add_argument("--out", required=True, help="report folder (runs are kept under OUT/arms and reused)")
    p.add_argument("--budget", choices=["quick", "full"], default="quick",
                   help="quick: 5-fold CV, short training, K=10 (<= 30 min on 2 cores); full: paper protocol")
    p.add_argument("--test-dir", help="train every arm on all of --real and score on this folder instead of CV")
    p.set_defaults(func=_cmd_report)
    return parser


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    """Warnings for a user: `warning: <message>`, without the source line."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = add_debug(build_parser()).parse_args(argv)
    default_format, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        return run_command(lambda: args.func(args), debug=args.debug)
    finally:
        warnings.formatwarning = default_format


if __name__ == "__main__":
    sys.exit(main())
