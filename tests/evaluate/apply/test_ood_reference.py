"""The OOD reference ranges come from the packaged file that `bench_uncertainty.py --reference
--write` writes, and that file from the measurements: nothing copied by hand."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from evaluate.apply.ood import (MARGIN, REFERENCE_FILE, measures, packaged_reference, reference_from, summarise,
                                write_reference)

REAL = Path(os.environ.get("GRAPHENESEG_REAL_DIR", "data/real"))


def test_the_ranges_are_the_packaged_summaries_widened():
    record = json.loads(REFERENCE_FILE.read_text())
    assert record["command"].startswith("python benchmarks/bench_uncertainty.py --reference")
    assert set(record["sources"]) == {"real", "simulated"} and record["sources"]["simulated"]["n"] == 5000
    ranges = packaged_reference()
    assert ranges == reference_from(record["sources"], MARGIN)
    assert ranges["noise"][0] == pytest.approx(min(s["noise"][0] for s in record["sources"].values()) / MARGIN)
    assert all(list(ranges[m]) == pytest.approx(record["ranges"][m]) for m in ranges)


def test_a_reference_file_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    images = [100 + rng.normal(0, s, (64, 64)) for s in (1.0, 3.0, 9.0)]
    path = write_reference(tmp_path / "ref.json", {"a": summarise([measures(im) for im in images])}, "cmd")
    ranges = packaged_reference(path)
    noise = [measures(im)["noise"] for im in images]
    assert ranges["noise"] == pytest.approx((min(noise) / MARGIN, max(noise) * MARGIN))


@pytest.mark.skipif(not REAL.is_dir(), reason="the public labelled micrographs are not here")
def test_the_packaged_real_summary_is_what_the_105_measure():
    from grapheneseg.micrographs import load_labelled

    data = load_labelled(REAL)
    stored = json.loads(REFERENCE_FILE.read_text())["sources"]["real"]
    fresh = summarise([measures(im) for im in data.images])
    assert fresh["n"] == stored["n"] and fresh["no_lattice"] == stored["no_lattice"]
    for m in ("noise", "contrast"):
        assert fresh[m] == pytest.approx(stored[m], rel=1e-5), m
