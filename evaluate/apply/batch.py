"""`evaluate predict` over a whole archive: chunks of files, on this machine or on a dask.distributed
cluster, with the same code and so the same bytes.

A `Job` is everything a chunk needs, as plain, picklable values (model paths, the resolved apply
config, device, backend, the output folder and format). `predict_chunk` segments one chunk with the
job's Predictor (built once per process and kept) and writes its images and predictions.csv rows
into the output folder itself, under the folder lock that parallel writers share
(grapheneseg.tables); it returns only a small summary. `run_predict` hands the chunks to
`predict_chunk` here, or, with a scheduler address, to the cluster's workers (as `simulate
generate --scheduler` does), which must see the input and output folders at the same paths (a
shared file system).
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .predictor import Predictor

CHUNK = 16  # files segmented between two writes of predictions.csv (a killed run keeps what it finished)


@dataclass(frozen=True)
class Job:
    """One `evaluate predict` run, as plain values."""

    model: tuple[str, ...]  # checkpoint files or run folders (one ensemble)
    apply: str  # the resolved apply config, as JSON
    device: str
    backend: str
    out_dir: str
    image_format: str = "png"
    uncertainty: bool = False
    given: float | None = None  # --pixel-size

    @classmethod
    def of(cls, predictor: Predictor, out_dir: Path, **options: Any) -> Job:
        """The job of a Predictor built here (its models, its resolved apply config)."""
        from omegaconf import OmegaConf

        model = predictor.model if isinstance(predictor.model, list) else [predictor.model]
        return cls(tuple(str(Path(m).resolve()) for m in model),
                   json.dumps(OmegaConf.to_container(predictor.cfg, resolve=True), sort_keys=True),
                   predictor.device, predictor.backend, str(Path(out_dir).resolve()), **options)


_PREDICTORS: dict[str, Predictor] = {}  # per process: a worker loads its models once


def predictor_of(job: Job, made: Predictor | None = None) -> Predictor:
    """The job's Predictor in this process (`made`, when the caller already has it)."""
    key = json.dumps([job.model, job.apply, job.device, job.backend])
    if key not in _PREDICTORS:
        model = [Path(m) for m in job.model]
        _PREDICTORS.clear()  # one model at a time per process
        _PREDICTORS[key] = made or Predictor(model[0] if len(model) == 1 else model, json.loads(job.apply),
                                             job.device, job.backend)
    return _PREDICTORS[key]


def predict_chunk(job: Job, files: Sequence[str], stems: dict[str, str]) -> dict[str, Any]:
    """Segment `files` and write their outputs and rows into the job's folder; returns
    {"used": [(pixel size source, frames)], "skipped": {path: (status, reason)}, "notices": [(kind, text)]}."""
    from .segment import write_predictions

    predictor = predictor_of(job)
    paths = [Path(f) for f in files]
    results, skipped = predictor.segment_files(paths, job.given, job.uncertainty, progress=False,
                                               stems={Path(f): stems[f] for f in files})
    write_predictions(results, Path(job.out_dir), skipped, job.image_format)
    return {"used": [(str(seg.pixel_size_source), seg.micrograph.frames) for seg in results],
            "skipped": {path: (s.status, s.reason) for path, s in skipped.items()},
            "notices": [(n.kind, n.message) for seg in results for n in seg.notices]}


def run_predict(job: Job, files: Sequence[Path], stems: dict[Path, str], scheduler: str | None = None
                ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(files done in the chunk, its summary) for every chunk of CHUNK files, in order: run here,
    or on the dask.distributed cluster at `scheduler` (chunks run in parallel, summaries in order)."""
    chunks = [[str(f) for f in files[i:i + CHUNK]] for i in range(0, len(files), CHUNK)]
    plain = {str(f): stems[f] for f in files}
    if not scheduler:
        for chunk in chunks:
            yield len(chunk), predict_chunk(job, chunk, {f: plain[f] for f in chunk})
        return
    from distributed import Client

    with Client(scheduler, set_as_default=False) as client:
        futures = client.map(predict_chunk, [job] * len(chunks), chunks,
                             [{f: plain[f] for f in chunk} for chunk in chunks], pure=False)
        for chunk, future in zip(chunks, futures):
            yield len(chunk), future.result()
            future.release()

