"""Result tables that several runs share: one output folder, many processes, nothing lost.

A table (predictions.csv, ranking.csv, ...) keeps the rows of earlier runs in its folder and
replaces a file's rows only when that file (its key, an absolute path) comes again: a file may
have several rows (one per grain, say), and a new run's rows for it replace all of the old ones. The merge is done
under a lock file beside the table (filelock: POSIX and Windows, local and most network file
systems), and the table is written to a temporary file and renamed over the old one, so a reader
never sees half a table and two processes never interleave.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock

LOCK_TIMEOUT_S = 600  # a writer waiting this long means another one is stuck: raise, do not wait forever


def merge_rows(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]], key: str = "file",
               order: Callable[[dict[str, str]], Any] | None = None, number: str | None = None) -> Path:
    """Write `rows` (dicts over `columns`) into the CSV table `path`, keeping every earlier row
    whose `key` is not among them (columns it lacks are left empty, columns no longer written are
    dropped); `order` sorts the merged rows (default: by key, a file's rows in the order given) and
    the column `number`, when given, is renumbered 1, 2, ... in that order (a rank over every
    run's rows). Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = [{c: "" if r.get(c) is None else str(r[c]) for c in columns} for r in rows]
    keys = {r[key] for r in new}
    with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
        merged: list[dict[str, str]] = []
        if path.exists():
            with path.open(newline="") as f:
                merged = [{c: old.get(c) or "" for c in columns} for old in csv.DictReader(f)
                          if old.get(key) is not None and old[key] not in keys]
        table = sorted(merged + new, key=order or (lambda r: r[key]))
        if number:
            for i, row in enumerate(table, 1):
                row[number] = str(i)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(table)
        os.replace(tmp, path)
    return path
