"""`simulate` command: generate | preview | inspect | compare | calibrate (argparse over Hydra overrides)."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grapheneseg.config import add_debug, flag_overrides, load_config, real_dir, run_command, save_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulate", description="Auto-labelled HRTEM graphene images with abTEM.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="simulate N labelled images into an HDF5 file")
    gen.add_argument("--n", type=int, help="number of images (default: config n)")
    gen.add_argument("--out", type=Path, help="output .h5 (default data/sim/sim_<n>_seed<seed>.h5)")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--workers", type=int, help="local processes, one thread each")
    gen.add_argument("--scheduler", help="dask.distributed scheduler address, e.g. tcp://host:8786")
    gen.add_argument("--device", choices=("cpu", "gpu"))
    mode = gen.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="complete an interrupted file")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing file")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--json", action="store_true", help="print run statistics as one JSON line")
    gen.add_argument("--calibration", type=Path, help="YAML written by `simulate calibrate` (key=value overrides still win)")

    pre = sub.add_parser("preview", help="contact sheet of simulated images with mask outlines")
    pre.add_argument("--n", type=int, help="number of images (default: config preview.n)")
    pre.add_argument("--out", type=Path, help="PNG path (default: config preview.out)")
    pre.add_argument("--seed", type=int)
    pre.add_argument("--from", dest="source", type=Path, help="take the images from this .h5 instead of simulating")

    ins = sub.add_parser("inspect", help="schema check and statistics of a dataset file")
    ins.add_argument("file", type=Path)
    ins.add_argument("--json", action="store_true")

    cmp_ = sub.add_parser("compare", help="simulated vs real statistics after the same preprocessing")
    cmp_.add_argument("--sim", type=Path, required=True)
    cmp_.add_argument("--real", type=Path, help="folder of NAME.png + NAME_LABEL.png (default: data.real_dir)")
    cmp_.add_argument("--out", type=Path, default=Path("data/runs/simulate-compare"))
    cmp_.add_argument("--max-sim", type=int, default=500, help="use at most this many simulated images")
    cmp_.add_argument("--json", action="store_true")

    cal = sub.add_parser(
        "calibrate", help="fit the simulator's ranges to a folder of micrographs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit the simulator's ranges (pixel size, dose, detector blur, defocus; with --labelled the\n"
                    "contamination coverage) to a folder of your micrographs, as they are.\n\n"
                    "Micrographs: .dm3 .dm4 .emd .ser .tif .tiff .png .jpg, any size and pixel size. Each is\n"
                    "brought to the simulated scale: its pixel size (the file's calibration, else read from\n"
                    "the graphene lattice) is binned 2x2, 4x4, ... (or upsampled 2x, 4x for coarse pixels)\n"
                    "into the simulated range grid.pixel_size, alike for a folder taken at one\n"
                    "magnification; then it is cut into grid.image_px tiles (its labels likewise,\n"
                    "nearest-neighbour). Micrographs already grid.image_px at the simulated scale are used\n"
                    "as they are. Left out, with a warning naming the file: no pixel size and no lattice\n"
                    "(unless already grid.image_px), pixels coarser than 1.07 A/px, or smaller than one tile\n"
                    "at the simulated scale.\n\n"
                    "Writes OUT (the YAML of overrides) and OUT with .png: the fitted ranges against the real\n"
                    "statistics. A quick look: --structures 4 --variants 2.")
    cal.add_argument("--real", type=Path, help="folder of micrographs (default: data.real_dir)")
    cal.add_argument("--out", type=Path, required=True,
                     help="YAML to write, for `simulate generate --calibration`; the figure goes beside it (.png)")
    cal.add_argument("--labelled", action="store_true",
                     help="every micrograph has NAME_LABEL.png (or .tif) beside it: also fit the contamination coverage")
    cal.add_argument("--structures", type=int, default=16, help="exit waves in the search pool")
    cal.add_argument("--variants", type=int, default=4, help="optics draws per exit wave in the pool")
    cal.add_argument("--json", action="store_true")

    for p in (gen, pre, ins, cmp_, cal):
        p.add_argument("overrides", nargs="*", help="config overrides key=value")
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    from .driver import default_out, generate

    from .calibration import read_calibration

    calibration = read_calibration(args.calibration) if args.calibration else []
    cfg = load_config("simulate", calibration + flag_overrides(args, {f: f for f in ("n", "seed", "workers", "scheduler", "device")}))
    out = args.out or default_out(cfg)
    stats = generate(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    save_config(cfg, out.parent, name=f"{out.stem}.yaml")
    result = {"out": str(out), **stats.as_dict()}
    print(f"wrote {out}: {stats.images} new images from {stats.structures} structures in {stats.wall:.1f} s "
          f"({result['images_per_s']} img/s)")
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .report import inspect_dataset

    summary = inspect_dataset(args.file)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.file}: {summary['images']} / {summary['n_target']} images "
              f"({'complete' if summary['complete'] else 'INCOMPLETE'}), schema v{summary['schema_version']}, "
              f"{summary['structures']} structures")
        for key, (lo, hi, mean) in summary["ranges"].items():
            print(f"  {key:24s} {lo:12.4g} .. {hi:<12.4g} mean {mean:.4g}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .report import preview

    cfg = load_config("simulate", flag_overrides(args, {"seed": "seed"}))
    out = args.out or Path(cfg.preview.out)
    n = int(cfg.preview.n) if args.n is None else args.n
    preview(cfg, n, out, source=args.source)
    save_config(cfg, out.parent, name=f"{out.stem}.yaml")
    print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:

    from .report import compare

    cfg = load_config("simulate", flag_overrides(args, {}))
    result = compare(args.sim, args.real or real_dir(cfg), args.out, max_sim=args.max_sim)
    save_config(cfg, args.out)
    print(f"wrote {args.out}/compare.json and figures")
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate, summary, write_calibration

    cfg = load_config("simulate", flag_overrides(args, {}))
    result = calibrate(cfg, args.real or real_dir(cfg), labelled=args.labelled, structures=args.structures, variants=args.variants)
    write_calibration(result, args.out)
    save_config(cfg, args.out.parent, name=f"{args.out.stem}.base.yaml")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}; distances before {result['before']['total']:.3f}, "
          f"after {result['after']['total']:.3f} (simulate generate --calibration {args.out})")
    if args.json:
        print(json.dumps(summary(result)))
    return 0


COMMANDS = {"generate": cmd_generate, "inspect": cmd_inspect, "preview": cmd_preview, "compare": cmd_compare,
            "calibrate": cmd_calibrate}


def main(argv: Sequence[str] | None = None) -> int:
    args = add_debug(build_parser()).parse_args(argv)
    return run_command(lambda: COMMANDS[args.command](args),
                       "interrupted; finished images are saved, rerun with --resume to complete the file", args.debug)


if __name__ == "__main__":
    sys.exit(main())
