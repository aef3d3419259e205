"""Real microscope files (RosettaSciIO's test samples, GPL-3.0) read in place: shape and pixel size
in Angstrom, from nm, um and pm calibrations (issue 13). Skipped where the folder is absent; set
GRAPHENESEG_FORMATS_DIR to point at it."""
from __future__ import annotations


import pytest

from grapheneseg.formats import read_micrograph
from grapheneseg.micrographs import DataError


from tests.conftest import FORMATS
pytestmark = pytest.mark.skipif(FORMATS is None or not FORMATS.is_dir(), reason="sample files not present")

# file, shape, pixel size in A (None: the file has no length calibration); checked against the axes
# RosettaSciIO reports: 0.16867 um, 6.2818 nm and 8.1729 pm per pixel
EXPECTED = [
    ("test-1.dm3", (2, 2), None),
    ("test-1.dm4", (2, 2), None),
    ("test_dm_image_um_unit.dm3", (68, 68), 1686.7469),
    ("test_loading_image_saved_with_DM.tif", (68, 68), 1686.7469),
    ("64x64_TEM_images_acquire_1.ser", (64, 64), 62.818336),
    ("example_image.emd", (3, 3), None),
    ("fei_example_tem_stack.emd", (3, 3), 0.081728832),  # a (2, 3, 3) stack: its first frame
]


@pytest.mark.parametrize("name, shape, pixel", EXPECTED)
def test_sample_file(name: str, shape: tuple[int, int], pixel: float | None) -> None:
    micrograph = read_micrograph(FORMATS / name)
    assert micrograph.image.shape == shape and micrograph.image.dtype.name == "float32"
    if pixel is None:
        assert micrograph.pixel_size is None
    else:
        assert micrograph.pixel_size == pytest.approx(pixel, rel=1e-6)


def test_tia_header_names_the_data_file() -> None:
    with pytest.raises(DataError, match=r"\.emi.*\.ser"):
        read_micrograph(FORMATS / "64x64_TEM_images_acquire.emi")
