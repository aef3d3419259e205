"""Augmentation of micrograph/mask pairs with albumentations.

Two stages, because the network sees standardised images (grapheneseg.preprocessing) and a brightness
or contrast change is undone by standardisation:

1. Intensity, on the flat-fielded image (linear intensity, mean ~1) rescaled to [0, 1] as
   albumentations expects of float images: brightness/contrast then gamma (non-linear detector
   response; the pair is not undone by standardisation), Poisson-like shot noise (lower dose),
   Gaussian noise (read-out) and Gaussian blur (detector MTF, focus). The image is then
   standardised exactly as at inference (`standardise`), over the whole field of view.
2. Geometric, on the standardised image and the mask together: one of the 8 dihedral symmetries
   of the square (D4: the lattice and the contamination have no preferred orientation) and a
   random crop.

Every sample is drawn from its own seed (run seed, epoch, image index), so the augmented stream
is the same whatever the number of data-loader workers and after a resume. Albumentations'
`set_random_seed` hands one seed to every transform of a pipeline, which would make their
"apply or not" draws identical (brightness always with gamma, noise always with blur) and tie
the dihedral choice to them; `seed_pipeline` gives each transform its own seed instead.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import albumentations as A
import numpy as np

from grapheneseg.preprocessing import standardise


def intensity_transform(cfg: Mapping[str, Any]) -> A.Compose:
    """Intensity augmentations on a [0, 1] image; probabilities and ranges from `cfg`."""
    return A.Compose([
        A.RandomBrightnessContrast(brightness_limit=cfg["brightness"], contrast_limit=cfg["contrast"],
                                   p=cfg["p_brightness_contrast"]),
        A.RandomGamma(gamma_limit=tuple(cfg["gamma"]), p=cfg["p_gamma"]),
        A.ShotNoise(scale_range=tuple(cfg["shot_noise"]), p=cfg["p_shot_noise"]),
        A.GaussNoise(std_range=tuple(cfg["gauss_noise"]), p=cfg["p_gauss_noise"]),
        A.GaussianBlur(sigma_limit=tuple(cfg["blur_sigma"]), blur_limit=0, p=cfg["p_blur"]),
    ])


def geometric_transform(crop: int | None) -> A.Compose:
    """Random dihedral symmetry and (when `crop`) a random crop of side `crop` px."""
    steps: list[Any] = [A.D4(p=1.0)]
    if crop:
        steps.append(A.RandomCrop(crop, crop, pad_if_needed=True, border_mode=4))  # 4 = reflect_101
    return A.Compose(steps)


def seed_pipeline(pipeline: A.Compose, seed: int, stage: int) -> None:
    """Seed `pipeline` and each of its transforms with independent seeds drawn from (seed, stage)."""
    seeds = np.random.SeedSequence([int(seed), int(stage)]).generate_state(len(pipeline.transforms) + 1)
    pipeline.set_random_seed(int(seeds[0]))
    for transform, own in zip(pipeline.transforms, seeds[1:]):
        transform.set_random_seed(int(own))


class Augmenter:
    """Callable (flat-fielded image, mask, seed) -> (standardised float32 image, uint8 mask)."""

    def __init__(self, cfg: Mapping[str, Any], crop: int | None):
        self.enabled = bool(cfg.get("enabled", True))
        self.intensity = intensity_transform(cfg) if self.enabled else None
        self.geometric = geometric_transform(crop) if self.enabled else None
        self.crop = crop

    def __call__(self, flat: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        mask = mask.astype(np.uint8)
        if not self.enabled:
            return standardise(flat).astype(np.float32), mask
        lo, hi = float(flat.min()), float(flat.max())
        unit = ((flat - lo) / max(hi - lo, 1e-12)).astype(np.float32)
        seed_pipeline(self.intensity, seed, 0)
        image = standardise(self.intensity(image=unit)["image"]).astype(np.float32)
        seed_pipeline(self.geometric, seed, 1)
        out = self.geometric(image=image, mask=mask)
        return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])
