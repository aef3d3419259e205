"""`train`: U-Nets for contamination segmentation.

Common options are --flags; anything else is a Hydra override `key=value` of configs/train.yaml
(e.g. `loop.epochs=10 model.features=16`). Every run writes its resolved config beside its outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from grapheneseg.config import ConfigError, add_debug, flag_overrides, load_config, real_dir, run_command
from grapheneseg.metrics import METRICS

EXAMPLES = """examples:
  train real --out data/runs/real_cv                     # 5-fold CV, CPU preset, default real folder
  train real --real DIR --out RUN --folds 5 --repeats 2 --preset paper
  train real --folds 0 --out model.ckpt                  # one model on all labelled images
  train real --out RUN --resume                          # continue an interrupted run
  train real --out RUN loop.epochs=10 model.features=16  # any config key as a Hydra override
  train real --out RUN_K10 --n-real 10                   # each fold trains on 10 of its images
  train real --out RUN_paper --grouping image            # the paper's image-wise folds
  train pretrain --data data/sim/sim_5000_seed0.h5 --out sim.ckpt --real-val DIR
  train pretrain --task atoms --data data/sim/sim_5000_seed0.h5 --out atoms.ckpt   # atom finder for `evaluate atoms`
  train pretrain --task classes --data data/sim/sim_5000_seed0.h5 --out classes.ckpt   # four-class structure model
  torchrun --nproc-per-node 2 -m train.cli pretrain --data A.h5 --out sim.ckpt   # data-parallel
  train finetune --pretrained sim.ckpt --out RUN --n-real 10   # same folds as `train real`
  train finetune --pretrained sim.ckpt --folds 0 --out model.ckpt
  train finetune --real pairs/ --folds 0 --out mine.ckpt   # the packaged model on your corrected pairs
  train export --bioimageio sim_default.zip              # the packaged model as a bioimage.io package
  train export --bioimageio mine.zip --model model.ckpt --test-image scan.dm4
"""


def _cmd_real(args: argparse.Namespace) -> int:
    if getattr(args, "default_pretrained", False) and not args.pretrained:
        from train.models.registry import packaged

        args.pretrained = str(packaged("contamination"))
        print(f"no --pretrained given: fine-tuning the packaged simulation-only model {args.pretrained} "
              "as it is (its own network; model card beside it)", file=sys.stderr)
    cfg = load_config("train", flag_overrides(args, {
        "real": "data.real_dir", "folds": "cv.folds", "repeats": "cv.repeats", "preset": "preset",
        "seed": "seed", "device": "device", "threads": "threads", "n_real": "cv.n_real",
        "pretrained": "finetune.pretrained", "grouping": "cv.grouping"})
        # a network named on the command line must be the pretrained one: never silently replaced
        + (["finetune.architecture=config"] if any(w.startswith("model.") for w in args.overrides) else []))
    from train.crossval import cross_validate, train_all  # torch only when training
    from train.selection import describe

    real = real_dir(cfg)
    cfg.data.real_dir = str(real)  # the resolved config records the folder actually used
    if int(cfg.cv.folds) == 0:
        out = Path(args.out or Path(cfg.out_dir) / f"{args.command}_all.ckpt")
        if out.is_dir() or out.suffix != ".ckpt":
            raise ConfigError(f"--out {out}: with --folds 0 give a checkpoint file name ending in .ckpt")
        if out.exists() and not args.resume:
            raise ConfigError(f"--out {out} exists: choose another name, remove it, or --resume to keep it")
        result = train_all(cfg, real, out, resume=args.resume)
        used, total = len(result["train_images"]), result["n_images"]
        which = f"all {total} images" if used == total else f"{used} of {total} images (cv.n_real, a seeded subset)"
        start = f"fine-tuned from {result['pretrained']}" if result.get("pretrained") else "trained from scratch"
        print(f"model {start} on {which} of {real} -> {out} (its checkpoint lists them)")
        if result.get("selection"):
            print(f"  {describe(result['selection'])}")
        if args.json:
            print(json.dumps(result))
        return 0
    out = Path(args.out or Path(cfg.out_dir) / f"{args.command}_cv")
    summary = cross_validate(cfg, real, out, resume=args.resume)
    only = "" if summary["only_folds"] is None else f", folds {summary['only_folds']} only: {summary['test_images']} tested"
    k = "" if summary.get("n_real") is None else f", each fold trained on K = {summary['n_real']} of its training images"
    start = f"fine-tuned from {summary['pretrained']}" if summary.get("pretrained") else "from scratch"
    grouped = (f"folds of whole focal series ({summary['series']} series)" if summary["grouping"] == "series" else
               f"image-wise folds ({summary['straddling_series']} series on both sides of a fold)")
    print(f"{cfg.cv.folds}-fold CV x {cfg.cv.repeats} on {summary['n_images']} images of {real}{only}{k}, {grouped}, "
          f"{start} ({summary['train_seconds']:.0f} s training):")
    for metric in METRICS:
        spread = summary["fold_mean_std"][metric]
        print(f"  {metric:<18} pooled {summary['pooled'][metric]:.3f}   "
              f"folds {spread['mean']:.3f} +- {spread['std']:.3f}")
    for fold in summary["selection"]:
        if "choice" in fold:
            print(f"  fold {fold['fold']}" + (f" repeat {fold['repeat']}" if fold["repeat"] else "")
                  + f": {describe(fold)}")
    print(f"results: {out / 'cv_metrics.json'}")
    if args.json:
        print(json.dumps(summary["pooled"]))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    cfg = load_config("pretrain", flag_overrides(args, {
        "preset": "pretrain_preset", "seed": "seed", "device": "device", "threads": "threads", "task": "task"}))
    from train.pretrain import pretrain  # torch only when training

    out = Path(args.out)
    if out.is_dir() or out.suffix != ".ckpt":
        raise ConfigError(f"--out {out}: give a checkpoint file name ending in .ckpt")
    summary = pretrain(cfg, [Path(p) for p in args.data], out, Path(args.real_val) if args.real_val else None,
                       resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"pretrained on {summary['samples']} samples drawn from {summary['train_images']} simulated training "
              f"images ({summary['seconds']:.0f} s, {summary['images_per_second']:.1f} samples/s, "
              f"{summary['world_size']} process(es)) -> {out}")
        for name in ("sim_val", "real_val"):
            if summary[name]:
                print(f"  {name}: " + "  ".join(f"{k} {v:.3f}" for k, v in summary[name].items()))
        if args.json:
            print(json.dumps(summary))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from grapheneseg.formats import read_micrograph
    from train.models.export import export_bioimageio  # torch and the exporters only here

    if args.model:
        model = Path(args.model)
    else:
        from train.models.registry import packaged

        model = packaged("contamination")
        print(f"no --model given: exporting the packaged simulation-only model {model}", file=sys.stderr)
    image = read_micrograph(args.test_image).image if args.test_image else None
    summary = export_bioimageio(model, Path(args.bioimageio), image)
    print(f"bioimage.io package of {model} -> {args.bioimageio} ({', '.join(summary['files'])}); "
          f"ONNX vs TorchScript on the test input: max |diff| {summary['onnx_vs_torchscript']}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra config overrides")
    p.add_argument("--seed", type=int, help="training seed (default 12345)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads (default: available cores)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _real_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", help="folder of NAME.png + NAME_LABEL.png (default: data.real_dir)")
    p.add_argument("--out", help="run folder (CV) or .ckpt file (--folds 0)")
    p.add_argument("--folds", type=int, help="k of k-fold CV; 0 = one model on all images (default 5)")
    p.add_argument("--repeats", type=int, help="reshuffled repeats of the CV (default 1)")
    p.add_argument("--grouping", choices=["series", "image"],
                   help="series (default): folds and inner validation hold out whole focal series "
                        "(cv.series_pattern); image: the paper's image-wise folds")
    p.add_argument("--n-real", type=int, dest="n_real",
                   help="train each fold on a fixed seeded subset of K of its images (default: all)")
    p.add_argument("--preset", help="cpu (default: fast on a CPU) or paper (Sadre et al., for a GPU)")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON of the pooled metrics")
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("real", help="train on real labelled micrographs (k-fold CV or all images)",
                       description="Train the U-Net on real labelled micrographs: k-fold "
                       "cross-validation into a run folder, or (--folds 0) one model on all images.")
    _real_options(p)
    p.set_defaults(func=_cmd_real, pretrained=None)

    p = sub.add_parser("pretrain", help="train on simulated HDF5 datasets (streamed)",
                       description="Pretrain the U-Net on simulated, automatically labelled images "
                       "(HDF5 files of `simulate generate`), with a held-out simulated validation "
                       "part. Data-parallel under torchrun.")
    p.add_argument("--data", action="append", required=True, metavar="FILE.h5",
                   help="simulated dataset (repeat for several files)")
    p.add_argument("--out", required=True, help="checkpoint file to write (.ckpt)")
    p.add_argument("--preset", help="cpu (default) or gpu (configs/pretrain_preset/)")
    p.add_argument("--real-val", dest="real_val", help="labelled real folder validated alongside")
    p.add_argument("--task", choices=["contamination", "classes", "atoms"],
                   help="contamination (default: segmentation masks), classes (four classes: lattice, "
                        "contamination, vacuum, grain boundary; also a contamination model, fine-tuned on "
                        "real contamination labels by a partial-label loss) or atoms (an atom-map network "
                        "for `evaluate atoms`, from the files' atom maps)")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON summary")
    _common(p)
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a pretrained model on real labels (k-fold CV or all)",
                       description="`train real` initialised from a pretrained checkpoint, with the "
                       "fine-tuning options of the config's `finetune` section; same folds as `train real`.")
    p.add_argument("--pretrained", help="checkpoint of `train pretrain` (default: the packaged simulation-only model)")
    _real_options(p)
    p.set_defaults(func=_cmd_real, default_pretrained=True)

    p = sub.add_parser("export", help="export a checkpoint for other tools (a bioimage.io model package)",
                       description="Write a checkpoint as a bioimage.io model package (spec 0.5): TorchScript and "
                       "ONNX weights of a network that takes the raw micrograph (the flat-field preprocessing "
                       "built in), test tensors, a cover and the model card. Micrographs must be at the "
                       "model's pixel size (the package says which); consumers do not resample.")
    p.add_argument("--bioimageio", required=True, metavar="OUT.zip", help="package file to write")
    p.add_argument("--model", help="checkpoint (.ckpt); default: the packaged sim_default.ckpt")
    p.add_argument("--test-image", dest="test_image",
                   help="a micrograph for the test tensors and the cover (default: a synthetic lattice)")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON summary")
    p.set_defaults(func=_cmd_export)
    return parser


def _run(args: argparse.Namespace) -> int:
    """The command, with its training progress bars hidden under --quiet."""
    if not getattr(args, "quiet", False):
        return args.func(args)
    from train.loops import progress_bars  # torch only when training

    with progress_bars(False):
        return args.func(args)


def main(argv: list[str] | None = None) -> int:
    args = add_debug(build_parser()).parse_args(argv)
    return run_command(lambda: _run(args), "interrupted (continue with --resume)", args.debug)


if __name__ == "__main__":
    sys.exit(main())
