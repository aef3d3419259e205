"""A lab's archive through `evaluate predict`: a 3-level tree of counter-named micrographs with
stacks and unreadable files, run whole, killed (SIGKILL) halfway and resumed, and run on a
dask.distributed LocalCluster.

    python benchmarks/bench_archive.py --real DIR --work /tmp/archive [--files 200] [--workers 2]

Builds WORK/in/dayD/sampleS/NNNN.png from the labelled micrographs of DIR (copied in turn), a
3-frame TIFF stack per day (the frames drift by a few pixels) and an unreadable file per day, then:
1. `evaluate predict` over the tree: wall time, peak memory (the child's max RSS), outputs and rows;
2. the same into a fresh folder, killed with SIGKILL once predictions.csv holds half the rows, then
   run again: rows, duplicates, temporary files left, and the rerun's time;
3. a local run and a `--scheduler` run on a LocalCluster of `--workers` single-threaded workers,
   their outputs compared byte for byte, and img/s of each.
Prints one JSON summary. The default packaged model; OMP_NUM_THREADS=1 throughout.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
from PIL import Image

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def build_tree(real: Path, root: Path, n_files: int) -> dict[str, int]:
    """The archive: 4 days x 5 samples of counter-named PNGs (n_files in all), a stack and a broken file a day."""
    import tifffile

    images = sorted(p for p in real.glob("*.png") if not p.stem.endswith("_LABEL"))
    shutil.rmtree(root, ignore_errors=True)
    folders = [root / f"day{d}" / f"sample{s}" for d in range(1, 5) for s in range(1, 6)]
    for i in range(n_files):
        folder = folders[i % len(folders)]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(images[i % len(images)], folder / f"{i // len(folders) + 1:04d}.png")
    for d in range(1, 5):
        base = np.asarray(Image.open(images[d]), dtype=np.float32)
        frames = [scipy.ndimage.shift(base, (k * 1.5, -k), order=1, mode="nearest") for k in range(3)]
        tifffile.imwrite(root / f"day{d}" / "series.tif", np.stack(frames), imagej=True)
        (root / f"day{d}" / "0000.png").write_bytes(b"not an image")
    return {"png": n_files, "stacks": 4, "unreadable": 4}


def predict(inp: Path, out: Path, *extra: str) -> tuple[int, float, float]:
    """(exit code, wall s, peak child RSS MiB) of one `evaluate predict` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "evaluate.cli", "predict", "--input", str(inp), "--out", str(out),
                           "--quiet", *extra], env=ENV, capture_output=True, text=True).returncode
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return code, wall, max(peak, before) / 1024


def rows(out: Path) -> list[dict[str, str]]:
    if not (out / "predictions.csv").exists():
        return []
    with (out / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def killed_and_resumed(inp: Path, out: Path, total_rows: int) -> dict[str, float | int]:
    """Kill a run with SIGKILL once half the rows are written, then rerun it."""
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "evaluate.cli", "predict", "--input", str(inp), "--out", str(out),
                             "--quiet"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(rows(out)) < total_rows // 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = len(rows(out))
    leftovers = len(list(out.rglob(".*tmp*")))
    code, wall, _ = predict(inp, out)
    table = rows(out)
    keys = [(r["file"], r["frame"]) for r in table]
    return {"rows_at_kill": at_kill, "temporary_files_after_kill": leftovers, "rerun_exit": code,
            "rerun_seconds": round(wall, 1), "rows_after_rerun": len(table), "duplicate_rows": len(keys) - len(set(keys)),
            "temporary_files_after_rerun": len(list(out.rglob(".*tmp*")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/archive"))
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    inp = args.work / "in"
    made = build_tree(args.real, inp, args.files)
    summary: dict = {"tree": made}

    code, wall, peak = predict(inp, args.work / "whole")
    table = rows(args.work / "whole")
    summary["whole"] = {"exit": code, "seconds": round(wall, 1), "peak_rss_mib": round(peak), "rows": len(table),
                        "segmented_rows": sum(r["status"] == "segmented" for r in table),
                        "failed_rows": sum(r["status"] == "failed" for r in table),
                        "mask_files": len(list((args.work / "whole").rglob("*_mask.png"))),
                        "img_per_s": round(sum(r["status"] == "segmented" and r["frame"] != "consensus"
                                               for r in table) / wall, 2)}
    summary["killed_and_resumed"] = killed_and_resumed(inp, args.work / "killed", len(table))

    import dask
    import distributed

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
                                      dashboard_address=None) as cluster:
            code, wall_dask, _ = predict(inp, args.work / "dask", "--scheduler", cluster.scheduler_address)
    local = sorted(p.relative_to(args.work / "whole") for p in (args.work / "whole").rglob("*.png"))
    remote = sorted(p.relative_to(args.work / "dask") for p in (args.work / "dask").rglob("*.png"))
    same = local == remote and all((args.work / "whole" / p).read_bytes() == (args.work / "dask" / p).read_bytes()
                                   for p in local)
    answered = summary["whole"]["segmented_rows"]
    summary["dask"] = {"exit": code, "workers": args.workers, "seconds": round(wall_dask, 1),
                       "img_per_s": round(answered / wall_dask, 2), "local_img_per_s": round(answered / wall, 2),
                       "png_files": len(remote), "identical_to_local": same}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
