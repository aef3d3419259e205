"""napari sample data: a small simulated graphene micrograph, made on the spot (a few seconds),
with its true contamination mask."""
from __future__ import annotations

from ..apply.scale import Scale, ScaleSource
from .layers import image_kwargs

SAMPLE_PX = 128
SAMPLE_SEED = 7


def simulated_micrograph(seed: int = SAMPLE_SEED, size: int = SAMPLE_PX) -> list[tuple]:
    """[the micrograph (image layer at its simulated pixel size), its true contamination (labels)],
    from the project's simulator (simulate.pipeline, the `grid=tiny` physics at `size` px)."""
    from grapheneseg.config import load_config
    from simulate.pipeline import simulate_structure

    cfg = load_config("simulate", ["grid=tiny", f"grid.image_px={int(size)}"])
    (sample,), _ = simulate_structure(cfg, int(seed), 0, [0])
    pixel_size = float(sample.meta["pixel_size"])
    image = image_kwargs(f"simulated graphene (seed {seed})", Scale(pixel_size, ScaleSource.SIMULATED))
    truth = {key: image[key] for key in ("scale", "units")}
    truth.update(name="true contamination", metadata=dict(image["metadata"]), opacity=0.4)
    return [(sample.image, image, "image"), (sample.mask.astype("uint8"), truth, "labels")]
