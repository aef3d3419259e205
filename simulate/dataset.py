"""The simulated dataset on disk: one HDF5 file, written image by image so it is always valid.

Layout (schema version 3; version-2 files, which lack the structure truth, and version-1 files,
which also lack `atoms`, are still read):
- `images`  float32 (N, H, W): recorded intensity, counts / (dose * pixel area), mean ~1
- `masks`   uint8 (N, H, W): 1 = amorphous-carbon contamination
- `classes` uint8 (N, H, W): 0 lattice, 1 contamination, 2 vacuum, 3 grain boundary
- `atoms`   uint8 (N, H, W): map of the graphene sheet's atoms, 255 at an atom (simulate.labels.atom_map);
  written by the simulator from version 2 on, absent from version-1 files (`require_atoms`)
- `meta`    structured (N,): seed, index, structure, variant, pixel size, every optics/dose draw,
  structure draws and label fractions (see simulate.pipeline.META_DTYPE)
- the structure truth (simulate.labels.grain_truth), written by the simulator from version 3 on,
  absent from older files (`require_truth`); read back per image by `structure_truth`:
  - `grains` int16 (N, H, W): grain id per pixel, 0 = no grain (a hole), grains 1..n per image
    (contamination keeps the grain beneath it)
  - `grain_table` structured (G,): one row per grain of every image, in image order: image, grain,
    cell_grain (the builder's Voronoi cell), orientation_deg (degrees mod 60 in
    evaluate.analysis.orientation's convention: the {100} reflections' angle atan2(row, col)), area_px
  - `boundary_table` structured (B,): one row per boundary segment (a straight piece of the
    bisector where two grains meet), in image order: image, grain_a < grain_b, misorientation_deg
    (0-30), r0, c0, r1, c1 (its end points, px, row and column)
  - `ring_table` structured (K,): one row per intact non-hexagonal ring of the sheet in the field (5-
    and 7-rings of the boundaries, rarely 4 or 8), in image order: image, row, col (its centre, px), size
  Variable-length data are flat tables with an `image` column (sorted), so they grow with the
  images and a resumed run appends to them as to the arrays.
- attrs: schema_version, package_version, config (resolved YAML of everything that shapes the
  images), seed, n_target, variants_per_structure, complete.

The datasets grow as images arrive (chunked, compressed, flushed per batch): an interrupted run
leaves a readable file holding every finished image, and a resumed run appends the rest.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from collections.abc import Sequence

import h5py
import numpy as np

from grapheneseg.classes import CLASS_NAMES
from .labels import StructureTruth
from .pipeline import META_DTYPE, Sample

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
ARRAYS = ("images", "masks", "classes")  # every version; `atoms` from version 2 on, the truth from 3, when written
GRAIN_DTYPE = np.dtype([("image", "i8"), ("grain", "i4"), ("cell_grain", "i4"), ("orientation_deg", "f8"), ("area_px", "i8")])
BOUNDARY_DTYPE = np.dtype([("image", "i8"), ("grain_a", "i4"), ("grain_b", "i4"), ("misorientation_deg", "f8"),
                           ("r0", "f8"), ("c0", "f8"), ("r1", "f8"), ("c1", "f8")])
RING_DTYPE = np.dtype([("image", "i8"), ("row", "f8"), ("col", "f8"), ("size", "i4")])
TABLES = {"grain_table": GRAIN_DTYPE, "boundary_table": BOUNDARY_DTYPE, "ring_table": RING_DTYPE}


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
        truths = [s.truth for s in samples]
        self.append_arrays(*(np.stack([getattr(s, a) for s in samples]) for a in ("image", "mask", "classes", "meta", "atoms")),
                           truths=None if any(t is None for t in truths) else truths)

    def append_arrays(self, images: np.ndarray, masks: np.ndarray, classes: np.ndarray, meta: np.ndarray,
                      atoms: np.ndarray | None = None, truths: Sequence[StructureTruth] | None = None) -> None:
        """Append rows; `atoms` (atom maps) and `truths` (one StructureTruth per image) must each
        come with every batch or with none."""
        start = self.count
        stop = start + len(images)
        if truths is not None and "grains" not in self.file:
            if start:
                raise DatasetError(f"{self.path}: structure truth arrives after {start} images without it")
            self.file.create_dataset("grains", (0, *images.shape[1:]), "i2", maxshape=self.file["images"].maxshape,
                                     chunks=(1, *images.shape[1:]), compression="gzip", compression_opts=4)
            for name, dtype in TABLES.items():
                self.file.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(256,), compression="gzip")
        if (truths is None) != ("grains" not in self.file):
            raise DatasetError(f"{self.path}: structure truth missing from images {start}-{stop - 1}")
        if truths is not None and len(truths) != len(images):
            raise DatasetError(f"{self.path}: {len(truths)} structure truths for {len(images)} images")
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
        if truths is not None:
            arrays["grains"] = np.stack([t.grains for t in truths]).astype(np.int16)
        for name, values in arrays.items():
            self.file[name].resize(stop, axis=0)
            self.file[name][start:stop] = values
        if truths is not None:
            for name, rows in truth_rows(truths, start).items():
                if len(rows):
                    table = self.file[name]
                    table.resize(table.shape[0] + len(rows), axis=0)
                    table[-len(rows):] = rows
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
                                     src["atoms"][a:b] if "atoms" in src else None,
                                     structure_truths(src, a, b) if "grains" in src else None)
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
    if "grains" in file:
        if file["grains"].shape[0] != n:
            raise DatasetError(f"{path}: 'grains' holds {file['grains'].shape[0]} entries, images {n}")
        for name, dtype in TABLES.items():
            if name not in file:
                raise DatasetError(f"{path}: has 'grains' but no '{name}'")
            if set(dtype.names) - set(file[name].dtype.names):
                raise DatasetError(f"{path}: '{name}' lacks fields {sorted(set(dtype.names) - set(file[name].dtype.names))}")


def require_atoms(file: h5py.File, path: Path) -> None:
    """DatasetError unless the file holds atom maps (the atom-finding task needs them)."""
    if "atoms" not in file:
        raise DatasetError(f"{path}: holds no atom maps ('atoms' dataset; schema version "
                           f"{file.attrs.get('schema_version')}): the atom task needs a file made by "
                           f"`simulate generate` of schema version >= 2")


def require_truth(file: h5py.File, path: Path) -> None:
    """DatasetError unless the file holds the structure truth (grains, orientations, boundaries, rings)."""
    if "grains" not in file:
        raise DatasetError(f"{path}: holds no structure truth ('grains' and its tables; schema version "
                           f"{file.attrs.get('schema_version')}): measuring structure maps needs a file made by "
                           f"`simulate generate` of schema version >= 3")


def truth_rows(truths: Sequence[StructureTruth], start: int) -> dict[str, np.ndarray]:
    """The rows of the three truth tables for images start, start + 1, ... (module doc)."""
    rows = {name: [] for name in TABLES}
    for k, t in enumerate(truths):
        g = np.zeros(t.n_grains, GRAIN_DTYPE)
        g["image"], g["grain"], g["cell_grain"] = start + k, np.arange(1, t.n_grains + 1), t.cell_grain
        g["orientation_deg"], g["area_px"] = t.orientation, t.area_px
        b = np.zeros(len(t.boundary_grains), BOUNDARY_DTYPE)
        b["image"], b["grain_a"], b["grain_b"], b["misorientation_deg"] = start + k, *t.boundary_grains.T, t.misorientation
        for i, key in enumerate(("r0", "c0", "r1", "c1")):
            b[key] = t.boundaries[:, i]
        r = np.zeros(len(t.ring_sizes), RING_DTYPE)
        r["image"], r["row"], r["col"], r["size"] = start + k, *t.rings.T, t.ring_sizes
        for name, part in zip(TABLES, (g, b, r)):
            rows[name].append(part)
    return {name: np.concatenate(parts) if parts else np.zeros(0, TABLES[name]) for name, parts in rows.items()}


def structure_truths(file: h5py.File | Path, start: int, stop: int) -> list[StructureTruth]:
    """The `StructureTruth` (simulate.labels) of images start..stop-1 of a dataset (an open file
    or a path), as `simulate generate` stored it (module doc); DatasetError without one."""
    if not isinstance(file, h5py.File):
        with open_dataset(file) as f:
            return structure_truths(f, start, stop)
    require_truth(file, Path(file.filename))
    n = file["images"].shape[0]
    if not 0 <= start <= stop <= n:
        raise IndexError(f"{file.filename}: images {start}-{stop - 1} asked, the file holds {n}")
    grains = file["grains"][start:stop]
    pixel = file["meta"]["pixel_size"][start:stop] if stop > start else np.zeros(0)
    parts = {}
    for name in TABLES:
        image = file[name].fields("image")[:]
        lo, hi = np.searchsorted(image, start, "left"), np.searchsorted(image, stop - 1, "right")
        rows = file[name][lo:hi]
        parts[name] = [rows[rows["image"] == i] for i in range(start, stop)]
    out = []
    for k in range(stop - start):
        g, b, r = (parts[name][k] for name in TABLES)
        g = g[np.argsort(g["grain"], kind="stable")]
        out.append(StructureTruth(grains[k], g["orientation_deg"].astype(float), g["cell_grain"].astype(np.int64),
                                  g["area_px"].astype(np.int64),
                                  np.column_stack([b[key] for key in ("r0", "c0", "r1", "c1")]).astype(float).reshape(-1, 4),
                                  np.column_stack([b["grain_a"], b["grain_b"]]).astype(np.int64).reshape(-1, 2),
                                  np.column_stack([r["row"], r["col"]]).astype(float).reshape(-1, 2),
                                  r["size"].astype(np.int64), float(pixel[k])))
    return out


def structure_truth(file: h5py.File | Path, index: int) -> StructureTruth:
    """The `StructureTruth` of image `index` (`structure_truths`)."""
    return structure_truths(file, index, index + 1)[0]


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
