"""The installed (non-editable) wheel carries every config YAML, every packaged model with its card,
and every Python file of the core and the three stage packages (their subpackages included)."""
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
    sources = {str(p.relative_to(REPO)) for package in ("grapheneseg", "simulate", "train", "evaluate")
               for p in (REPO / package).rglob("*.py")}
    assert "evaluate/apply/segment.py" in sources and sources <= names, f"missing from wheel: {sorted(sources - names)}"
    models = {f"grapheneseg/models/{p.name}" for p in (REPO / "grapheneseg" / "models").iterdir()
              if p.suffix in (".ckpt", ".md", ".json")}
    assert {"grapheneseg/models/sim_default.ckpt", "grapheneseg/models/atoms_default.ckpt",
            "grapheneseg/models/atoms_default.md", "grapheneseg/models/ood_reference.json"} <= models <= names, f"missing from wheel: {sorted(models - names)}"
