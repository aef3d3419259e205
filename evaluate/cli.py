"""`evaluate`: the Bragg-filter baseline, scoring and prediction on real micrographs.

Common options are --flags; anything else is a Hydra override `key=value` of configs/evaluate.yaml
(e.g. `bragg.lowpass=4 cv.repeats=1`). Every run writes its resolved config beside its outputs.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from grapheneseg.config import DEFAULT_REAL_DIR, add_debug, run_command

from .commands import apply, benchmark

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
  evaluate pair scan.dm4 masks/scan_mask.png --out pairs/  # a corrected mask, ready for `train finetune`
  evaluate bragg --real DIR bragg.lowpass=4       # any config key as a Hydra override
  evaluate fetch-real --out data/real             # the public labelled set (GitHub, one archive)

predict, sort, atoms, suggest and structure answer every file of a folder or refuse it with a reason,
before computing (an overview image coarser than 1.065 A/px, under 32 px, or over --max-memory);
refused and failed files are listed at the end and in predictions.csv's status and note columns. Their exit code: 0 every
file answered, 1 some file failed (unreadable, or an error), 3 none failed but some were refused.
Several runs may share one --out folder: predictions.csv and ranking.csv keep every run's rows.
"""


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
    p.set_defaults(func=benchmark.bragg_cv)

    p = add("bragg-fit", "Fit the Bragg filter's sigma, g_thresh and m_thresh on all labelled images.")
    p.add_argument("--real", help="folder of NAME.png + NAME_LABEL.png (default: data.real_dir)")
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", default="bragg.json", help="parameter file to write (default bragg.json)")
    p.set_defaults(func=benchmark.bragg_fit)

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
    p.set_defaults(func=benchmark.score)

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
    p.set_defaults(func=apply.predict)
    p = add_apply("suggest", "Which unlabelled micrographs to label next (uncertainty with diversity): "
                             "suggestions.csv and suggestions.png. Files with a NAME_LABEL.png are skipped.")
    p.add_argument("--n", type=int, default=10, help="how many to suggest (default 10)")
    p.add_argument("--coverage-every", type=int, default=None, metavar="N",
                   help="every N-th pick by predicted coverage, so clean images are not all passed over "
                        "(default 5; 0: never)")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON list of {rank, file, score}")
    p.set_defaults(func=apply.suggest)
    p = add_apply("sort", "Rank micrographs by graphene fraction: ranking.csv and a contact sheet in rank order.")
    p.add_argument("--best", type=int, help="also copy the N cleanest micrographs into OUT/best")
    p.add_argument("--link", action="store_true", help="symlink instead of copying with --best")
    p.set_defaults(func=apply.sort)
    p = add_apply("atoms", "Find atoms outside the contamination and their bonds (coloured by angle mod 60).")
    p.add_argument("--method", choices=["network", "extrema"], default="network",
                   help="network (default): peaks of the atom map of a U-Net trained on simulations; "
                        "extrema: local extrema of the image")
    p.add_argument("--atom-model", dest="atom_model",
                   help="atom-map checkpoint (train pretrain --task atoms); default: the packaged one")
    p.add_argument("--contrast", choices=["auto", "white", "black"], default="auto",
                   help="atom contrast for --method extrema (default: detected from the honeycomb)")
    _add_scheduler(p)
    p.set_defaults(func=apply.atoms)

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
    p.set_defaults(func=apply.structure)

    p = add("pair", "Save a micrograph and its corrected contamination mask (e.g. a predict mask edited in Fiji or "
                    "napari) as a labelled pair OUT/NAME.png + NAME_LABEL.png, at the scale the model segments it "
                    "at, for `train finetune --real OUT --folds 0`. A different pair of that name is not overwritten "
                    "unless --overwrite.", network=True)
    p.add_argument("micrograph", help="the micrograph (.dm3 .dm4 .emd .ser .tif .png)")
    p.add_argument("mask", help="its corrected mask, the micrograph's size: any value above 0 is contamination "
                                "(predict's <stem>_mask.png or _mask.tif)")
    p.add_argument("--out", required=True, help="folder of labelled pairs (created)")
    p.add_argument("--name", help="pair name (default: the micrograph's file name)")
    p.add_argument("--model", nargs="+", metavar="CKPT_OR_RUN_DIR",
                   help="the model whose scale the pair is saved at (default: the packaged simulation-only model)")
    p.add_argument("--pixel-size", type=float, help="A/px when the file does not say (else: from the lattice)")
    p.add_argument("--overwrite", action="store_true", help="replace a different pair of that name")
    p.set_defaults(func=apply.pair, backend="torchscript")

    p = add("fetch-real", "Download the public labelled micrographs (github.com/lbnlcomputerarch/graphene-u-net, "
                          "training_images/) as one archive over HTTPS, check them and unpack the pairs.")
    p.add_argument("--out", default=str(DEFAULT_REAL_DIR), help=f"folder to create (default {DEFAULT_REAL_DIR})")
    p.add_argument("--archive", help="a local copy of the repository's .tar.gz instead of downloading it")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that already holds files")
    p.set_defaults(func=benchmark.fetch_real)

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
    p.set_defaults(func=benchmark.report)
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
