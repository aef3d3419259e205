"""The paper's preprocessing: divide by a degree-2 Bezier flat-field fit, then standardise.

Sadre et al. (2021): the illumination is modelled by a least-squares 2x2 Bezier surface (Bernstein
polynomials of degree 2 in u and v, 9 coefficients); dividing by it gives mean 1; subtracting the
mean and dividing by the standard deviation gives the network input.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _bezier_solver(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Basis (H*W, 9) and its pseudo-inverse (9, H*W) for images of `shape` (cached)."""
    def bernstein(n: int) -> np.ndarray:
        t = np.linspace(0.0, 1.0, n)
        return np.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], axis=1)

    bu, bv = bernstein(shape[0]), bernstein(shape[1])
    basis = np.einsum("ia,jb->ijab", bu, bv).reshape(shape[0] * shape[1], 9)
    return basis, np.linalg.pinv(basis)


def bezier_background(image: np.ndarray) -> np.ndarray:
    """Least-squares degree-2 Bezier surface fitted to `image` (same shape)."""
    basis, pinv = _bezier_solver(tuple(image.shape))
    flat = image.reshape(-1).astype(np.float64)
    return (basis @ (pinv @ flat)).reshape(image.shape)


def flat_field(image: np.ndarray) -> np.ndarray:
    """Image divided by its Bezier background (mean ~1).

    Safe for zeros and tiny values: the surface is floored at 1e-3 of the image's mean, and an
    image whose mean is not positive (no intensity to normalise) is returned unchanged.
    """
    image = np.asarray(image, dtype=np.float64)
    mean = image.mean()
    if not mean > 0:
        return image
    surface = np.maximum(bezier_background(image), 1e-3 * mean)
    return image / surface


def standardise(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation; a constant image becomes all zeros."""
    image = np.asarray(image, dtype=np.float64)
    std = image.std()
    centred = image - image.mean()
    return centred / std if std > 1e-12 * max(1.0, abs(image.mean())) else np.zeros_like(centred)


def preprocess(image: np.ndarray) -> np.ndarray:
    """Flat-field correction then standardisation, as float32 (the networks' input)."""
    return standardise(flat_field(image)).astype(np.float32)
