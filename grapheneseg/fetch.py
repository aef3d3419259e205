"""Download the public labelled micrographs (Sadre et al. 2021) into `data/real`.

The set lives in the GitHub repository lbnlcomputerarch/graphene-u-net, folder `training_images/`,
as NAME.png + NAME_LABEL.png pairs under a BSD-style licence. It is fetched as one archive of
the repository over HTTPS (or read from a local copy of that archive), checked, and only the
complete pairs are unpacked, with the licence and a SOURCE.json (URL, commit, SHA-256, pairs)
beside them. The folder is built next to its destination and renamed into place once every pair
has been read back (`load_labelled`), so an interrupted or failed fetch leaves nothing half-made.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from .micrographs import LABEL_SUFFIX, DataError, load_labelled

REPOSITORY = "lbnlcomputerarch/graphene-u-net"
ARCHIVE_URL = f"https://github.com/{REPOSITORY}/archive/HEAD.tar.gz"
IMAGE_FOLDER = "training_images"
LICENCE = "LICENSE.txt"
CHUNK = 1 << 20


def download(url: str, dest: Path, timeout: float = 60.0, progress: bool = True) -> Path:
    """Stream `url` to `dest`; an OSError saying what failed and what to do offline."""
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise OSError(f"cannot download {url} ({reason}). Offline? Download that archive elsewhere and "
                      f"give it with --archive FILE, or set GRAPHENESEG_REAL_DIR to a folder of the pairs") from None
    return dest


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (archives, checkpoints, datasets)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _pairs(archive: tarfile.TarFile, source: Path) -> tuple[dict[str, tarfile.TarInfo], tarfile.TarInfo | None]:
    """{file name: member} of the complete pairs in `training_images/`, and the licence member."""
    pngs, licence = {}, None
    for member in archive.getmembers():
        parts = PurePosixPath(member.name).parts
        if not member.isfile() or len(parts) < 2:
            continue
        if parts[-2] == IMAGE_FOLDER and parts[-1].lower().endswith(".png"):
            pngs[parts[-1]] = member
        elif len(parts) == 2 and parts[-1] == LICENCE:
            licence = member
    if not pngs:
        raise DataError(f"{source}: no {IMAGE_FOLDER}/*.png in the archive: not a {REPOSITORY} archive")
    stems = {Path(n).stem for n in pngs}
    complete = {s for s in stems if not s.endswith(LABEL_SUFFIX) and s + LABEL_SUFFIX in stems}
    keep = {n: m for n, m in pngs.items() if Path(n).stem.removesuffix(LABEL_SUFFIX) in complete}
    return keep, licence


def fetch_real(out: Path, archive: Path | None = None, url: str = ARCHIVE_URL, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Unpack the labelled pairs of the public set into `out`; returns the SOURCE.json record.

    `archive`: a local copy of the repository's .tar.gz (else it is downloaded from `url`).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: already holds files; give --overwrite to replace them")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        if archive is None:
            archive = download(url, Path(tmp) / "archive.tar.gz", progress=progress)
            origin = url
        else:
            origin = str(archive)
        if not Path(archive).is_file():
            raise DataError(f"{archive}: archive not found")
        staging = Path(tmp) / "real"
        staging.mkdir()
        try:
            with tarfile.open(archive, "r:*") as tar:
                members, licence = _pairs(tar, Path(archive))
                for name, member in members.items():  # names are base names: nothing escapes `staging`
                    (staging / name).write_bytes(tar.extractfile(member).read())
                if licence is not None:
                    (staging / LICENCE).write_bytes(tar.extractfile(licence).read())
                commit = tar.pax_headers.get("comment")  # git archive records the commit here
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise DataError(f"{archive}: not a readable .tar.gz archive ({type(err).__name__}: {err})") from None
        try:
            data = load_labelled(staging)  # every image decodes and matches its label
        except DataError as err:
            raise DataError(f"{archive}: bad pair in {IMAGE_FOLDER}/: {err}") from None
        record = {"source": origin, "repository": REPOSITORY, "commit": commit, "archive_sha256": sha256(Path(archive)),
                  "pairs": len(data), "licence": LICENCE if licence is not None else None}
        (staging / "SOURCE.json").write_text(json.dumps(record, indent=1))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return record
