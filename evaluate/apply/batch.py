"""`evaluate predict`, `atoms` and `structure` over a whole archive: chunks of files, on this machine
or on a dask.distributed cluster, with the same code and so the same bytes.

A `Job` is everything a chunk needs, as plain, picklable values (the command, model paths, the
resolved configs, device, backend, the output folder and format). `run_chunk` segments one chunk
with the job's Predictor (built once per process and kept), makes the command's maps (atoms,
structure) and writes its files and table rows into the output folder itself, under the folder
lock that parallel writers share (grapheneseg.tables); it returns only a small summary.
`run_batch` hands the chunks to `run_chunk` here, or, with a scheduler address, to the cluster's
workers (as `simulate generate --scheduler` does), which must see the input and output folders at
the same paths (a shared file system).
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
    """One `evaluate predict|atoms|structure` run, as plain values."""

    model: tuple[str, ...]  # checkpoint files or run folders (one ensemble)
    apply: str  # the resolved apply config, as JSON
    device: str
    backend: str
    out_dir: str
    image_format: str = "png"
    uncertainty: bool = False
    given: float | None = None  # --pixel-size
    command: str = "predict"
    atom_model: tuple[str, ...] = ()  # the atom-map network (atoms --method network, structure --rings)
    atom_apply: str = "{}"  # the apply config resolved for it, as JSON
    atoms: str = "{}"  # the atoms config (configs/evaluate.yaml atoms), as JSON
    structure: str = "{}"  # the structure_maps config, as JSON
    method: str = "network"  # atoms: network or extrema
    contrast: str = "auto"  # atoms --method extrema
    rings: bool = False  # structure --rings

    @classmethod
    def of(cls, predictor: Predictor, out_dir: Path, atom_predictor: Predictor | None = None, atoms: Any = None,
           structure: Any = None, **options: Any) -> Job:
        """The job of Predictors built here (their models, their resolved apply configs) with the
        atoms and structure_maps configs of the run."""
        if atom_predictor is not None:
            options.update(atom_model=_paths(atom_predictor), atom_apply=_plain(atom_predictor.cfg))
        return cls(_paths(predictor), _plain(predictor.cfg), predictor.device, predictor.backend,
                   str(Path(out_dir).resolve()), atoms=_plain(atoms or {}), structure=_plain(structure or {}),
                   **options)


def _paths(predictor: Predictor) -> tuple[str, ...]:
    model = predictor.model if isinstance(predictor.model, list) else [predictor.model]
    return tuple(str(Path(m).resolve()) for m in model)


def _plain(cfg: Any) -> str:
    """A config as sorted JSON (plain, picklable, hashable)."""
    from omegaconf import OmegaConf

    return json.dumps(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg, sort_keys=True)


_PREDICTORS: dict[str, Predictor] = {}  # per process: a worker loads its models once


def predictor_of(job: Job, made: Predictor | None = None, task: str = "contamination") -> Predictor:
    """The job's Predictor of `task` (contamination, or atoms: the atom-map network) in this
    process (`made`, when the caller already has it)."""
    model, apply = (job.atom_model, job.atom_apply) if task == "atoms" else (job.model, job.apply)
    key = json.dumps([task, model, apply, job.device, job.backend])
    if key not in _PREDICTORS:
        if len(_PREDICTORS) >= 4:  # a long-lived worker keeps a few models, not every one it met
            _PREDICTORS.clear()
        paths = [Path(m) for m in model]
        _PREDICTORS[key] = made or Predictor(paths[0] if len(paths) == 1 else paths, json.loads(apply),
                                             job.device, job.backend, task)
    return _PREDICTORS[key]


def run_chunk(job: Job, files: Sequence[str], stems: dict[str, str]) -> dict[str, Any]:
    """Segment `files`, make the command's maps and write their files and rows into the job's
    folder; returns {"used": [(pixel size source, frames)], "skipped": {path: (status, reason)},
    "notices": [(kind, text)], "lines": [what the command prints per answer]}."""
    from omegaconf import OmegaConf

    from .segment import write_predictions

    out = Path(job.out_dir)
    results, skipped = predictor_of(job).segment_files([Path(f) for f in files], job.given, job.uncertainty,
                                                       progress=False, stems={Path(f): stems[f] for f in files})
    notices = [(n.kind, n.message) for seg in results for n in seg.notices]
    lines: list[str] = []
    if job.command == "predict":
        write_predictions(results, out, skipped, job.image_format)
    else:
        from .atoms import atoms_of

        atoms_cfg = OmegaConf.create(json.loads(job.atoms))
        found = []
        if job.command == "atoms" or job.rings:
            method = job.method if job.command == "atoms" else "network"
            atom_predictor = predictor_of(job, task="atoms") if method == "network" else None
            found, not_found = atoms_of(results, out, atoms_cfg, method, atom_predictor, job.contrast)
            skipped.update(not_found)
            notices += [(n.kind, n.message) for one in found for n in one.notices]
        if job.command == "atoms":
            lines = [f"{one.path.name}: {len(one.graph.atoms)} atoms outside contamination, {len(one.graph.bonds)} "
                     f"bonds, {one.graph.how}, registration {one.check['registration']}" for one in found]
        else:
            from .structure import run_structure, structure_row

            structures, _ = run_structure(results, out, json.loads(job.structure), found,
                                          image_format=job.image_format)
            rows = [structure_row(s) for s in structures]
            lines = [f"{Path(s.path).name}{f' frame {s.frame}' if s.frame else ''}: {row['grains']} grain(s), "
                     f"boundaries {row['boundary_length_nm']} nm, lattice {s.lattice_check}, registration "
                     f"{s.registration}" for s, row in zip(structures, rows)]
    return {"used": [(str(seg.pixel_size_source), seg.micrograph.frames) for seg in results],
            "skipped": {path: (s.status, s.reason) for path, s in skipped.items()},
            "notices": notices, "lines": lines}


def run_batch(job: Job, files: Sequence[Path], stems: dict[Path, str], scheduler: str | None = None
              ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(files done in the chunk, its summary) for every chunk of CHUNK files, in order: run here,
    or on the dask.distributed cluster at `scheduler` (chunks run in parallel, summaries in order)."""
    chunks = [[str(f) for f in files[i:i + CHUNK]] for i in range(0, len(files), CHUNK)]
    plain = {str(f): stems[f] for f in files}
    if not scheduler:
        for chunk in chunks:
            yield len(chunk), run_chunk(job, chunk, {f: plain[f] for f in chunk})
        return
    from distributed import Client

    with Client(scheduler, set_as_default=False) as client:
        futures = client.map(run_chunk, [job] * len(chunks), chunks,
                             [{f: plain[f] for f in chunk} for chunk in chunks], pure=False)
        for chunk, future in zip(chunks, futures):
            yield len(chunk), future.result()
            future.release()

