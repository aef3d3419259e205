"""A tiny `evaluate report --sim FILE.h5`: pretraining here first, then the four arms, the
simulated contact sheet and the `simulate compare` statistics in the report."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from evaluate.apply.predictor import Predictor
from evaluate.cli import main
from grapheneseg.config import load_config
from tests.conftest import write_labelled_folder
from tests.evaluate.benchmark.test_comparison import TINY
from tests.train.test_pretrain import write_sim

PRETRAIN = ["pretrain.model.depth=2", "pretrain.model.features=4", "pretrain.model.batch_norm=false",
            "pretrain.loop.epochs=1", "pretrain.loop.samples_per_epoch=8", "pretrain.loop.batch_size=4",
            "pretrain.loop.crop=32", "pretrain.threads=1"]


@pytest.mark.slow
def test_tiny_report_pretrains_on_the_simulation(tmp_path: Path, capsys) -> None:
    real = write_labelled_folder(tmp_path / "real", n=6)
    sim = write_sim(tmp_path / "sim.h5")
    out = tmp_path / "report"
    args = ["report", "--real", str(real), "--sim", str(sim), "--out", str(out), "--quiet", *TINY, *PRETRAIN]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    provenance = metrics["provenance"]
    assert provenance["runs"]["pretraining"]["data_sha256"] == hashlib.sha256(sim.read_bytes()).hexdigest()
    ckpt = Path(provenance["sim_checkpoint"]["path"])
    assert ckpt.parent.parent == out / "arms" and ckpt.parent.name.startswith("pretrain-")
    # the sim-only arm is the pretrained checkpoint scored through the Predictor on every fold's test images
    assert metrics["sources"]["U-Net sim-only"] == str(ckpt)
    scored = Predictor(ckpt, load_config("evaluate").apply, "cpu").score(real)
    assert metrics["pooled_all_folds"]["U-Net sim-only"] == pytest.approx(scored["pooled"])
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6  # 4 figures (structure panel included) + contact sheet + compare
    compared = json.loads((out / "sim_vs_real" / "compare.json").read_text())
    assert compared["n_sim"] == 12 and compared["n_real"] == 6
    assert (out / "sim_sheet.png").stat().st_size > 10_000

    # a second run reuses the pretrained checkpoint (and every arm): nothing is trained again
    import train.crossval
    import train.pretrain

    def refuse(*a, **k):
        raise AssertionError("trained again")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.pretrain, "fit", refuse)
        patch.setattr(train.crossval, "fit", refuse)
        assert main(args) == 0
