"""Data-parallel pretraining (torchrun, 2 CPU processes, gloo): the ranks see disjoint shards of
each epoch, end with identical weights, and equal one process trained on the whole batch."""
from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from grapheneseg.config import load_config
from tests.conftest import TINY_NET
from tests.train.test_pretrain import write_sim
from train.models.checkpoints import read_checkpoint
from train.loops import epoch_order
from train.models.unet import build_model
from train.pretrain import pretrain

# no batch norm and no Dice term: then the mean of two per-rank losses over 4 samples is the
# loss over all 8, and 2 ranks x batch 4 must take the same steps as 1 process x batch 8
SETUP = [*TINY_NET, "model.batch_norm=false", "loop.dice_weight=0", "loop.crop=32", "loop.epochs=2",
         "loop.samples_per_epoch=16", "loop.min_steps=0", "loop.val_every=1", "loop.checkpoint_every=1",
         "sim.val_fraction=0", "threads=1", "device=cpu"]

PROBE = '''
import os, sys, torch
import train.datasets, train.pretrain
out, rank = sys.argv[1], os.environ["RANK"]
log = open(os.path.join(out, f"rank{rank}.log"), "w")
getitem = train.datasets.PairDataset.__getitem__
def logged(self, index):
    if self.augmenter.enabled:  # training samples only
        log.write(f"{self.epoch} {index}\\n"); log.flush()
    return getitem(self, index)
train.datasets.PairDataset.__getitem__ = logged
fit = train.pretrain.fit
def saving_fit(*args, **kwargs):
    model, result = fit(*args, **kwargs)
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    return model, result
train.pretrain.fit = saving_fit
from train.cli import main
sys.exit(main(sys.argv[2:]))
'''


@pytest.mark.slow
def test_two_ranks_split_each_epoch_and_match_one_process(tmp_path: Path) -> None:
    sim = write_sim(tmp_path / "sim.h5")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = tmp_path / "ddp.ckpt"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(probe),
         str(tmp_path), "pretrain", "--data", str(sim), "--out", str(out), "--json",
         *SETUP, "loop.batch_size=4"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["train_images"] == 12
    assert summary["samples"] == 2 * 16  # 2 epochs of 16 samples, over both ranks

    seen = {r: np.loadtxt(tmp_path / f"rank{r}.log", dtype=int).reshape(-1, 2) for r in (0, 1)}
    for epoch in (0, 1):
        order = epoch_order(12, 12345, epoch, 16)  # 16 samples of a stream of permutations of 12
        for rank in (0, 1):  # each rank reads every second sample of the epoch, in order
            assert seen[rank][seen[rank][:, 0] == epoch, 1].tolist() == order[rank::2]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    saved = read_checkpoint(out)["state_dict"]
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved)

    single = tmp_path / "single.ckpt"
    pretrain(load_config("pretrain", [*SETUP, "loop.batch_size=8"]), [sim], single)
    reference = read_checkpoint(single)["state_dict"]
    for key, value in reference.items():
        assert torch.allclose(saved[key], value, atol=2e-5), key
    torch.manual_seed(12345)  # as fit() starts: the runs moved away from the same initial weights
    start = build_model({"depth": 2, "features": 4, "batch_norm": False}).state_dict()
    assert not torch.allclose(saved["head.weight"], start["head.weight"], atol=1e-3)
