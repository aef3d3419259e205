"""The installed (non-editable) wheel carries every config YAML, the core and all three stage packages."""
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_configs_and_packages(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("grapheneseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    yamls = {f"grapheneseg_configs/{p.relative_to(REPO / 'configs')}" for p in (REPO / "configs").rglob("*.yaml")}
    assert yamls and yamls <= names, f"missing from wheel: {sorted(yamls - names)}"
    assert "grapheneseg/__init__.py" in names and "grapheneseg/config.py" in names
    assert {"grapheneseg/models/sim_default.ckpt", "grapheneseg/models/sim_default.md"} <= names  # default model
    for package in ("simulate", "train", "evaluate"):
        assert f"{package}/__init__.py" in names and f"{package}/cli.py" in names
