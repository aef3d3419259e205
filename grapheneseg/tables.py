"""Result tables that several runs share: one output folder, many processes, nothing lost.

A table (predictions.csv, ranking.csv, ...) keeps the rows of earlier runs in its folder and
replaces a file's rows only when that file (its key, an absolute path) comes again: a file may
have several rows (one per grain, say), and a new run's rows for it replace all of the old ones.
The merge is done under a lock on the table's folder itself (`folder_lock`: flock on the
directory, POSIX local and NFS file systems; no lock file is left beside the results; elsewhere a
lock file in the system's temporary folder), and the table is written to a temporary file and
renamed over the old one, so a reader never sees half a table and two processes never interleave.
"""
from __future__ import annotations

import contextlib
import csv
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

LOCK_TIMEOUT_S = 600  # a writer waiting this long means another one is stuck: raise, do not wait forever


@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (every process writing a table there waits for it);
    a TimeoutError after `timeout` s. Nothing is written into the folder."""
    try:
        import fcntl
    except ImportError:  # Windows: a lock file named after the folder, outside it
        import hashlib
        import tempfile

        from filelock import FileLock

        name = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
        with FileLock(str(Path(tempfile.gettempdir()) / f"grapheneseg-{name}.lock"), timeout=timeout):
            yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{folder}: another run has held its tables for over {timeout:.0f} s")
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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
    with folder_lock(path.parent):
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
