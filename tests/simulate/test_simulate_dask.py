"""The simulator on a dask.distributed LocalCluster (loopback) gives the same file as local workers."""
from __future__ import annotations

import dask
import pytest

from grapheneseg.config import load_config
from simulate import driver
from tests.conftest import TINY_GRID

distributed = pytest.importorskip("distributed")

TINY = [*TINY_GRID, "variants_per_structure=2", "n=4"]


@pytest.mark.slow
def test_local_cluster_matches_local_processes(tmp_path):
    local = tmp_path / "local.h5"
    driver.generate(load_config("simulate", TINY), local, progress=False)
    # the nanny's MALLOC_TRIM_THRESHOLD_ halves abTEM's throughput: leave it unset
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
            remote = tmp_path / "dask.h5"
            stats = driver.generate(load_config("simulate", TINY + [f"scheduler='{cluster.scheduler_address}'"]), remote, progress=False)
    assert stats.images == 4 and stats.structures == 2
    assert remote.read_bytes() == local.read_bytes()
