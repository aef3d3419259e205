"""Reading micrographs from microscope files (.dm3 .dm4 .emd .ser .tif .png) with their pixel size.

Microscope formats go through RosettaSciIO (the HyperSpy readers), PNG/JPEG through Pillow. The
pixel size comes from the file's calibrated axes when it has them (converted to Angstrom), else it
is None and the caller asks for `--pixel-size`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .micrographs import DataError, image_frames, read_image

READERS = {  # suffix -> RosettaSciIO plugin
    ".dm3": "rsciio.digitalmicrograph", ".dm4": "rsciio.digitalmicrograph",
    ".emd": "rsciio.emd", ".ser": "rsciio.tia", ".tif": "rsciio.tiff", ".tiff": "rsciio.tiff",
}
PILLOW = (".png", ".jpg", ".jpeg")
SUPPORTED = tuple(READERS) + PILLOW
TO_ANGSTROM = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4, "μm": 1e4,
               "mm": 1e7, "cm": 1e8, "m": 1e10, "nanometer": 10.0, "nanometers": 10.0, "micron": 1e4,
               "microns": 1e4, "micrometer": 1e4, "\\u00c5": 1.0}  # keys lower-case; µ (micro sign) and μ (Greek mu) both occur; ImageJ writes Å as \u00c5


@dataclass
class Micrograph:
    """One 2-D image (float32) with its pixel size in Angstrom (None when the file has none)."""

    path: Path
    image: np.ndarray
    pixel_size: float | None
    frames: int = 1  # 2-D frames the file holds (a stack or series)
    frame: int | None = 0  # which of them `image` is (0: the first); None: the mean of them all (`reading`)
    reading: str = "first"  # "first", "frame" (one of all), "mean" (their registered mean), "consensus" (of the answers)

    @property
    def note(self) -> str:
        """What a reader of the results must know about how the file was read ("" when nothing)."""
        if self.frames <= 1:
            return ""
        if self.reading == "mean":
            return f"drift-registered mean of {self.frames} frames"
        if self.reading == "consensus":
            return f"consensus of {self.frames} drift-registered frames (on frame 1's grid)"
        if self.reading == "frame":
            return f"frame {self.frame + 1} of {self.frames}"
        return f"frame 1 of {self.frames} (a stack: the first frame is used; --frames all or mean uses every frame)"


def _pixel_size(axes: list[dict]) -> float | None:
    """Pixel size in Angstrom from the last two (signal) axes, if they are calibrated in length."""
    sizes = []
    for axis in axes[-2:]:
        unit = str(axis.get("units") or "").strip().lower()
        if unit not in TO_ANGSTROM or not axis.get("scale"):
            return None
        sizes.append(float(axis["scale"]) * TO_ANGSTROM[unit])
    return float(np.mean(sizes)) if sizes else None


def _imagej_pixel_size(path: Path) -> float | None:
    """Pixel size in Angstrom of an ImageJ (Fiji) TIFF from its resolution tags and the length unit
    of its ImageJ description; None without both. RosettaSciIO reads only ImageJ's "micron"; a
    plain TIFF's resolution (dots per inch) is never taken for a pixel size."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            unit = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
            tags = tif.pages[0].tags
            if unit not in TO_ANGSTROM or "XResolution" not in tags or "YResolution" not in tags:
                return None
            sizes = [den / num for num, den in (tags[n].value for n in ("XResolution", "YResolution")) if num]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return float(np.mean(sizes)) * TO_ANGSTROM[unit] if len(sizes) == 2 else None


def read_micrograph(path: Path | str) -> Micrograph:
    """Read one micrograph; a clear DataError for unsupported, unreadable or non-2-D content.

    A file holding several images (e.g. a Velox EMD with a stack) yields its first 2-D image, and
    says so (`Micrograph.frames`, `Micrograph.note`); `read_frames` reads them all.
    """
    return _read(Path(path), every_frame=False)[0]


def read_frames(path: Path | str) -> list[Micrograph]:
    """Every 2-D frame of a micrograph file (one for a single image; N for a stack or a focal
    series), each a Micrograph with its `frame` index and the file's pixel size."""
    return _read(Path(path), every_frame=True)


def _read(path: Path, every_frame: bool) -> list[Micrograph]:
    """The first frame, or (`every_frame`) every frame, of `path` (see `read_micrograph`)."""
    suffix = path.suffix.lower()
    if suffix == ".emi":
        raise DataError(f"{path}: a TIA .emi file is the header; give the .ser file(s) beside it")
    if suffix in PILLOW:
        n = image_frames(path)
        if not every_frame or n == 1:
            return [Micrograph(path, read_image(path), None, n)]
        return [Micrograph(path, read_image(path, k), None, n, k, "frame") for k in range(n)]
    if suffix not in READERS:
        raise DataError(f"{path}: unsupported format {suffix or '(no suffix)'}; supported: {', '.join(SUPPORTED)}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        signals = importlib.import_module(READERS[suffix]).file_reader(str(path))
    except Exception as err:  # readers raise many types for corrupt files
        raise DataError(f"{path}: unreadable {suffix} file ({type(err).__name__}: {err})") from None
    for signal in signals:
        data = np.asarray(signal["data"])
        if data.ndim < 2 or not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            continue
        stack = data.reshape(-1, *data.shape[-2:])  # stacks and series: frames along the leading axes
        frames = len(stack)
        chosen = range(frames) if every_frame and frames > 1 else range(1)
        images = [stack[k].astype(np.float32) for k in chosen]
        if not all(np.isfinite(image).all() for image in images):
            raise DataError(f"{path}: contains non-finite pixel values (NaN or inf)")
        size = _pixel_size(signal.get("axes", []))
        if size is None and suffix in (".tif", ".tiff"):
            size = _imagej_pixel_size(path)
        reading = "frame" if len(images) > 1 else "first"
        return [Micrograph(path, image, size, frames, k, reading) for k, image in zip(chosen, images)]
    raise DataError(f"{path}: no 2-D real-valued image found in the file")
