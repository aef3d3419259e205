"""The `evaluate` commands that apply a model to micrographs: predict, sort, suggest, atoms,
structure, and pair (a corrected mask saved for fine-tuning). Each parses nothing (evaluate.cli does) and calls the library: one Predictor
(evaluate.apply.predictor), the chunked batch (evaluate.apply.batch), then prints what the library
returned (its notices as `warning: ...` lines) and returns the exit code."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from grapheneseg.config import ConfigError, flag_overrides, load_config, save_run_config


def show(notices: Iterable[Any]) -> None:
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


def model_predictor(args: argparse.Namespace, apply_cfg: Any, task: str = "contamination") -> Any:
    """The Predictor of --model (or the packaged model of `task`), its notices shown."""
    from ..apply.predictor import Predictor

    predictor = Predictor(_models(args), apply_cfg, args.device, args.backend, task)
    show(predictor.notices)
    return predictor


def _apply_config(args: argparse.Namespace) -> Any:
    """The evaluate config with the apply commands' flags and overrides."""
    return load_config("evaluate", flag_overrides(args, {"threshold": "apply.threshold", "tta": "apply.tta",
                                                         "max_memory": "apply.max_memory_gb", "frames": "apply.frames"}))


def _segment(args: argparse.Namespace, uncertainty: bool = False, files: list[Path] | None = None,
             frames: str | None = None) -> tuple[Any, Path, list, dict[str, Any]]:
    """Config, output folder, segmentations and {path: Skipped} for sort and suggest (predict, atoms
    and structure run in chunks: `_run_batch`); the notices of the model and of each segmentation shown."""
    from ..apply.segment import input_files

    cfg = _apply_config(args)
    predictor = model_predictor(args, cfg.apply)
    files = input_files(args.input, exclude=Path(args.out)) if files is None else files
    results, skipped = predictor.segment_files(files, args.pixel_size, uncertainty, progress=not args.quiet,
                                               frames=frames)
    show(n for seg in results for n in seg.notices)
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


def predict(args: argparse.Namespace) -> int:
    return _run_batch(args, "predict")


def _run_batch(args: argparse.Namespace, command: str) -> int:
    """predict, atoms or structure over every input, in chunks (evaluate.apply.batch: here, or on a
    dask.distributed cluster with --scheduler), each chunk's files and rows written before the
    next; for predict, files an earlier run into --out finished with the same file, model, tool,
    config and pixel size are skipped (--force redoes them)."""
    from tqdm import tqdm

    from ..apply.batch import Job, predictor_of, run_batch
    from ..apply.segment import Notice, Skipped, already_done, input_files, output_stems

    cfg = _apply_config(args)
    out_dir = Path(args.out)
    predictor = model_predictor(args, cfg.apply)
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
    job = Job.of(predictor, out_dir, atom_predictor, cfg.atoms, cfg.get("structure_maps"), image_format=image_format,
                 uncertainty=uncertainty, given=args.pixel_size, command=command,
                 method=getattr(args, "method", "network"), contrast=getattr(args, "contrast", "auto"),
                 rings=getattr(args, "rings", False))
    predictor_of(job, predictor)  # the models loaded here serve the local chunks
    if atom_predictor is not None:
        predictor_of(job, atom_predictor, task="atoms")
    failed: dict[str, Any] = {}
    used: list = []
    lines: list[str] = []
    with tqdm(total=len(todo), desc=command, unit="img", disable=args.quiet) as bar:
        for n, summary in run_batch(job, todo, stems, args.scheduler):
            show(Notice(kind, text) for kind, text in summary["notices"])
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


def suggest(args: argparse.Namespace) -> int:
    from grapheneseg.micrographs import DataError

    from ..apply.suggest import COVERAGE_EVERY, check_coverage_every, choose, suggestion_sheet, unlabelled, write_suggestions

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


def sort(args: argparse.Namespace) -> int:
    from ..apply.sorting import contact_sheet, export_best, rank, write_ranking

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

    from ..apply.atoms import ASTIGMATISM_NOTE
    from ..apply.predictor import Predictor

    predictor = Predictor(Path(args.atom_model) if args.atom_model else None, apply_cfg, args.device, args.backend,
                          task="atoms")
    show(predictor.notices)
    print(f"note: {ASTIGMATISM_NOTE}; measured in the model card {card(predictor.model).name}", file=sys.stderr)
    return predictor


def atoms(args: argparse.Namespace) -> int:
    if args.method == "extrema" and args.atom_model:
        raise ConfigError("--atom-model is the network method's; --method extrema finds atoms without one")
    if args.method == "network" and args.contrast != "auto":
        raise ConfigError("--contrast belongs to --method extrema; the network method needs no contrast")
    return _run_batch(args, "atoms")


def structure(args: argparse.Namespace) -> int:
    return _run_batch(args, "structure")  # the contamination of `evaluate predict`, mask for mask


def pair(args: argparse.Namespace) -> int:
    """A micrograph and its corrected mask as a labelled pair at the model's scale (for `train finetune`)."""
    from grapheneseg.formats import read_micrograph
    from grapheneseg.micrographs import DataError, read_label

    from ..apply.corrections import save_pair
    from ..apply.scale import decide_scale

    predictor = model_predictor(args, _apply_config(args).apply)
    micrograph = read_micrograph(Path(args.micrograph))
    mask, nonbinary = read_label(Path(args.mask))
    if mask.shape != micrograph.image.shape:
        raise DataError(f"{args.mask}: {mask.shape[1]} x {mask.shape[0]} px, but {args.micrograph} is "
                        f"{micrograph.image.shape[1]} x {micrograph.image.shape[0]} px: a mask of that micrograph is needed")
    if nonbinary > 0.01:
        print(f"warning: {args.mask}: {nonbinary:.0%} of its pixels are neither 0 nor the maximum; every value "
              "above 0 is taken as contamination", file=sys.stderr)
    scale = decide_scale(micrograph, args.pixel_size)
    if scale.warning(str(micrograph.path)):
        print(f"warning: {scale.warning(str(micrograph.path))}", file=sys.stderr)
    saved = save_pair(predictor, micrograph, mask, Path(args.out), args.name, scale, args.overwrite)
    at = f"{saved.pixel_size:.4g} A/px" if saved.pixel_size else "its own, unknown scale"
    how = ("already there, identical" if saved.unchanged else
           f"{saved.shape[1]} x {saved.shape[0]} px at {at}" + (" (resampled to the model's scale)" if saved.resampled else ""))
    print(f"{saved.image} + {saved.label.name}: {how}")
    print(f"then fine-tune on the folder's pairs: train finetune --real {args.out} --folds 0 --out mine.ckpt")
    return 0
