"""A lab's archive through `evaluate predict`: trees searched recursively with the outputs mirroring
them (two inputs never write one output path), provenance in every row, a rerun that resumes
instead of duplicating, no lock files beside the results; and the one Predictor behind both
`evaluate score` and `evaluate predict`."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import synthetic_micrograph, write_labelled_folder
from evaluate.apply.predictor import Predictor
from evaluate.apply.segment import input_files, output_stems
from evaluate.cli import main
from grapheneseg.config import load_config
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model


def tiny_model(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = {"depth": 2, "features": 4, "batch_norm": False}
    return save_checkpoint(path, build_model(cfg).eval(), architecture(cfg), {"model": cfg}, 1)


def write_png(path: Path, seed: int) -> Path:
    image, _ = synthetic_micrograph(np.random.default_rng(seed), 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_counter_names_in_two_folders_get_two_outputs(tmp_path: Path) -> None:
    a, b = write_png(tmp_path / "in" / "day1" / "0001.png", 0), write_png(tmp_path / "in" / "day2" / "0001.png", 1)
    c = write_png(tmp_path / "in" / "day2" / "0001.tif", 2)
    assert input_files([tmp_path / "in"]) == [a, b, c]  # recursive, sorted by path
    stems = output_stems([a, b, c])
    assert stems[a] == "day1/0001" and len(set(stems.values())) == 3  # 0001.png and 0001.tif kept apart
    assert output_stems(input_files([tmp_path / "in" / "day1", tmp_path / "in" / "day2"]))[a] == "day1/0001"
    assert output_stems([a]) == {a: "0001"}  # one flat folder: plain names, as before


def test_tree_is_mirrored_resumed_and_stamped(tmp_path: Path, capsys) -> None:
    model = tiny_model(tmp_path / "m.ckpt")
    files = [write_png(tmp_path / "in" / day / "img001.png", i) for i, day in enumerate(("day1", "day2", "day2/deep"))]
    out = tmp_path / "out"
    args = ["predict", "--model", str(model), "--input", str(tmp_path / "in"), "--out", str(out), "--quiet",
            "--pixel-size", "0.4"]
    assert main(args) == 0
    masks = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_mask.png"))
    assert masks == ["day1/img001_mask.png", "day2/deep/img001_mask.png", "day2/img001_mask.png"]
    first = rows(out)
    assert len(first) == 3 and {r["outputs"] for r in first} == {"day1/img001", "day2/img001", "day2/deep/img001"}
    assert all(len(r["model_sha256"]) == 64 and len(r["config_sha256"]) == 64 and r["tool_version"] for r in first)
    assert not list(out.rglob("*.lock")) and not list(out.rglob(".*tmp*"))
    # a rerun skips what is done (no duplicate row, nothing rewritten) ...
    stamp = (out / "day1" / "img001_mask.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "3 of 3 micrograph(s) already segmented" in capsys.readouterr().err
    assert len(rows(out)) == 3 and (out / "day1" / "img001_mask.png").stat().st_mtime_ns == stamp
    # ... redoes a changed file and, with --force, everything
    write_png(files[0], 7)
    assert main(args) == 0
    assert len(rows(out)) == 3 and (out / "day1" / "img001_mask.png").stat().st_mtime_ns != stamp
    capsys.readouterr()
    assert main(args + ["--force"]) == 0 and "already segmented" not in capsys.readouterr().err
    # another model is another provenance: nothing is skipped
    assert main(args[:2] + [str(tiny_model(tmp_path / "other.ckpt", 1))] + args[3:]) == 0
    assert len(rows(out)) == 3 and len({r["model_sha256"] for r in rows(out)}) == 1
    assert rows(out)[0]["model_sha256"] != first[0]["model_sha256"]


def test_score_and_predict_come_from_one_path(tmp_path: Path) -> None:
    folder = write_labelled_folder(tmp_path / "real", n=3, size=64)
    predictor = Predictor(tiny_model(tmp_path / "m.ckpt"), load_config("evaluate").apply, "cpu")
    scored = predictor.score(folder)
    files = sorted(p for p in folder.glob("*.png") if not p.stem.endswith("_LABEL"))
    done, skipped = predictor.segment_files(files, progress=False)
    assert not skipped
    for seg in done:
        label = np.asarray(Image.open(seg.micrograph.path.with_name(f"{seg.micrograph.path.stem}_LABEL.png"))) > 0
        tp = int((seg.mask & label).sum())
        assert scored["counts"][seg.micrograph.path.stem][0] == tp
        assert scored["scales"][seg.micrograph.path.stem] == seg.scale.text()


def test_debug_shows_the_traceback(tmp_path: Path, capsys) -> None:
    args = ["predict", "--model", str(tmp_path / "missing.ckpt"), "--input", str(tmp_path), "--out", str(tmp_path)]
    assert main(args) == 1 and "Traceback" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="missing.ckpt"):
        main(["--debug", *args])
    with pytest.raises(ValueError, match="missing.ckpt"):
        main([*args, "--debug"])


def test_api_cache_follows_the_checkpoint_bytes(tmp_path: Path) -> None:
    from evaluate import api

    path = tiny_model(tmp_path / "m.ckpt", 0)
    first = api.predictor(path, device="cpu")
    assert api.predictor(path, device="cpu").models is first.models  # loaded once
    tiny_model(path, 1)  # overwritten in place
    assert api.predictor(path, device="cpu").models is not first.models


@pytest.mark.slow
def test_a_cluster_writes_the_same_bytes(tmp_path: Path) -> None:
    """`evaluate predict --scheduler` on a dask.distributed LocalCluster (2 single-threaded
    workers): every output file equal byte for byte to a local run's, the same rows."""
    distributed = pytest.importorskip("distributed")
    model = tiny_model(tmp_path / "m.ckpt")
    for i in range(20):  # two chunks of 16 and 4: both workers busy
        write_png(tmp_path / "in" / f"day{i % 3}" / f"{i:04d}.png", i)
    args = ["predict", "--model", str(model), "--input", str(tmp_path / "in"), "--quiet", "--pixel-size", "0.4"]
    structure = ["structure", *args[1:], "--format", "both"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(structure + ["--out", str(tmp_path / "local_structure")]) == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        assert main(args + ["--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address]) == 0
        assert main(structure + ["--out", str(tmp_path / "dask_structure"), "--scheduler",
                                 cluster.scheduler_address]) == 0
    maps = sorted(p.relative_to(tmp_path / "local_structure") for p in (tmp_path / "local_structure").rglob("*.tif"))
    assert len(maps) == 60 and all((tmp_path / "local_structure" / p).read_bytes()
                                   == (tmp_path / "dask_structure" / p).read_bytes() for p in maps)
    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    assert len(local) == 40 and local == sorted(p.relative_to(tmp_path / "dask") for p in (tmp_path / "dask").rglob("*.png"))
    assert all((tmp_path / "local" / p).read_bytes() == (tmp_path / "dask" / p).read_bytes() for p in local)
    strip = lambda table: [{k: v for k, v in r.items() if k != "seconds"} for r in table]  # noqa: E731
    assert strip(rows(tmp_path / "local")) == strip(rows(tmp_path / "dask"))
