"""`evaluate fetch-real` against local archives shaped like GitHub's (no network in tests)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluate.cli import main
from grapheneseg.config import DEFAULT_REAL_DIR, default_real_dir
from grapheneseg.fetch import fetch_real
from grapheneseg.micrographs import DataError, load_labelled

TOP = "graphene-u-net-0123abc"


def _png(shape=(32, 32), value: int | None = None, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    data = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 255, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG")
    return buffer.getvalue()


def _archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": "0123abc"}) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _github_like(tmp_path: Path, **extra: bytes) -> Path:
    files = {f"{TOP}/README.md": b"# graphene-u-net", f"{TOP}/LICENSE.txt": b"BSD-style",
             f"{TOP}/training_images/a.png": _png(seed=1), f"{TOP}/training_images/a_LABEL.png": _png(value=255),
             f"{TOP}/training_images/b.png": _png(seed=2), f"{TOP}/training_images/b_LABEL.png": _png(value=0),
             f"{TOP}/training_images/lonely.png": _png(seed=3),  # no label: not unpacked
             f"{TOP}/training_images/../../escape.png": _png(seed=4),  # never written outside the folder
             f"{TOP}/other/c.png": _png(seed=5), **extra}
    return _archive(tmp_path / "repo.tar.gz", files)


def test_fetch_unpacks_checked_pairs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "data" / "real"
    assert main(["fetch-real", "--archive", str(_github_like(tmp_path)), "--out", str(out), "--quiet"]) == 0
    assert "2 labelled pairs" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["LICENSE.txt", "SOURCE.json", "a.png", "a_LABEL.png",
                                                     "b.png", "b_LABEL.png"]
    data = load_labelled(out)
    assert data.names == ["a", "b"] and data.masks[0].all() and not data.masks[1].any()
    record = json.loads((out / "SOURCE.json").read_text())
    assert record["pairs"] == 2 and record["commit"] == "0123abc" and len(record["archive_sha256"]) == 64
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "data" / "escape.png").exists()
    # a second fetch does not silently replace the folder
    assert main(["fetch-real", "--archive", str(tmp_path / "repo.tar.gz"), "--out", str(out), "--quiet"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert fetch_real(out, tmp_path / "repo.tar.gz", overwrite=True, progress=False)["pairs"] == 2


def test_fetch_rejects_bad_archives(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(_github_like(tmp_path).read_bytes()[:300])
    with pytest.raises(DataError, match=r"cut\.tar\.gz: not a readable"):
        fetch_real(tmp_path / "r1", truncated, progress=False)
    with pytest.raises(DataError, match="no training_images"):
        fetch_real(tmp_path / "r2", _archive(tmp_path / "x.tar.gz", {"x/readme": b"hi"}), progress=False)
    bad = _github_like(tmp_path, **{f"{TOP}/training_images/a_LABEL.png": _png(shape=(16, 16), value=255)})
    with pytest.raises(DataError, match="does not match"):
        fetch_real(tmp_path / "r3", bad, progress=False)
    assert not any(p.name.startswith(("r1", "r2", "r3", ".r")) for p in tmp_path.iterdir())  # nothing half-made


def test_offline_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(OSError, match="cannot download .* Offline"):
        fetch_real(tmp_path / "real", url="http://127.0.0.1:9/repo.tar.gz", progress=False)
    assert not (tmp_path / "real").exists()


def test_default_real_dir_is_data_real(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GRAPHENESEG_REAL_DIR", raising=False)
    assert default_real_dir() == DEFAULT_REAL_DIR == Path("data") / "real"
    monkeypatch.setenv("GRAPHENESEG_REAL_DIR", str(tmp_path))
    assert default_real_dir() == tmp_path  # the environment still wins
