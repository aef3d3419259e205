"""The registration ambiguity behind the atom network's failures (benchmarks/bench_atoms.py): a
half-lattice translation of graphene flips the sign of two of its three {100} reflection pairs, so
a weak-phase image whose {100} CTF signs are mixed equals the translated sheet's image under one
sign; evaluate.analysis.registration.ring_signs tells the two CTF classes apart, simulate.report.ctf_100_table
counts them per defocus bin."""
from __future__ import annotations

import numpy as np
import pytest

from grapheneseg.config import load_config
from evaluate.analysis.registration import ring_signs
from simulate.report import ctf_100_table

PIXEL, SIZE = 0.4, 96  # A/px, px


def lattice(shift: tuple[float, float] = (0.0, 0.0), theta: float = 0.3
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Graphene atoms (row, col) px covering the image, translated by shift[0] a1 + shift[1] a2;
    the lattice vectors (2, 2); and the three {100} reciprocal vectors (cycles/px, summing to 0)."""
    a = 2.46 / PIXEL
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    a1, a2 = rot @ np.array([a, 0.0]), rot @ np.array([a / 2, a * np.sqrt(3) / 2])
    n = int(SIZE / a) + 4
    pts = np.array([i * a1 + j * a2 + b for i in range(-2 * n, 2 * n) for j in range(-2 * n, 2 * n)
                    for b in (np.zeros(2), (a1 + a2) / 3)]) + shift[0] * a1 + shift[1] * a2
    pts = pts[(pts.min(1) > -3) & (pts.max(1) < SIZE + 3)]
    b1, b2 = np.linalg.inv(np.stack([a1, a2])).T  # a_i . b_j = delta_ij
    return pts, np.stack([a1, a2]), np.stack([b1, b2, -b1 - b2])


def weak_phase_image(atoms: np.ndarray, g: np.ndarray, ctf: tuple[float, float, float]) -> np.ndarray:
    """1 + 0.1 sum_i c_i Re[V(g_i) / |V(g_i)| exp(2 pi i g_i . r)]: the {100} part of a weak-phase
    image with a real CTF c_i at each reflection pair (V: the atoms' structure factor)."""
    r = np.stack(np.mgrid[:SIZE, :SIZE], -1).astype(float)
    image = np.ones((SIZE, SIZE))
    for gi, c in zip(g, ctf):
        v = np.exp(-2j * np.pi * atoms @ gi).sum()
        image += 0.1 * c * np.real(v / abs(v) * np.exp(2j * np.pi * r @ gi))
    return image


HALF_SHIFTS = ((0.5, 0.0), (0.0, 0.5), (0.5, 0.5))  # the three half-lattice translations


@pytest.mark.parametrize("shift", HALF_SHIFTS)
def test_half_lattice_translation_flips_two_of_three_pairs(shift) -> None:
    atoms, a, g = lattice()
    assert np.isclose(np.linalg.norm(g, axis=1) / PIXEL, 1 / 2.13, rtol=0.01).all()
    flips = np.exp(-2j * np.pi * g @ (np.array(shift) @ a))
    assert np.allclose(flips.imag, 0, atol=1e-9) and sorted(np.round(flips.real)) == [-1, -1, 1]
    ctf = np.array([0.9, 0.4, -0.7])  # mixed signs
    moved, _, _ = lattice(shift)
    same = weak_phase_image(atoms, g, ctf) - weak_phase_image(moved, g, ctf * flips.real)
    other = weak_phase_image(atoms, g, ctf) - weak_phase_image(moved, g, ctf)
    # equal up to the finite sheet's edge (contrast 0.2); the unflipped CTF does not reproduce it
    assert np.abs(same).max() < 0.002 and np.abs(other).max() > 0.1


@pytest.mark.parametrize("ctf, expected", [((1.0, 1.0, 1.0), "uniform"), ((-0.5, -1.0, -0.7), "uniform"),
                                           ((1.0, 1.0, -1.0), "mixed"), ((-1.0, 0.6, 0.8), "mixed")])
def test_ring_signs_reads_the_ctf_class(ctf, expected) -> None:
    atoms, _, g = lattice()
    assert ring_signs(weak_phase_image(atoms, g, ctf), atoms, PIXEL) == expected


def test_mixed_image_reads_as_uniform_against_one_translated_sheet() -> None:
    atoms, a, g = lattice()
    ctf = np.array([1.0, 1.0, -1.0])
    image = weak_phase_image(atoms, g, ctf)
    assert ring_signs(image, atoms, PIXEL) == "mixed"
    reads = [ring_signs(image, lattice(shift)[0], PIXEL) for shift in HALF_SHIFTS]
    assert sorted(reads) == ["mixed", "mixed", "uniform"]  # exactly one translation explains it with one sign


def test_ctf_100_table_mixed_share_needs_astigmatism() -> None:
    none = ctf_100_table(load_config("simulate", ["optics.astigmatism=[0.0,0.0]"]), draws=600)
    some = ctf_100_table(load_config("simulate", ["optics.astigmatism=[30.0,40.0]"]), draws=600)
    assert len(none) == 6 and sum(t["draws"] for t in none) == 600
    assert all(t["mixed_share"] == 0.0 for t in none)
    assert max(t["mixed_share"] for t in some) > 0.2
    assert all(0.0 <= t["median_abs_sin_chi"] <= 1.0 for t in some)


def hundred_ring(amplitudes: tuple[float, float, float], pixel: float = 0.4, size: int = 256,
                 theta: float = 0.2, noise: float = 0.3) -> np.ndarray:
    """Cosines at the three {100} reciprocal vectors with the given amplitudes, plus noise."""
    y, x = np.mgrid[:size, :size].astype(np.float64)
    q = pixel / 2.13  # cycles/px
    image = sum(a * np.cos(2 * np.pi * q * (x * np.cos(theta + k * np.pi / 3) + y * np.sin(theta + k * np.pi / 3)))
                for k, a in enumerate(amplitudes))
    return 100 + 10 * (image + np.random.default_rng(0).normal(0, noise, image.shape))


@pytest.mark.parametrize("weak", [1.0, 0.6, 0.3])
def test_reflection_balance_reads_the_weakest_pair(weak: float) -> None:
    from evaluate.analysis.registration import reflection_balance

    assert reflection_balance(hundred_ring((1.0, weak, 1.0)), 0.4) == pytest.approx(weak, abs=0.1)


def test_registration_flag() -> None:
    from evaluate.apply.atoms import registration

    assert registration(hundred_ring((1.0, 1.0, 1.0)), 0.4, 0.7)["registration"] == "ok"
    weak = registration(hundred_ring((1.0, 0.3, 1.0)), 0.4, 0.7)
    assert weak["registration"] == "uncertain" and weak["reflection_balance"] < 0.5
    assert registration(hundred_ring((1.0, 1.0, 1.0)), None, 0.7) == {"reflection_balance": None, "registration": "unknown"}
    flat = 100 + np.random.default_rng(1).normal(0, 1, (256, 256))
    assert registration(flat, 0.4, 0.7)["registration"] == "unknown"  # no {100} spot
