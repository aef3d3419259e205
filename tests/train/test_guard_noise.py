"""The fine-tuning guard knows noise (train/selection.py): fine-tuning is kept only when the paired
bootstrap interval of its inner-validation gain over the held-out images lies above zero; else the
pretrained model is kept and the run says so with both figures and the interval."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from grapheneseg.stats import paired_pooled_bootstrap
from tests.conftest import TINY_NET, write_labelled_folder
from train.models.checkpoints import read_checkpoint, save_checkpoint
from train.models.unet import architecture, build_model
from train.selection import choose, describe

# 21 held-out 256 px images (as `train finetune --folds 0` on the 105: 1 inner split of 21), each
# with 8,000 contaminated pixels; the pretrained model finds 6,800 of them (and 600 false ones).
N = 21
PRETRAINED = [[6800, 600, 1200, 65536 - 8600]] * N


def tuned(shifts):
    """Fine-tuned counts: `shifts[i]` pixels of image i moved from missed to found (negative: lost)."""
    return [[tp + d, fp, fn - d, tn] for (tp, fp, fn, tn), d in zip(PRETRAINED, shifts)]


def pooled(counts):
    return np.sum(counts, axis=0).tolist()


# a gain of about +0.002 pooled that half the images reverse: noise (issue 34: 0.856 vs 0.855)
NOISY = tuned([310 if i % 2 == 0 else -300 for i in range(N)])
# a gain of about +0.017 found on every image
CLEAR = tuned([150 + (50 if i % 2 else -50) for i in range(N)])


def guard(fine_tuned, n_boot=2000):
    """The guard's choice with one inner split (the held-out images) and a shorter, worse length."""
    worse = tuned([-100] * N)
    curve = {"10": pooled(worse), "20": pooled(fine_tuned)}
    images = ({"10": worse, "20": fine_tuned}, PRETRAINED)
    return choose(curve, 20, pooled(PRETRAINED), [(curve, pooled(PRETRAINED))], images, n_boot=n_boot, seed=1)


def test_a_gain_within_noise_keeps_the_pretrained_model():
    kept = guard(NOISY)
    # the pooled and every-split rules alone fine-tune (a planted guard without the noise check would)
    assert kept["best_trained_jaccard"] > kept["pretrained_jaccard"] and kept["splits_won"] == 1
    assert kept["gain"]["low"] <= 0 < kept["gain"]["high"] and kept["gain"]["n_images"] == N
    assert kept["choice"] == "pretrained" and kept["epochs"] == 0 and kept["reason"] == "noise"
    assert kept["jaccard"] == kept["pretrained_jaccard"]
    assert guard(NOISY, n_boot=0)["choice"] == "fine-tuned"  # select.bootstrap=0: the former rule
    line = describe({**kept, "inner_images": N, "inner_splits": 1})
    best, pre, gain = kept["best_trained_jaccard"], kept["pretrained_jaccard"], kept["gain"]
    assert line.startswith(f"kept the pretrained model: best fine-tuned inner validation J {best:.3f} vs "
                           f"pretrained {pre:.3f}, but the gain {gain['difference']:+.3f} (95 % interval "
                           f"[{gain['low']:+.3f}, {gain['high']:+.3f}] over 21 image(s)) is within noise")
    assert line.endswith("(21 held-out image(s), 1 inner split(s))")


def test_a_gain_beyond_noise_fine_tunes_and_says_by_how_much():
    kept = guard(CLEAR)
    assert kept["choice"] == "fine-tuned" and kept["epochs"] == 20 and kept["reason"] is None
    assert kept["gain"]["low"] > 0 and kept["gain"]["excludes_zero"]
    assert kept["gain"]["difference"] == pytest.approx(kept["best_trained_jaccard"] - kept["pretrained_jaccard"])
    line = describe({**kept, "inner_images": N, "inner_splits": 1})
    assert line.startswith("fine-tuned for 20 of 20 epochs: inner validation J ") and "95 % interval [+0.0" in line


def test_fine_tuning_without_per_image_counts_is_refused():
    with pytest.raises(ValueError, match="counts"):
        choose({"20": pooled(CLEAR)}, 20, pooled(PRETRAINED))
    assert choose({"20": pooled(CLEAR)}, 20)["choice"] == "trained"  # real-only: nothing to compare with


def test_the_interval_is_paired_and_pools_counts():
    gain = paired_pooled_bootstrap(CLEAR, PRETRAINED, 1000, 0)
    assert gain["difference"] == pytest.approx(pooled(CLEAR)[0] / (8600 * N) - 6800 / 8600, abs=1e-12)
    assert paired_pooled_bootstrap(PRETRAINED, PRETRAINED, 200)["low"] == 0.0  # same model: no gain, no spread
    with pytest.raises(ValueError, match="same images"):
        paired_pooled_bootstrap(CLEAR[:3], PRETRAINED, 10)


def test_the_cli_keeps_the_pretrained_model_on_a_noisy_gain(tmp_path, monkeypatch, capsys):
    """`train finetune --folds 0` whose inner validation gains within noise: the pretrained weights
    are saved unchanged, and the message gives both figures and the interval."""
    import train.crossval
    from train.cli import main

    real = write_labelled_folder(tmp_path / "real", n=4)
    arch = architecture({"depth": 2, "features": 4, "batch_norm": True})
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.ckpt", build_model(arch), arch, {}, epoch=0)
    names = [f"held{i:02d}" for i in range(N)]
    run = {"train": [], "held_out": names, "seconds": 0.0, "counts": {"20": pooled(NOISY)},
           "image_counts": {"20": NOISY}, "pretrained": pooled(PRETRAINED), "pretrained_images": PRETRAINED}
    monkeypatch.setattr(train.crossval, "_inner_runs", lambda *args, **kwargs: [run])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["finetune", "--pretrained", str(start), "--real", str(real), "--folds", "0", "--out",
                     str(tmp_path / "ft.ckpt"), "--json", *TINY_NET, "model.batch_norm=true", "threads=1",
                     "finetune.epochs=20"])
    out = capsys.readouterr().out
    assert code == 0 and "is within noise: its interval includes zero (21 held-out image(s), 1 inner split(s))" in out
    assert "best fine-tuned inner validation J 0.793 vs pretrained 0.791" in out
    selection = json.loads(out.strip().splitlines()[-1])["selection"]
    assert selection["choice"] == "pretrained" and selection["reason"] == "noise"
    assert selection["gain"]["low"] <= 0 < selection["gain"]["high"]
    saved, pre = read_checkpoint(tmp_path / "ft.ckpt"), read_checkpoint(start)
    assert all(torch.equal(saved["state_dict"][k], pre["state_dict"][k]) for k in pre["state_dict"])
    assert saved["selection"]["reason"] == "noise"
