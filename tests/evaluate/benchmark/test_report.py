"""Report building blocks on synthetic arms: Table 1, figures, HTML with every figure embedded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluate.benchmark.report import (Arm, error_overlay, plot_data_efficiency, plot_error_examples, plot_per_image,
                             table1, write_report)


def _arm(name: str, tp: int, seed: int) -> Arm:
    rng = np.random.default_rng(seed)
    counts = {f"img{i}": [tp + int(rng.integers(0, 5)), 10, 10, 1000] for i in range(6)}
    per_fold = []
    for fold in range(3):
        names = [f"img{2 * fold}", f"img{2 * fold + 1}"]
        from grapheneseg.metrics import pooled

        per_fold.append({"repeat": 0, "fold": fold, **pooled(np.array(counts[n]) for n in names)})
    return Arm(name, per_fold, counts, source=f"{name}.json")


def test_table1_difference_to_bragg() -> None:
    rows = table1([_arm("Bragg filter", 40, 0), _arm("U-Net real-only", 80, 1)])
    bragg, unet = rows
    assert bragg["jaccard_vs_bragg_pct"] == pytest.approx(0.0)
    assert unet["jaccard"] > bragg["jaccard"]
    assert unet["jaccard_vs_bragg_pct"] == pytest.approx(100 * (unet["jaccard"] / bragg["jaccard"] - 1))
    assert unet["folds"] == 3 and unet["jaccard_std"] >= 0


def test_error_overlay_colours() -> None:
    pred = np.array([[1, 1], [0, 0]], bool)
    truth = np.array([[1, 0], [1, 0]], bool)
    rgb = error_overlay(pred, truth)
    assert rgb[0, 0].tolist() == [255, 255, 255]  # TP white
    assert rgb[0, 1].tolist()[0] > 200 and rgb[0, 1].tolist()[2] < 100  # FP red
    assert rgb[1, 0].tolist()[2] > 200  # FN blue
    assert rgb[1, 1].tolist() == [0, 0, 0]  # TN black


def test_report_files_embed_every_figure(tmp_path: Path) -> None:
    arms = [_arm("Bragg filter", 40, 0), _arm("U-Net real-only", 80, 1)]
    image = np.random.default_rng(0).random((32, 32))
    truth = image > 0.6
    figures = {
        "Per-image Jaccard": plot_per_image(arms, tmp_path / "per_image.png"),
        "Data efficiency": plot_data_efficiency({"real-only": {5: 0.5, 10: 0.6}, "fine-tuned": {5: 0.7, 10: 0.75}},
                                                tmp_path / "curve.png", n_all=84),
        "Errors": plot_error_examples([("best", image, {"truth": truth, "U-Net": image > 0.5})],
                                      tmp_path / "errors.png"),
    }
    out = write_report(tmp_path / "report", arms, figures, {"command": "evaluate report --budget quick"},
                       curves={"real-only": {5: 0.5}})
    page = out["html"].read_text()
    assert page.count("data:image/png;base64,") == len(figures)
    assert "Bragg filter" in page and "U-Net real-only" in page and "evaluate report --budget quick" in page
    metrics = json.loads(out["metrics"].read_text())
    assert {r["arm"] for r in metrics["table1"]} == {"Bragg filter", "U-Net real-only"}
    assert set(metrics["per_image_jaccard"]["Bragg filter"]) == {f"img{i}" for i in range(6)}
    assert "| Bragg filter | 3 |" in out["md"].read_text()


def test_the_structure_panel_draws_each_micrograph_over_its_map_in_the_papers_colours(tmp_path):
    import numpy as np
    from PIL import Image

    from evaluate.benchmark.report import plot_structure_panel

    classes = np.zeros((32, 32), np.uint8)
    classes[:, 10:12], classes[:8, :8], classes[20:, 20:] = 3, 1, 2
    path = plot_structure_panel([("a", np.random.default_rng(0).normal(size=(32, 32)), classes)] * 2, tmp_path / "p.png")
    rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    for colour in ((230, 20, 20), (40, 80, 255), (40, 200, 40)):  # boundary, contamination, vacuum
        assert (np.abs(rgb.astype(int) - colour).sum(axis=1) < 10).any(), colour
