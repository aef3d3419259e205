"""Throughput of a resumed pretraining: the samples of the epochs before the interruption count,
as their seconds do."""
from __future__ import annotations

from pathlib import Path

import pytest

import train.loops
from grapheneseg.config import load_config
from tests.train.test_pretrain import TINY_LOOP, TINY_MODEL, write_sim
from train.pretrain import pretrain


def test_resumed_run_counts_every_epoch(tmp_path: Path, monkeypatch) -> None:
    sim = write_sim(tmp_path / "sim.h5")
    cfg = load_config("pretrain", TINY_MODEL + TINY_LOOP)  # 2 epochs x 8 samples
    save = train.loops.save_checkpoint

    def interrupt_after_first(path, model, arch, config, epoch, *args, **kwargs):
        save(path, model, arch, config, epoch, *args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(train.loops, "save_checkpoint", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, [sim], tmp_path / "sim.ckpt")
    monkeypatch.setattr(train.loops, "save_checkpoint", save)
    summary = pretrain(cfg, [sim], tmp_path / "sim.ckpt", resume=True)
    ips, seconds = summary["images_per_second"], summary["seconds"]  # seconds of both epochs, rounded to 0.1
    assert 16 / (seconds + 0.05) - 0.05 <= ips <= 16 / max(seconds - 0.05, 1e-9) + 0.05
