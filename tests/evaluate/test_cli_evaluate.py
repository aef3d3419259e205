"""The installed `evaluate` command: our package, the CLI contract, JSON output and errors."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluate.cli import main
from tests.conftest import ROOT

REPO = ROOT


@pytest.mark.parametrize("command", ["simulate", "train", "evaluate"])
def test_console_scripts_import_this_project(command: str, tmp_path: Path) -> None:
    """`evaluate` etc. must resolve to this repository's packages, not e.g. HuggingFace's evaluate."""
    script = shutil.which(command, path=os.path.dirname(sys.executable)) or shutil.which(command)
    assert script, f"console script {command!r} is not installed"
    code = f"import {command}, sys; print({command}.__file__)"
    # run from an unrelated folder so the working directory cannot shadow anything
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == REPO / command / "__init__.py"
    text = Path(script).read_text()
    assert f"from {command}.cli import main" in text
    help_out = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert help_out.returncode == 0 and f"usage: {command}" in help_out.stdout


def test_bragg_cv_writes_results_splits_and_config(real_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cv"
    rc = main(["bragg", "--real", str(real_dir), "--folds", "3", "--repeats", "2", "--out", str(out),
               "--json", "--quiet", "bragg.fit.sigma_grid=[0.01]", "bragg.fit.g_thresh_grid=[2.0,4.0]",
               "bragg.pad=8"])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"accuracy", "balanced_accuracy", "jaccard", "f1", "precision", "recall"}
    assert last["jaccard"] > 0.5
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits) == 6
    assert "pad: 8" in (out / "config.yaml").read_text()
    result = json.loads((out / "bragg_cv.json").read_text())
    assert len(result["splits"]) == 6 and result["folds"] == 3


def test_fit_then_score_json_last_line(real_dir: Path, tmp_path: Path, capsys) -> None:
    params = tmp_path / "bragg.json"
    assert main(["bragg-fit", "--real", str(real_dir), "--out", str(params), "--quiet",
                 "bragg.fit.sigma_grid=[0.01]", "bragg.fit.g_thresh_grid=[2.0]"]) == 0
    assert (tmp_path / "bragg.config.yaml").exists()
    capsys.readouterr()
    assert main(["score", "--method", "bragg", "--params", str(params), "--test", str(real_dir), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.5 < metrics["jaccard"] <= 1.0


def test_errors_are_clear_and_nonzero(real_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["score", "--method", "bragg", "--test", str(tmp_path / "missing")]) == 1
    assert "missing: not a folder" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["score", "--method", "bragg", "--params", str(bad), "--test", str(real_dir)]) == 1
    assert "bad.json: not a Bragg parameter file" in capsys.readouterr().err
    assert main(["bragg", "--real", str(real_dir), "no_such_key=1"]) == 1
    assert "no_such_key" in capsys.readouterr().err
    assert main(["bragg", "--real", str(real_dir), "--folds", "50"]) == 1
    assert "folds" in capsys.readouterr().err


def test_real_dir_from_environment(real_dir: Path, monkeypatch) -> None:
    from grapheneseg.config import default_real_dir, load_config, real_dir as configured
    monkeypatch.setenv("GRAPHENESEG_REAL_DIR", str(real_dir))
    assert default_real_dir() == real_dir
    assert configured(load_config("evaluate")) == real_dir
    assert configured(load_config("evaluate", ["data.real_dir=/elsewhere"])) == Path("/elsewhere")


def test_flag_paths_with_spaces_and_equals(real_dir: Path, tmp_path: Path, capsys) -> None:
    odd = tmp_path / "my data=v2"
    real_dir.rename(odd)
    assert main(["score", "--method", "bragg", "--test", str(odd), "--json"]) == 0
    assert main(["bragg-fit", "--real", str(odd), "--out", str(tmp_path / "p.json"), "--quiet",
                 "bragg.fit.sigma_grid=[0.01]", "bragg.fit.g_thresh_grid=[2.0]"]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["real_dir"] == str(odd)
