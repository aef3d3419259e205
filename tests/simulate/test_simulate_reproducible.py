"""Image i depends only on (seed, config, i): not on n, the worker count, the process or a resume."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import special, stats

from grapheneseg.config import load_config
from simulate import driver
from simulate.imaging import poisson_counts
from tests.conftest import ROOT, TINY_GRID

TINY = [*TINY_GRID, "variants_per_structure=1", "structure.amorphous.clean_probability=0"]
REPO = ROOT


def tiny_cfg(*extra: str):
    return load_config("simulate", TINY + list(extra))


def arrays(path: Path, n: int | None = None) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][:n] for name in ("images", "masks", "classes", "meta", "atoms")}


def assert_prefix(short: Path, long: Path) -> None:
    a = arrays(short)
    b = arrays(long, len(a["images"]))
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


def test_poisson_counts_are_the_exact_quantiles():
    rng = np.random.default_rng(0)
    mean = np.exp(rng.uniform(np.log(0.3), np.log(3e4), 200_000))
    z = rng.standard_normal(mean.shape)
    expected = stats.poisson.ppf(special.ndtr(z), mean)
    assert np.array_equal(poisson_counts(mean, z), expected)


def test_changing_some_means_changes_only_their_counts():
    """A rejection sampler (numpy's poisson) shifts its stream after one differing mean."""
    rng = np.random.default_rng(1)
    mean = rng.uniform(50, 2000, (64, 64))
    z = rng.standard_normal(mean.shape)
    before = poisson_counts(mean, z)
    changed = mean.copy()
    changed[3, :] = np.nextafter(changed[3, :], np.inf)  # last-bit differences, as from another FFT plan
    changed[10, :] *= 3.0
    after = poisson_counts(changed, z)
    other = np.ones(mean.shape, bool)
    other[[3, 10], :] = False
    assert np.array_equal(before[other], after[other])
    assert not np.array_equal(before[10], after[10])


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> Path:
    """12 structures on two worker processes."""
    out = tmp_path_factory.mktemp("repro") / "long.h5"
    stats = driver.generate(tiny_cfg("n=12", "workers=2"), out, progress=False)
    assert stats.images == 12
    return out


def test_first_images_do_not_depend_on_n_or_workers(long_run, tmp_path):
    short = tmp_path / "short.h5"
    driver.generate(tiny_cfg("n=3"), short, progress=False)  # one worker: this process
    assert_prefix(short, long_run)
    images = arrays(long_run)["images"]
    assert len({im.tobytes() for im in images}) == 12  # not trivially equal


KILL_AFTER = """
import os, signal, sys
from grapheneseg.config import load_config
from simulate import driver
real = driver._results
def killed(*args):
    for k, result in enumerate(real(*args)):
        yield result
        if k == 4:  # the fifth image is being written: die as SIGKILL would, without any cleanup
            os.kill(os.getpid(), signal.SIGKILL)
driver._results = killed
driver.generate(load_config("simulate", {overrides!r}), sys.argv[1], progress=False)
"""


@pytest.mark.slow
def test_resume_in_a_fresh_process_after_sigkill(long_run, tmp_path):
    out = tmp_path / "killed.h5"
    overrides = TINY + ["n=12"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    script = textwrap.dedent(KILL_AFTER.format(overrides=overrides))
    killed = subprocess.run([sys.executable, "-c", script, str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    with h5py.File(out, "r") as f:
        assert 4 <= f["images"].shape[0] < 12
    resumed = subprocess.run([sys.executable, "-m", "simulate.cli", "generate", "--out", str(out), "--resume", "--quiet", *overrides],
                             cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_prefix(out, long_run)
    with h5py.File(out, "r") as f:
        assert f["images"].shape[0] == 12 and f.attrs["complete"]
