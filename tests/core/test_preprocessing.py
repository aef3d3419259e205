"""Bezier flat field (exact 9-coefficient least squares) and standardisation."""
import numpy as np

from grapheneseg.preprocessing import bezier_background, flat_field, preprocess


def _bernstein(t: np.ndarray) -> np.ndarray:
    return np.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], axis=1)


def test_background_is_the_least_squares_bezier_fit() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((30, 41)) * 5 + np.linspace(1, 4, 41)[None] ** 2
    basis = np.einsum("ia,jb->ijab", _bernstein(np.linspace(0, 1, 30)),
                      _bernstein(np.linspace(0, 1, 41))).reshape(-1, 9)
    coeffs, *_ = np.linalg.lstsq(basis, image.ravel(), rcond=None)
    np.testing.assert_allclose(bezier_background(image).ravel(), basis @ coeffs, rtol=1e-10)


def test_flat_field_removes_a_quadratic_illumination() -> None:
    y, x = np.mgrid[:64, :64] / 63
    illumination = 50 * (1 + 0.5 * x - 0.3 * y**2 + 0.2 * x * y)
    corrected = flat_field(illumination)
    np.testing.assert_allclose(corrected, 1.0, atol=1e-4)


def test_preprocess_is_standardised_float32() -> None:
    image = np.random.default_rng(0).random((64, 64)) * 200
    out = preprocess(image)
    assert out.dtype == np.float32
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-5


def test_zeros_and_tiny_values_stay_finite() -> None:
    assert np.all(preprocess(np.zeros((16, 16))) == 0)
    tiny = np.zeros((32, 32))
    tiny[5, 5] = 1e-30
    assert np.isfinite(preprocess(tiny)).all()
    mostly_zero = np.zeros((32, 32))
    mostly_zero[:, :4] = 100.0  # background fit goes through ~0 elsewhere
    out = preprocess(mostly_zero)
    assert np.isfinite(out).all() and abs(out.std() - 1) < 1e-4
