"""A lab's whole folder (issue 27): every file gets an answer or a refusal decided before any
computing, no traceback for a user's file, and runs sharing one output folder lose no rows."""
from __future__ import annotations

import csv
import multiprocessing
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from evaluate.apply.predictor import Predictor
from evaluate.apply.scale import LATTICE_LIMIT, Scale, ScaleSource, decide_scale
from evaluate.apply.segment import Refused, input_files, memory_gb, prediction_rows
from evaluate.cli import main
from grapheneseg.config import load_config, save_run_config
from grapheneseg.formats import Micrograph, read_frames, read_micrograph
from grapheneseg.tables import merge_rows
from tests.conftest import FORMATS, TINY_BATCH, TINY_NET
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model

CFG = {"pixel_range": [0.3, 0.6], "target_pixel_size": 0.45, "max_memory_gb": 4.0}


def tiny_model(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = {"depth": 2, "features": 4, "batch_norm": False}
    return save_checkpoint(path, build_model(cfg).eval(), architecture(cfg), {"model": cfg}, 1)


@pytest.fixture(scope="module")
def planner(tmp_path_factory) -> Predictor:
    """A Predictor under CFG (its model records no pixel range, so CFG's holds)."""
    return Predictor(tiny_model(tmp_path_factory.mktemp("planner") / "m.ckpt"), CFG, "cpu")


def network_image(predictor: Predictor, image: Micrograph) -> np.ndarray:
    """The image at the network's scale, its scale decided as `evaluate predict` decides it."""
    return predictor.plan(image, decide_scale(image))


def micrograph(shape=(64, 64), pixel_size=None, frames=1) -> Micrograph:
    image = np.zeros(shape, np.float32)  # untouched pages: a large one costs no memory
    if image.size <= 1 << 16:
        image += np.random.default_rng(0).normal(100, 5, shape).astype(np.float32)
    return Micrograph(Path("m.dm3"), image, pixel_size, frames)


@pytest.mark.parametrize("image, words", [
    (micrograph(pixel_size=1690.0), r"169 nm/px \(file\): an overview image; the graphene lattice"),
    (micrograph(pixel_size=LATTICE_LIMIT * 1.01), r"an overview image"),
    (micrograph((3, 3), pixel_size=0.4), r"3 x 3 px: too small"),
    (micrograph((8192, 8192), pixel_size=1.0), r"18204 x 18204 px at the model's 0.45 \S+, needs about 28\.\d GB "
                                                r"\(> 4 GB, --max-memory\)"),
])
def test_refusals_are_decided_before_computing(monkeypatch, planner, image, words):
    import evaluate.apply.predictor as predictor

    monkeypatch.setattr(predictor, "resample", lambda *a, **k: pytest.fail("resampled before the verdict"))
    with pytest.raises(Refused, match=words):
        network_image(planner, image)


def test_an_image_within_bounds_is_admitted_and_memory_grows_with_the_resampled_size(planner):
    inside = micrograph((64, 64), pixel_size=0.45)
    image = network_image(planner, inside)
    assert image.shape == (64, 64) and decide_scale(inside) == Scale(0.45, ScaleSource.FILE)
    assert memory_gb((512, 512), (2048, 2048)) > memory_gb((512, 512), (512, 512)) > 0.5


def test_a_stack_says_which_frame_is_used(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    path = tmp_path / "stack.png"
    Image.fromarray(frames[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    read = read_micrograph(path)
    assert read.frames == 3 and read.note.startswith("frame 1 of 3 (a stack: the first frame is used")
    assert np.array_equal(read.image, frames[0])
    every = read_frames(path)  # --frames all or mean: each page of the PNG
    assert [m.note for m in every] == ["frame 1 of 3", "frame 2 of 3", "frame 3 of 3"]
    assert all(np.array_equal(m.image, f) for m, f in zip(every, frames))
    assert read_micrograph(tmp_path / "stack.png").note and micrograph().note == ""


def test_a_folder_is_answered_file_by_file(tmp_path):
    """One good PNG, an overview TIFF, a tiny one, a truncated one and a text file: the good one is
    segmented, every other one is listed with its status, the exit code says refused and failed."""
    folder = tmp_path / "lab"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(90, 110, (64, 64)).astype(np.uint8)).save(folder / "good.png")
    tifffile.imwrite(folder / "overview.tif", np.ones((80, 80), np.float32), imagej=True,
                     resolution=(1 / 0.169, 1 / 0.169), metadata={"unit": "micron"})
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes((folder / "good.png").read_bytes()[:60])
    (folder / "notes.png").write_text("not an image")
    model = tiny_model(tmp_path / "m.ckpt")
    cfg = load_config("evaluate").apply
    done, skipped = Predictor(model, cfg, "cpu").segment_files(input_files([folder]), given=0.4, progress=False)
    assert [s.micrograph.path.name for s in done] == ["good.png"]
    status = {Path(p).name: s.status for p, s in skipped.items()}
    assert status == {"overview.tif": "refused", "tiny.png": "refused", "broken.png": "failed",
                      "notes.png": "failed"}
    assert "an overview image" in str(skipped[str(folder / "overview.tif")])
    rows = {Path(r["file"]).name: r for r in prediction_rows(done, skipped)}
    assert rows["good.png"]["status"] == "segmented" and rows["tiny.png"]["note"].endswith("too small (at least 32 px a side)")
    code = main(["predict", "--model", str(model), "--input", str(folder), "--out", str(tmp_path / "out"),
                 "--pixel-size", "0.4", "--device", "cpu", "--quiet"])
    assert code == 1  # failed files
    table = {Path(r["file"]).name: r["status"] for r in csv.DictReader((tmp_path / "out" / "predictions.csv").open())}
    assert table == {"good.png": "segmented", **status}
    for name in ("broken.png", "notes.png"):
        (folder / name).unlink()
    assert main(["predict", "--model", str(model), "--input", str(folder), "--out", str(tmp_path / "out2"),
                 "--pixel-size", "0.4", "--device", "cpu", "--quiet"]) == 3  # refusals only


@pytest.mark.skipif(FORMATS is None, reason="the RosettaSciIO samples are not here")
def test_the_rosettasciio_samples_are_refused_in_a_microscopists_words(planner):
    words = {"test_dm_image_um_unit.dm3": "169 nm/px (file): an overview image",
             "test_loading_image_saved_with_DM.tif": "169 nm/px (file): an overview image",
             "64x64_TEM_images_acquire_1.ser": "6.28 nm/px (file): an overview image",
             "test-1.dm3": "2 x 2 px: too small", "test-1.dm4": "2 x 2 px: too small",
             "example_image.emd": "3 x 3 px: too small", "fei_example_tem_stack.emd": "3 x 3 px: too small"}
    for name, expected in words.items():
        with pytest.raises(Refused) as caught:
            network_image(planner, read_micrograph(FORMATS / name))
        assert expected in str(caught.value), (name, str(caught.value))


def _write_rows(args: tuple[str, int]) -> None:
    table, worker = args
    for i in range(20):
        merge_rows(Path(table), ["file", "value"], [{"file": f"w{worker}_{i}", "value": worker}])


def test_concurrent_writers_lose_no_row(tmp_path):
    table = tmp_path / "predictions.csv"
    merge_rows(table, ["file", "value"], [{"file": "earlier", "value": 0}])
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_write_rows, [(str(table), w) for w in range(4)])
    rows = list(csv.DictReader(table.open()))
    names = [r["file"] for r in rows]
    assert len(names) == len(set(names)) == 81 and "earlier" in names
    merge_rows(table, ["file", "value"], [{"file": "w0_0", "value": 9}])  # a file predicted again: replaced
    again = {r["file"]: r["value"] for r in csv.DictReader(table.open())}
    assert len(again) == 81 and again["w0_0"] == "9"


def test_ranks_are_renumbered_over_every_run(tmp_path):
    table = tmp_path / "ranking.csv"
    columns = ["rank", "file", "graphene_fraction"]
    order = {"order": lambda r: -float(r["graphene_fraction"]), "number": "rank"}
    merge_rows(table, columns, [{"file": "a", "graphene_fraction": 0.5}], **order)
    merge_rows(table, columns, [{"file": "b", "graphene_fraction": 0.9}], **order)
    assert [(r["rank"], r["file"]) for r in csv.DictReader(table.open())] == [("1", "b"), ("2", "a")]


def test_each_run_keeps_its_config(tmp_path):
    cfg = load_config("evaluate")
    first, other = save_run_config(cfg, tmp_path), save_run_config(load_config("evaluate", ["apply.tta=true"]), tmp_path)
    assert first.name == "config.yaml" and other.name.startswith("config-") and first.exists() and other.exists()
    assert first.read_text() != other.read_text()
    # a rerun with a config already there (a resume) writes none and names the one it matches
    assert save_run_config(cfg, tmp_path) == first and save_run_config(load_config("evaluate", ["apply.tta=true"]),
                                                                       tmp_path) == other
    assert len(list(tmp_path.glob("config*.yaml"))) == 2


TINY_TRAIN = [*TINY_NET, *TINY_BATCH, "model.batch_norm=true", "loop.epochs=1", "loop.crops_per_image=1",
              "loop.checkpoint_every=100", "select.enabled=false"]


def test_a_training_folder_is_checked_file_by_file_before_training(tmp_path, capsys):
    """A stack, a tiny image and a label of another size: one error naming all three, no training."""
    from tests.conftest import write_labelled_folder
    from train.cli import main as train_main

    real = write_labelled_folder(tmp_path / "real", n=4)
    frames = [Image.fromarray(np.full((64, 64), v, np.uint8)) for v in (10, 20)]
    frames[0].save(real / "stack.png", save_all=True, append_images=frames[1:])
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(real / "stack_LABEL.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(real / "tiny.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(real / "tiny_LABEL.png")
    Image.fromarray(np.zeros((50, 64), np.uint8)).save(real / "img00_LABEL.png")
    (real / "scan.dm4").write_bytes(b"")  # a micrograph training cannot use: said, not silently ignored
    out = tmp_path / "model.ckpt"
    with pytest.warns(UserWarning, match=r"1 micrograph file\(s\) not used for training.*scan\.dm4"):
        code = train_main(["real", "--real", str(real), "--folds", "0", "--out", str(out), *TINY_TRAIN])
    assert code != 0 and not out.exists() and not (tmp_path / "model.training").exists()
    error = capsys.readouterr().err
    assert "3 broken pairs" in error and "stack.png: a stack of 2 frames" in error
    assert "tiny.png: 16 x 16 px: too small to train on" in error and "img00_LABEL.png: size (64, 50)" in error


def test_the_closing_line_says_how_many_images_trained(tmp_path, capsys):
    from tests.conftest import write_labelled_folder
    from train.cli import main as train_main

    real = write_labelled_folder(tmp_path / "real", n=6)
    out = tmp_path / "model.ckpt"
    assert train_main(["real", "--real", str(real), "--folds", "0", "--n-real", "3", "--out", str(out),
                       *TINY_TRAIN]) == 0
    line = capsys.readouterr().out
    assert f"model trained from scratch on 3 of 6 images (cv.n_real, a seeded subset) of {real}" in line
    assert len(torch.load(out, weights_only=True)["train_images"]) == 3


@pytest.mark.skipif(FORMATS is None, reason="the RosettaSciIO samples are not here")
def test_tiff_masks_carry_the_input_scale(tmp_path):
    """A DM3 micrograph (the sample's data, tiled to a graphene-sized pixel) predicted with
    --format tiff: the mask read back by tifffile has the file's pixel size."""
    from evaluate.apply.tiff import read_tiff_scale
    from rsciio.digitalmicrograph import file_reader
    from rsciio.tiff import file_writer

    signal = file_reader(str(FORMATS / "test_dm_image_um_unit.dm3"))[0]
    image = np.tile(np.asarray(signal["data"], np.float32), (2, 2))[:128, :128] + 100
    axes = [{"name": n, "size": 128, "scale": 0.04, "offset": 0.0, "units": "nm", "navigate": False} for n in "yx"]
    file_writer(str(tmp_path / "scan.tif"), {"data": image, "axes": axes, "metadata": {}, "original_metadata": {}})
    model = tiny_model(tmp_path / "m.ckpt")
    assert main(["predict", "--model", str(model), "--input", str(tmp_path / "scan.tif"), "--out",
                 str(tmp_path / "out"), "--format", "tiff", "--device", "cpu", "--quiet"]) == 0
    mask, size = read_tiff_scale(tmp_path / "out" / "scan_mask.tif")
    assert size == pytest.approx(0.4, rel=1e-4) and mask.shape == (128, 128)
    with tifffile.TiffFile(tmp_path / "out" / "scan_probability.tif") as f:
        assert f.imagej_metadata["unit"] == "nm" and f.pages[0].dtype == np.float32
        x_resolution = f.pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(1 / 0.04, rel=1e-4)  # px per nm
    assert not (tmp_path / "out" / "scan_mask.png").exists()


def test_an_ambiguous_lattice_reading_is_said_not_guessed_silently():
    """The sqrt 3 case of issue 23: a micrograph whose {100} ring is suppressed (a CTF zero) is
    read from its lattice with a warning naming both pixel sizes, and its source says ambiguous."""
    from tests.core.test_lattice import graphene

    image = graphene(0.3, 256, amplitudes=(0.0, 1.0, 0.0), seed=3) + 10
    scale = decide_scale(Micrograph(Path("m.dm3"), image.astype(np.float32), None))
    assert re.match(r"m\.dm3: the graphene lattice reads 0\.5\d\d A/px, but 0\.3\d\d A/px", scale.warning("m.dm3"))
    assert scale.source == "lattice (ambiguous)" and scale.pixel_size == pytest.approx(0.3 * np.sqrt(3), rel=0.03)


def test_a_fiji_tiff_in_nm_is_read_at_its_scale_and_a_tiny_file_has_no_lattice_reading(tmp_path):
    tifffile.imwrite(tmp_path / "fiji.tif", np.ones((64, 64), np.float32), imagej=True, resolution=(25.0, 25.0),
                     metadata={"unit": "nm"})
    tifffile.imwrite(tmp_path / "dpi.tif", np.ones((64, 64), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert read_micrograph(tmp_path / "fiji.tif").pixel_size == pytest.approx(0.4)
    assert read_micrograph(tmp_path / "dpi.tif").pixel_size is None  # dots per inch are not a pixel size
    tiny = decide_scale(micrograph((3, 3)))
    assert tiny == Scale(None, ScaleSource.UNKNOWN) and tiny.reading is None
    assert "no graphene lattice found" in tiny.warning("m.dm3")
