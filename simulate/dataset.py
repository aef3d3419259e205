"""The simulated dataset on disk: one HDF5 file, written image by image so it is always valid.

Layout (schema version 2; version-1 files, which lack `atoms`, are still read):
- `images`  float32 (N, H, W): recorded intensity, counts / (dose * pixel area), mean ~1
- `masks`   uint8 (N, H, W): 1 = amorphous-carbon contamination
- `classes` uint8 (N, H, W): 0 lattice, 1 contamination, 2 vacuum, 3 grain boundary
- `atoms`   uint8 (N, H, W): map of the graphene sheet's atoms, 255 at an atom (simulate.labels.atom_map);
  written by the simulator from version 2 on, absent from version-1 files (`require_atoms`)
- `meta`    structured (N,): seed, index, structure, variant, pixel size, every optics/dose draw,
  structure draws and label fractions (see simulate.pipeline.META_DTYPE)
- attrs: schema_version, package_version, config (resolved YAML of everything that shapes the
  images), seed, n_target, variants_per_structure, complete.

The datasets grow as images arrive (chunked, compressed, flushed per batch): an interrupted run
leaves a readable file holding every finished image, and a resumed run appends the rest.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np

from grapheneseg.classes import CLASS_NAMES
from .pipeline import META_DTYPE, Sample

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
ARRAYS = ("images", "masks", "classes")  # every version; `atoms` from version 2 on, when written


class DatasetError(ValueError):
    """A dataset file is missing, malformed or does not match the requested run."""


def package_version() -> str:
    try:
        return version("grapheneseg")
    except PackageNotFoundError:
        return "unknown"


class DatasetWriter:
    """Appends samples to a new or partially written dataset file, in index order."""

    def __init__(self, path: Path, n_target: int, image_px: int, attrs: dict, resume: bool):
        self.path = Path(path)
        if resume and self.path.exists():
            self.file = h5py.File(self.path, "r+")
            check_schema(self.file, self.path)
            if int(self.file.attrs["schema_version"]) != SCHEMA_VERSION:
                raise DatasetError(f"{self.path}: cannot resume a schema-version "
                                   f"{self.file.attrs['schema_version']} file with this version ({SCHEMA_VERSION})")
            for key in ("config", "seed", "n_target"):
                if _plain(self.file.attrs[key]) != _plain(attrs[key]):
                    raise DatasetError(f"{self.path}: cannot resume, its {key} differs from this run's")
            return
        self.file = h5py.File(self.path, "w")
        try:
            self._create(n_target, image_px, attrs)
        except Exception:
            self.file.close()
            self.path.unlink()
            raise

    def _create(self, n_target: int, image_px: int, attrs: dict) -> None:
        shape, chunks = (0, image_px, image_px), (1, image_px, image_px)
        maxshape = (n_target, image_px, image_px)
        self.file.create_dataset("images", shape, "f4", maxshape=maxshape, chunks=chunks, compression="gzip", compression_opts=1, shuffle=True)
        for name in ("masks", "classes"):
            self.file.create_dataset(name, shape, "u1", maxshape=maxshape, chunks=chunks, compression="gzip", compression_opts=4)
        self.file.create_dataset("meta", (0,), META_DTYPE, maxshape=(n_target,), chunks=(min(256, n_target),), compression="gzip")
        self.file.attrs.update(attrs)
        self.file.attrs["schema_version"] = SCHEMA_VERSION
        self.file.attrs["package_version"] = package_version()
        self.file.attrs["class_names"] = ",".join(CLASS_NAMES)
        self.file.attrs["complete"] = False
        self.file.flush()

    @property
    def count(self) -> int:
        return int(self.file["images"].shape[0])

    def append(self, samples: list[Sample]) -> None:
        """Write samples that continue the file exactly where it ends, then flush."""
        start = self.count
        if [s.index for s in samples] != list(range(start, start + len(samples))):
            raise DatasetError(f"{self.path}: samples out of order at image {start}")
        self.append_arrays(*(np.stack([getattr(s, a) for s in samples]) for a in ("image", "mask", "classes", "meta", "atoms")))

    def append_arrays(self, images: np.ndarray, masks: np.ndarray, classes: np.ndarray, meta: np.ndarray,
                      atoms: np.ndarray | None = None) -> None:
        """Append rows; `atoms` (atom maps) must come with every batch or with none."""
        start = self.count
        stop = start + len(images)
        if atoms is not None and "atoms" not in self.file:
            if start:
                raise DatasetError(f"{self.path}: atom maps arrive after {start} images without them")
            self.file.create_dataset("atoms", (0, *images.shape[1:]), "u1", maxshape=self.file["images"].maxshape,
                                     chunks=(1, *images.shape[1:]), compression="gzip", compression_opts=4)
        if (atoms is None) != ("atoms" not in self.file):
            raise DatasetError(f"{self.path}: atom maps missing from images {start}-{stop - 1}")
        arrays = {"images": images, "masks": masks, "classes": classes, "meta": meta}
        if atoms is not None:
            arrays["atoms"] = atoms
        for name, values in arrays.items():
            self.file[name].resize(stop, axis=0)
            self.file[name][start:stop] = values
        self.file.flush()

    def close(self, complete: bool) -> None:
        if self.file.id.valid:
            self.file.attrs["complete"] = bool(complete)
            self.file.close()


def rewrite(path: Path, n_target: int, image_px: int, attrs: dict, batches: list[tuple[int, int]]) -> None:
    """Re-write a completed file batch by batch as an uninterrupted run writes it.

    HDF5 places chunks and metadata by write history, so a file completed by `--resume` holds
    the same arrays as an uninterrupted run but not the same bytes; replaying the uninterrupted
    write sequence (then an atomic rename) makes the bytes identical too.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".rewrite")
    with h5py.File(path, "r") as src:
        writer = DatasetWriter(tmp, n_target, image_px, attrs, resume=False)
        try:
            for a, b in batches:
                writer.append_arrays(*(src[name][a:b] for name in (*ARRAYS, "meta")),
                                     src["atoms"][a:b] if "atoms" in src else None)
        finally:
            writer.close(complete=writer.count == n_target)
    tmp.replace(path)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def check_schema(file: h5py.File, path: Path) -> None:
    """Raise DatasetError naming what is wrong with a dataset file."""
    if int(file.attrs.get("schema_version", -1)) not in READABLE_VERSIONS:
        raise DatasetError(f"{path}: schema_version {file.attrs.get('schema_version')} is not one this version "
                           f"reads ({', '.join(map(str, READABLE_VERSIONS))})")
    for name in (*ARRAYS, "meta"):
        if name not in file:
            raise DatasetError(f"{path}: missing dataset '{name}'")
    n = file["images"].shape[0]
    for name in ("masks", "classes", "meta", *(["atoms"] if "atoms" in file else [])):
        if file[name].shape[0] != n:
            raise DatasetError(f"{path}: '{name}' holds {file[name].shape[0]} entries, images {n}")
    if file["images"].dtype != np.float32 or file["masks"].dtype != np.uint8:
        raise DatasetError(f"{path}: wrong dtypes ({file['images'].dtype}, {file['masks'].dtype})")
    missing = set(META_DTYPE.names) - set(file["meta"].dtype.names)
    if missing:
        raise DatasetError(f"{path}: meta lacks fields {sorted(missing)}")


def require_atoms(file: h5py.File, path: Path) -> None:
    """DatasetError unless the file holds atom maps (the atom-finding task needs them)."""
    if "atoms" not in file:
        raise DatasetError(f"{path}: holds no atom maps ('atoms' dataset; schema version "
                           f"{file.attrs.get('schema_version')}): the atom task needs a file made by "
                           f"`simulate generate` of schema version >= 2")


def open_dataset(path: Path) -> h5py.File:
    """Open a dataset for reading after checking its schema."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"{path}: not a readable HDF5 file ({err})") from None
    check_schema(file, path)
    return file
