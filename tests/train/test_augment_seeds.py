"""Augmentation draws are independent: each transform decides and draws on its own seed."""
from __future__ import annotations

import numpy as np

from grapheneseg.config import load_config, to_plain
from train.augment import Augmenter


def recorded_augmenter() -> tuple[Augmenter, list[dict[str, object]]]:
    """The default training augmenter with every transform wrapped to record its use (and the
    dihedral element drawn)."""
    augmenter = Augmenter(to_plain(load_config("train"))["augment"], crop=None)
    calls: list[dict[str, object]] = []

    def wrap(transform, key):
        original = transform.apply_with_params

        def apply_with_params(params, *args, **data):
            calls[-1][key] = params.get("group_element", True)
            return original(params, *args, **data)
        transform.apply_with_params = apply_with_params

    for transform in augmenter.intensity.transforms + augmenter.geometric.transforms:
        wrap(transform, type(transform).__name__)
    return augmenter, calls


def test_transforms_are_applied_independently():
    augmenter, calls = recorded_augmenter()
    flat = 1 + 0.2 * np.random.default_rng(0).random((16, 16)).astype(np.float32)
    mask = np.zeros((16, 16), np.uint8)
    for seed in range(240):
        calls.append({})
        augmenter(flat, mask, seed)
    applied = {name: np.array([name in c for c in calls]) for name in
               ("RandomBrightnessContrast", "RandomGamma", "ShotNoise", "GaussNoise", "GaussianBlur")}
    # the configured probabilities hold for each transform ...
    assert 0.4 < applied["RandomGamma"].mean() < 0.6 and 0.15 < applied["GaussianBlur"].mean() < 0.35
    # ... and no two transforms decide together (one shared seed made these pairs identical)
    assert np.mean(applied["RandomBrightnessContrast"] != applied["RandomGamma"]) > 0.3
    assert np.mean(applied["ShotNoise"] != applied["GaussianBlur"]) > 0.2
    # the dihedral element does not follow the intensity draws: every element occurs with and without gamma
    elements = [str(c["D4"]) for c in calls]
    for gamma in (True, False):
        assert len({e for e, g in zip(elements, applied["RandomGamma"]) if g == gamma}) == 8
    # and the stream is still a function of the seed
    first = augmenter(flat, mask, 7)[0]
    assert np.array_equal(first, augmenter(flat, mask, 7)[0]) and not np.array_equal(first, augmenter(flat, mask, 8)[0])
