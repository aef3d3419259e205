"""A lab's whole folder and parallel runs into one output folder (`evaluate predict`).

    python benchmarks/bench_folder.py --formats ../shared/data/formats --real DIR [--runs 2 4] [--json]

1. Folder: every RosettaSciIO sample of --formats, the first two micrographs of --real, a DM3
   cut short and a text file named .png, in one temporary folder, segmented by one
   `evaluate predict` under `/usr/bin/time -v` (one thread): wall time, peak memory, exit code and
   the verdict per file (predictions.csv's status and note); then the two real micrographs
   segmented alone, and their masks compared byte for byte with the folder run's.
2. Parallel runs: the first 26 x N micrographs of --real split over N `evaluate predict` processes
   started at once into one output folder (for each N of --runs): rows in predictions.csv, distinct
   files among them, and the run configs kept.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EVALUATE = str(Path(sys.executable).with_name("evaluate"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def predict(inputs: Path, out: Path, timed: bool = False) -> tuple[int, str]:
    command = [EVALUATE, "predict", "--input", str(inputs), "--out", str(out), "--quiet"]
    run = subprocess.run((["/usr/bin/time", "-v"] if timed else []) + command, capture_output=True, text=True,
                         env=ENV)
    return run.returncode, run.stderr


def folder_run(formats: Path, real: list[Path], work: Path) -> dict:
    lab = work / "lab"
    lab.mkdir()
    for path in sorted(formats.iterdir()):
        if path.suffix.lower() in (".dm3", ".dm4", ".emd", ".ser", ".emi", ".tif", ".png"):
            shutil.copy(path, lab)
    for path in real:
        shutil.copy(path, lab)
    (lab / "cut_short.dm3").write_bytes((formats / "test-1.dm3").read_bytes()[:3000])
    (lab / "notes.png").write_text("not an image")
    code, err = predict(lab, work / "out", timed=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", err).group(1)
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) / 1024**2
    verdicts = {Path(r["file"]).name: f"{r['status']}: {r['note'].split(': ', 1)[-1]}" if r["note"] else r["status"]
                for r in csv.DictReader((work / "out" / "predictions.csv").open())}
    alone = work / "alone"
    alone.mkdir()
    for path in real:
        shutil.copy(path, alone)
    predict(alone, work / "alone_out")
    same = all((work / "out" / f"{p.stem}_mask.png").read_bytes() == (work / "alone_out" / f"{p.stem}_mask.png").read_bytes()
               for p in real)
    return {"files": len(list(lab.iterdir())), "exit_code": code, "wall": wall, "peak_gb": round(peak, 2),
            "verdicts": verdicts, "real_masks_same_as_alone": same}


def parallel_runs(real: list[Path], n: int, work: Path) -> dict:
    inputs = [work / f"in{n}_{k}" for k in range(n)]
    for k, folder in enumerate(inputs):
        folder.mkdir()
        for path in real[k::n]:
            (folder / path.name).symlink_to(path.resolve())
    out = work / f"out{n}"
    runs = [subprocess.Popen([EVALUATE, "predict", "--input", str(f), "--out", str(out), "--quiet"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for f in inputs]
    codes = [r.wait() for r in runs]
    rows = [r["file"] for r in csv.DictReader((out / "predictions.csv").open())]
    return {"runs": n, "inputs": len(real), "exit_codes": codes, "rows": len(rows), "distinct": len(set(rows)),
            "configs": len(list(out.glob("config*.yaml")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", type=Path, required=True, help="folder of RosettaSciIO sample files")
    parser.add_argument("--real", type=Path, required=True, help="folder of real micrographs (NAME.png)")
    parser.add_argument("--runs", type=int, nargs="+", default=[2, 4], help="parallel run counts (default 2 4)")
    parser.add_argument("--json", action="store_true", help="one JSON line last")
    args = parser.parse_args()
    real = sorted(p for p in args.real.glob("*.png") if not p.stem.endswith("_LABEL"))
    with tempfile.TemporaryDirectory() as tmp:
        result = {"folder": folder_run(args.formats, real[:2], Path(tmp))}
        print(f"folder of {result['folder']['files']} files: exit {result['folder']['exit_code']}, "
              f"{result['folder']['wall']} wall, {result['folder']['peak_gb']} GB peak; real masks same as alone: "
              f"{result['folder']['real_masks_same_as_alone']}")
        for name, verdict in result["folder"]["verdicts"].items():
            print(f"  {name}: {verdict}")
        result["parallel"] = [parallel_runs(real[:26 * n], n, Path(tmp)) for n in args.runs]
        for r in result["parallel"]:
            print(f"{r['runs']} runs at once, {r['inputs']} inputs: {r['rows']} rows, {r['distinct']} distinct, "
                  f"exit codes {r['exit_codes']}, {r['configs']} configs kept")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
