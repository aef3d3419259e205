"""Parallel generation: split a run into per-structure tasks, run them, write results in order.

Workers are single-threaded processes (a local spawn pool, or dask.distributed workers at a
scheduler address) with deterministic FFT plans, warmed once (numba compilation) before
timing-relevant work. Results are written strictly in image order, so the file is the same
whatever the worker count; a resumed run restarts at the first missing image.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from grapheneseg.config import ConfigError

from .dataset import DatasetError, DatasetWriter, rewrite
from .imaging import band_limit, configure_abtem, limit_threads
from .pipeline import STAGES, PlainConfig, simulate_structure

# Keys that change how a run executes, not what it produces (left out of the file's config).
RUNTIME_KEYS = ("workers", "scheduler", "out", "device", "preview", "data")


def physics_config(cfg: DictConfig) -> DictConfig:
    """The part of the config that determines the images (stored in and checked against files)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in RUNTIME_KEYS:
        plain.pop(key, None)
    plain.pop("n", None)
    return OmegaConf.create(plain)


def default_out(cfg: DictConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("data") / "sim" / f"sim_{cfg.n}_seed{cfg.seed}.h5"


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first invalid value (before anything is written)."""

    def check(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{key} = {OmegaConf.select(cfg, key)}: {why}")

    def span(key: str, lo: float = -np.inf, hi: float = np.inf) -> None:
        value = OmegaConf.select(cfg, key)
        check(isinstance(value, (list, tuple)) or OmegaConf.is_list(value), key, "expected [low, high]")
        check(len(value) == 2 and all(isinstance(v, (int, float)) for v in value), key, "expected two numbers [low, high]")
        check(value[0] <= value[1], key, "low must not exceed high")
        check(lo <= value[0] and value[1] <= hi, key, f"must lie within [{lo}, {hi}]")

    check(isinstance(cfg.n, int) and cfg.n >= 1, "n", "must be an integer >= 1")
    check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", "must be an integer >= 0")
    check(isinstance(cfg.workers, int) and cfg.workers >= 1, "workers", "must be an integer >= 1")
    check(isinstance(cfg.variants_per_structure, int) and cfg.variants_per_structure >= 1, "variants_per_structure", "must be an integer >= 1")
    check(cfg.device in ("cpu", "gpu"), "device", "must be cpu or gpu")
    check(cfg.grid.image_px >= 16, "grid.image_px", "must be >= 16")
    check(cfg.grid.margin_px >= 0, "grid.margin_px", "must be >= 0")
    span("grid.pixel_size", 0.1, 1.0)
    check(0.02 <= cfg.grid.potential_sampling <= 0.5, "grid.potential_sampling", "must lie within [0.02, 0.5] A")
    check(cfg.grid.slice_thickness > 0 and cfg.grid.amorphous_slice_thickness > 0, "grid.slice_thickness", "slice thicknesses must be > 0")
    check(0 < cfg.grid.envelope_floor < 1, "grid.envelope_floor", "must lie within (0, 1)")
    o = cfg.optics
    check(o.energy > 0, "optics.energy", "must be > 0 eV")
    span("optics.dose", 1e-6)
    for key in ("defocus", "cs"):
        span(f"optics.{key}")
    for key in ("astigmatism", "focal_spread", "angular_spread", "blur", "gradient", "mtf_c2"):
        span(f"optics.{key}", 0.0)
    span("optics.mtf_c2", 0.0, 1.0)
    span("optics.mtf_c3", 1e-3)
    span("optics.mtf_c4", 1e-3)
    check(o.semiangle_cutoff > 0, "optics.semiangle_cutoff", "must be > 0 mrad")
    # abTEM's antialiasing keeps frequencies below 2/3 of the grid's Nyquist, 1 / (3 sampling): a
    # coarser grid would cut into the objective aperture and blur every image without a sign
    coarsest = 1 / (3 * band_limit(cfg.optics.energy, cfg.optics.semiangle_cutoff))
    check(cfg.grid.potential_sampling <= coarsest, "grid.potential_sampling",
          f"must be <= {coarsest:.3f} A at {cfg.optics.energy / 1e3:g} kV and {cfg.optics.semiangle_cutoff:g} mrad "
          "(abTEM's antialiasing would cut into the objective aperture)")
    s = cfg.structure
    span("structure.grains", 1, 100)
    span("structure.holes.count", 0)
    span("structure.holes.radius", 0.0)
    span("structure.amorphous.coverage", 0.0, 1.0)
    check(s.amorphous.coverage_median > 0 and s.amorphous.coverage_sigma >= 0, "structure.amorphous.coverage_median", "median must be > 0 and sigma >= 0")
    span("structure.amorphous.density", 0.1, 4.0)
    span("structure.amorphous.thickness", 0.0)
    check(cfg.structure.amorphous.thickness_variation >= 0, "structure.amorphous.thickness_variation", "must be >= 0")
    span("optics.patchiness", 0.0)
    span("optics.patch_scale", 0.5)
    span("structure.amorphous.correlation_length", 1e-3)
    span("structure.amorphous.gap", 0.0)
    span("structure.adatoms.count", 0)
    for key in ("single_grain_probability", "holes.probability", "amorphous.clean_probability", "amorphous.top_probability", "adatoms.probability"):
        check(0 <= OmegaConf.select(s, key) <= 1, f"structure.{key}", "must be a probability in [0, 1]")
    check(s.min_distance > 0 and s.amorphous.min_distance > 0, "structure.min_distance", "must be > 0")
    check(cfg.label.atom_radius >= 0 and cfg.label.margin_px >= 0, "label.margin_px", "label reach must be >= 0")
    check(cfg.label.atom_sigma > 0, "label.atom_sigma", "must be > 0 A")


# ---------------------------------------------------------------- workers

_WORKER: dict = {}


def init_worker(cfg_yaml: str, device: str) -> None:
    """Per-process setup: one thread, deterministic FFT plans, abTEM quiet; warm numba once."""
    limit_threads()
    configure_abtem(device)
    cfg = OmegaConf.create(cfg_yaml)
    _WORKER.update(cfg=PlainConfig.of(cfg), yaml=cfg_yaml)
    warm = OmegaConf.merge(cfg, {"grid": {"image_px": 16, "margin_px": 4}, "variants_per_structure": 1})
    simulate_structure(PlainConfig.of(warm), 0, 0, [0])


def run_task(task: tuple[int, int, list[int]]):
    """(seed, structure, variants) -> (samples, stage seconds, peak RSS of this worker in MiB)."""
    import resource

    if len(task) > 3 and _WORKER.get("yaml") != task[3]:  # dask workers: set up by their first task
        init_worker(*task[3:])
    samples, timing = simulate_structure(_WORKER["cfg"], *task[:3])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return samples, timing, peak


@dataclass
class RunStats:
    """What a run did and where its time went (seconds summed over workers)."""

    images: int = 0
    structures: int = 0
    wall: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    peak_worker_mib: float = 0.0

    def as_dict(self) -> dict:
        rate = self.images / self.wall if self.wall else 0.0
        return {"images": self.images, "structures": self.structures, "wall_s": round(self.wall, 2), "images_per_s": round(rate, 2),
                "peak_worker_mib": round(self.peak_worker_mib, 1), "stage_s": {k: round(v, 2) for k, v in self.stages.items()}}


def plan_tasks(seed: int, start: int, n: int, per_structure: int) -> list[tuple[int, int, list[int]]]:
    """Tasks covering images [start, n): one per structure, listing the variants it still owes."""
    tasks = []
    for s in range(start // per_structure, (n - 1) // per_structure + 1):
        first, last = s * per_structure, min((s + 1) * per_structure, n)
        variants = [i - first for i in range(max(first, start), last)]
        if variants:
            tasks.append((seed, s, variants))
    return tasks


def generate(cfg: DictConfig, out: Path, resume: bool = False, overwrite: bool = False, progress: bool = True) -> RunStats:
    """Write (or complete, with `resume`) the dataset of `cfg.n` images at `out`."""
    validate(cfg)
    out = Path(out)
    if out.exists() and not (resume or overwrite):
        raise DatasetError(f"{out}: already exists (use --resume to complete it or --overwrite to replace it)")
    if out.exists() and out.is_dir():
        raise DatasetError(f"{out}: is a folder, expected an .h5 file path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"{out.parent}: cannot create output folder ({err.strerror})") from None
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise DatasetError(f"{out}: not writable")

    physics = physics_config(cfg)
    cfg_yaml = OmegaConf.to_yaml(physics)
    attrs = {"config": cfg_yaml, "seed": int(cfg.seed), "n_target": int(cfg.n), "variants_per_structure": int(cfg.variants_per_structure)}
    limit_threads()
    configure_abtem(cfg.device)
    writer = DatasetWriter(out, cfg.n, cfg.grid.image_px, attrs, resume=resume and out.exists())
    stats = RunStats()
    start = writer.count
    tasks = plan_tasks(cfg.seed, start, cfg.n, cfg.variants_per_structure)
    bar = tqdm(total=cfg.n, initial=start, unit="img", desc="simulate", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    complete = False
    try:
        for samples, timing, peak in _results(cfg, cfg_yaml, tasks):
            writer.append(samples)
            stats.images += len(samples)
            stats.structures += 1
            stats.peak_worker_mib = max(stats.peak_worker_mib, peak)
            for key, value in timing.items():
                stats.stages[key] += value
            bar.update(len(samples))
        complete = writer.count == cfg.n
    finally:
        bar.close()
        writer.close(complete)
    if complete and start > 0:
        rewrite(out, cfg.n, cfg.grid.image_px, attrs, [(t[1] * cfg.variants_per_structure, t[1] * cfg.variants_per_structure + len(t[2])) for t in plan_tasks(cfg.seed, 0, cfg.n, cfg.variants_per_structure)])
    stats.wall = time.perf_counter() - t0
    return stats


def _results(cfg: DictConfig, cfg_yaml: str, tasks):
    """Task results in task order, from the configured executor."""
    if not tasks:
        return
    if cfg.scheduler:
        yield from _dask_results(str(cfg.scheduler), cfg_yaml, cfg.device, tasks)
    elif cfg.workers == 1:
        init_worker(cfg_yaml, cfg.device)
        for task in tasks:
            yield run_task(task)
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(cfg.workers, len(tasks)), initializer=init_worker, initargs=(cfg_yaml, cfg.device)) as pool:
            yield from pool.imap(run_task, tasks, chunksize=1)


def _dask_results(address: str, cfg_yaml: str, device: str, tasks):
    """Run tasks on a dask.distributed cluster; yield results in task order."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        futures = client.map(run_task, [(*t, cfg_yaml, device) for t in tasks], pure=False)
        for future in futures:  # in order; later tasks keep running meanwhile
            yield future.result()
            future.release()
