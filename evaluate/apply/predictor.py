"""The one way a trained network answers for a micrograph: `Predictor`.

`evaluate predict|sort|suggest|atoms|structure|score`, `evaluate report`'s scored arms,
`evaluate.api` and the napari plugin all segment through a Predictor, so a score and a mask of one
file come from one code path.

Scale, not size, is what a network learns: a U-Net pretrained on simulations saw graphene only at
the pixel sizes it was simulated at, which its checkpoint records (`pixel_range`). A Predictor
loads its models once, resolves the apply config for them (`model_scale`), and for each
micrograph decides the scale once (`decide_scale`: a typed `Scale` with its source and the lattice
reading it rests on), refuses what the model cannot answer for (`Refused`: under MIN_SIDE px,
pixels too coarse for the lattice, over the memory limit), resamples the micrograph to the
model's scale when its pixel size lies outside the model's range, segments it whole or in blended
tiles, and maps the probability back to the micrograph's own grid.

What a user should be told (an unknown or ambiguous scale, an out-of-distribution micrograph, a
pixel range reaching past the model's, test images the model was trained on) is returned as
`Notice`s on the result, never printed or warned here: the CLI prints them, `evaluate.api` issues
them as Python warnings, napari shows them in its widget.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grapheneseg.formats import Micrograph, read_frames, read_micrograph
from grapheneseg.micrographs import DataError
from grapheneseg.preprocessing import preprocess
from train.models import registry
from train.models.checkpoints import checkpoint_paths, read_checkpoint, trained_on
from train.models.runtime import inference_device, load_models, probability_samples, tiled_probability

from .scale import LATTICE_LIMIT, MIN_SIDE, Scale, decide_scale, pixel_size_text, resample
from .frames import MIN_AGREEMENT
from .masks import mask_of
from .segment import Notice, Refused, Segmentation, Skipped, file_sha256, memory_gb, output_stems

# Models that record no pixel range (real-only, or trained before it was recorded, such as the
# former shipped sim_default.ckpt v1 at 0.30-0.47 A/px): the 105 public images' 0.30-0.47 A/px, widened.
FALLBACK_RANGE, FALLBACK_TARGET = (0.28, 0.50), 0.385
FRAMES = ("first", "all", "mean")  # how a stack or series is read (Predictor.segment_files)


def model_scale(model_path: Path | Sequence[Path], cfg: Any) -> tuple[Any, list[Notice]]:
    """(a copy of the apply config `cfg` with `pixel_range` and `target_pixel_size` resolved for the
    checkpoint, run folder or several of them `model_path`, notices): null takes the pixel range
    its checkpoints record (their intersection for an ensemble) and its middle, else
    `FALLBACK_RANGE`; an explicit range reaching outside the recorded one gives a notice naming the
    model (the network would see scales it was never trained on)."""
    from omegaconf import OmegaConf

    recorded = [read_checkpoint(p).get("pixel_range") for p in checkpoint_paths(model_path)]
    name = model_path if isinstance(model_path, (str, Path)) else " + ".join(map(str, model_path))
    known = None
    if recorded and all(r and 0 < r[0] <= r[1] for r in recorded):  # a range of positive pixel sizes
        known = (max(r[0] for r in recorded), min(r[1] for r in recorded))
        if known[0] > known[1]:
            raise ValueError(f"{name}: its checkpoints were trained at disjoint pixel ranges {recorded}")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)) if OmegaConf.is_config(cfg) \
        else OmegaConf.create(dict(cfg))
    notices = []
    if cfg.get("pixel_range") is None:
        cfg.pixel_range = list(known or FALLBACK_RANGE)
    elif known and (cfg.pixel_range[0] < known[0] - 1e-3 or cfg.pixel_range[1] > known[1] + 1e-3):
        notices.append(Notice("model", f"{name}: apply.pixel_range {list(cfg.pixel_range)} A/px reaches outside the "
                                       f"{known[0]:.3f}-{known[1]:.3f} A/px the model was trained at; micrographs "
                                       "there are segmented at scales it never saw (leave apply.pixel_range null to "
                                       "use the model's)"))
    if cfg.get("target_pixel_size") is None:
        lo, hi = cfg.pixel_range
        cfg.target_pixel_size = FALLBACK_TARGET if (lo, hi) == FALLBACK_RANGE else round((lo + hi) / 2, 4)
    return cfg, notices


def check_device(name: str) -> None:
    """A ValueError now, not after an hour of work, when `name` (auto, cpu, cuda) cannot run here."""
    inference_device(name)


class Predictor:
    """A model (a checkpoint, a run folder's fold ensemble, or several: one ensemble) ready to
    answer for micrographs: `segment` one, `segment_files` many, `score` a labelled folder.

    `model` None takes the packaged model of `task` (train.models.registry). `cfg` is the apply
    config (configs/apply/default.yaml: threshold, tta, tile, overlap, batch_size, pixel_range,
    target_pixel_size, max_memory_gb). `notices` holds what the model itself must be said with
    (the packaged default used, a pixel range past the model's)."""

    def __init__(self, model: Path | Sequence[Path] | None, cfg: Any, device: str = "auto",
                 backend: str = "torchscript", task: str = "contamination"):
        self.notices: list[Notice] = []
        if model is None:
            model = registry.packaged(task)
            self.notices.append(Notice("model", registry.default_notice(task)))
        self.model = Path(model) if isinstance(model, (str, Path)) else [Path(m) for m in model]
        self.task, self.device, self.backend = task, device, backend
        self.models = load_models(self.model, device, "atoms" if task == "atoms" else "contamination", backend)
        self.cfg, notices = model_scale(self.model, cfg)
        self.notices += notices
        self.model_sha256 = registry.content_key(self.model)

    @property
    def provenance(self) -> dict[str, str]:
        """What made a result: the tool's version, the model's bytes (SHA-256 over its checkpoints)
        and the resolved apply config (SHA-256 of its sorted JSON)."""
        import hashlib
        import json
        from importlib import metadata

        from omegaconf import OmegaConf

        options = json.dumps(OmegaConf.to_container(self.cfg, resolve=True), sort_keys=True)
        return {"tool_version": metadata.version("grapheneseg"), "model_sha256": self.model_sha256,
                "config_sha256": hashlib.sha256(options.encode()).hexdigest()}

    def configured(self, cfg: Any) -> Predictor:
        """This predictor (the same loaded models) under another apply config `cfg`."""
        other = copy.copy(self)
        other.cfg, notices = model_scale(self.model, cfg)
        other.notices = [n for n in self.notices if n.message.startswith("no model given")] + notices
        return other

    def plan(self, micrograph: Micrograph, scale: Scale) -> np.ndarray:
        """The raw image at the network's scale: resampled to the config's `target_pixel_size`
        when the pixel size lies outside its `pixel_range`. Decided before computing: `Refused`
        for an image under MIN_SIDE px, one whose pixels are too coarse for the lattice
        (> LATTICE_LIMIT), and one whose resampled size would need more than `max_memory_gb`."""
        cfg = self.cfg
        h, w = micrograph.image.shape
        if min(h, w) < MIN_SIDE:
            raise Refused(f"{micrograph.path}: {w} x {h} px: too small (at least {MIN_SIDE} px a side)")
        size = scale.pixel_size
        if size is not None and size > LATTICE_LIMIT:
            raise Refused(f"{micrograph.path}: {pixel_size_text(size)} ({scale.source}): an overview image; the "
                          f"graphene lattice (2.13 \u00c5 planes) needs < {LATTICE_LIMIT:.3f} \u00c5/px")
        lo, hi = cfg.pixel_range
        target = cfg.target_pixel_size
        shape = (h, w)
        if size is not None and not lo <= size <= hi:
            shape = tuple(max(16, int(round(n * size / target))) for n in (h, w))
        limit = cfg.get("max_memory_gb")
        if limit and memory_gb((h, w), shape) > limit:
            raise Refused(f"{micrograph.path}: {w} x {h} px at {pixel_size_text(size) if size else 'its own scale'}"
                          + (f", {shape[1]} x {shape[0]} px at the model's {target:g} \u00c5/px," if shape != (h, w)
                             else "")
                          + f" needs about {memory_gb((h, w), shape):.1f} GB (> {limit:g} GB, --max-memory); crop or "
                          "bin it, or raise --max-memory")
        return micrograph.image if shape == (h, w) else resample(micrograph.image, shape)

    def probability(self, micrograph: Micrograph, scale: Scale) -> tuple[np.ndarray, float]:
        """(the network's output at its own scale, that grid's zoom relative to the micrograph's):
        for atom-map models the map whose peaks are the atoms (evaluate.apply.atoms)."""
        image = self.plan(micrograph, scale)
        prob = tiled_probability(self.models, preprocess(image), self.cfg.tile, self.cfg.overlap,
                                 self.cfg.batch_size, bool(self.cfg.get("tta", False)))
        return prob, image.shape[0] / micrograph.image.shape[0]

    def samples(self, micrograph: Micrograph, scale: Scale | None = None) -> np.ndarray:
        """(S, H, W): the probabilities of every (member, dihedral symmetry) on the micrograph's own
        grid, whose mean and spread `segment(..., uncertainty=True)` reports."""
        scale = scale or decide_scale(micrograph)
        image = self.plan(micrograph, scale)
        return np.stack([resample(p, micrograph.image.shape) for p in probability_samples(
            self.models, preprocess(image), self.cfg.tile, self.cfg.overlap, self.cfg.batch_size)])

    def segment(self, micrograph: Micrograph, scale: Scale | None = None, uncertainty: bool = False) -> Segmentation:
        """Contamination probability and mask of one micrograph on its own grid, at `scale`
        (default `decide_scale` with nothing given). With `uncertainty`, the probability is the
        mean over ensemble members x 8 symmetries and the per-pixel std over them is kept
        (evaluate.apply.uncertainty); the OOD measures are always checked."""
        from .ood import check, message

        start = time.perf_counter()
        scale = scale or decide_scale(micrograph)
        image = self.plan(micrograph, scale)
        std = disagreement = None
        if uncertainty:
            from .uncertainty import probability_and_std

            samples = probability_samples(self.models, preprocess(image), self.cfg.tile, self.cfg.overlap,
                                          self.cfg.batch_size)
            prob, std, disagreement = probability_and_std(samples, image.shape, self.cfg.threshold)
            std = np.clip(resample(std, micrograph.image.shape), 0.0, 0.5)
        else:
            prob = tiled_probability(self.models, preprocess(image), self.cfg.tile, self.cfg.overlap,
                                     self.cfg.batch_size, bool(self.cfg.get("tta", False)))
        prob = np.clip(resample(prob, micrograph.image.shape), 0.0, 1.0)
        ood = check(micrograph.image, zoom=image.shape[0] / micrograph.image.shape[0], lattice=scale.lattice_found)
        notices = [Notice("scale", text) for text in [scale.warning(str(micrograph.path))] if text]
        if ood:
            notices.append(Notice("ood", message(str(micrograph.path), ood)))
        return Segmentation(micrograph, prob, self.mask(prob, scale), scale, time.perf_counter() - start,
                            std, ood, disagreement, notices)

    def mask(self, probability: np.ndarray, scale: Scale) -> np.ndarray:
        """The mask of a probability map, drawn as the labels are (evaluate.apply.masks: the
        threshold, `close_A`, `fill_holes_nm2`), at the micrograph's pixel size (the model's target
        when it is unknown)."""
        return mask_of(probability, self.cfg.threshold, scale.pixel_size or self.cfg.target_pixel_size,
                       float(self.cfg.get("close_A") or 0), float(self.cfg.get("fill_holes_nm2") or 0))

    def segment_files(self, files: Iterable[Path], given: float | None = None, uncertainty: bool = False,
                      progress: bool = True, stems: dict[Path, str] | None = None, frames: str | None = None,
                      ) -> tuple[list[Segmentation], dict[str, Skipped]]:
        """Segment every file, each result named for its outputs (`stem`: the outputs mirror the
        input tree, evaluate.apply.segment.output_stems, unless `stems` names them) and stamped with
        its `provenance` (this predictor's, and the file's SHA-256). A stack or series is read as
        `frames` says (default the config's `frames`): "first" its first frame; "all" every frame
        (stems `<stem>_frameNNN`) and their `consensus` (`<stem>_consensus`, evaluate.apply.frames);
        "mean" their drift-registered mean. The scale is decided once per file, on its first frame.
        A file that cannot be read, that `plan` refuses, or whose segmentation raises, is collected
        in {path: Skipped} and the others go on: one file never stops a folder."""
        from tqdm import tqdm

        from .frames import consensus, registered_mean

        mode = frames or self.cfg.get("frames") or "first"
        if mode not in FRAMES:
            raise ValueError(f"frames must be one of {', '.join(FRAMES)}, not {mode!r}")
        done, skipped = [], {}
        files = list(files)
        stems = stems or output_stems(files)
        provenance = self.provenance
        for path in tqdm(files, desc="segment", unit="img", disable=not progress):
            try:
                micrographs = [read_micrograph(path)] if mode == "first" else read_frames(path)
                if mode == "mean" and len(micrographs) > 1:
                    micrographs = [registered_mean(micrographs)]
                scale = decide_scale(micrographs[0], given)
                stamp = {**provenance, "input_sha256": file_sha256(Path(path))}
                segs = []
                for micrograph in micrographs:
                    seg = self.segment(micrograph, scale, uncertainty)
                    if micrograph is not micrographs[0]:  # one scale, one notice per file
                        seg.notices = [n for n in seg.notices if n.kind != "scale"]
                    seg.stem = stems[path] + (f"_frame{micrograph.frame + 1:03d}" if micrograph.reading == "frame"
                                              else "")
                    seg.provenance = stamp
                    segs.append(seg)
                if len(segs) > 1:
                    segs.append(consensus(segs, lambda p: self.mask(p, scale),
                                          float(self.cfg.get("min_frame_agreement") or MIN_AGREEMENT)))
                done += segs
            except Refused as err:
                skipped[str(path)] = Skipped("refused", str(err))
            except DataError as err:
                skipped[str(path)] = Skipped("failed", str(err))
            except (MemoryError, ValueError, RuntimeError, OSError) as err:  # never a traceback for a user's file
                skipped[str(path)] = Skipped("failed", f"{path}: {type(err).__name__} while segmenting: {err}")
        return done, skipped

    def overlap(self, names: Sequence[str], where: str) -> list[Notice]:
        """A notice per checkpoint that was trained on some of `names` (scoring on them overstates it)."""
        notices = []
        for ckpt, seen in trained_on(self.model, names).items():
            shown = ", ".join(seen[:8]) + (f", ... ({len(seen) - 8} more)" if len(seen) > 8 else "")
            notices.append(Notice("overlap", f"{len(seen)} of the {len(names)} test images in {where} were used to "
                                             f"train {ckpt}; its scores on them are optimistic: {shown}"))
        return notices

    def score(self, test_dir: Path, names: Sequence[str] | None = None, progress: bool = False) -> dict[str, Any]:
        """Metrics of this model on the labelled folder `test_dir` (only its images `names`, when
        given: a fold's test images), each micrograph read and segmented exactly as `evaluate
        predict` does (`segment_files` with nothing given).

        Returns {"pooled": the six Table-1 metrics over all test pixels, "per_image": mean and std
        of each metric over images, "scores": {name: six metrics}, "counts": {name: [tp, fp, fn,
        tn]}, "scales": {name: "pixel size (source)"}, "n_images", "n_models", "model", "test",
        "tta", "notices": the test images it was trained on and each image's scale and OOD notices}
        (the Bragg scorer's keys and more). A DataError names any labelled
        micrograph the model refuses or fails on: a score must cover the whole folder."""
        from grapheneseg.metrics import confusion, per_image, pooled, scores
        from grapheneseg.micrographs import find_pairs, load_labelled

        data = load_labelled(Path(test_dir))
        if names is not None:
            missing = sorted(set(names) - set(data.names))
            if missing:
                raise DataError(f"{test_dir}: no labelled micrograph {', '.join(missing[:5])}")
            keep = [data.names.index(n) for n in names]
            data.names, data.masks = [data.names[i] for i in keep], [data.masks[i] for i in keep]
        paths = {name: image for name, image, _ in find_pairs(Path(test_dir))}
        done, skipped = self.segment_files([paths[n] for n in data.names], progress=progress)
        if skipped:
            raise DataError(f"{test_dir}: {len(skipped)} labelled micrograph(s) could not be scored: "
                            + "; ".join(str(s) for s in skipped.values()))
        counts = [confusion(seg.mask, truth) for seg, truth in zip(done, data.masks)]
        notices = self.overlap(data.names, str(test_dir)) + [n for seg in done for n in seg.notices]
        return {"pooled": pooled(counts), "per_image": per_image(counts),
                "scores": {name: scores(c) for name, c in zip(data.names, counts)},
                "counts": {name: c.tolist() for name, c in zip(data.names, counts)},
                "scales": {name: seg.scale.text() for name, seg in zip(data.names, done)},
                "n_images": len(data.names), "n_models": len(checkpoint_paths(self.model)),
                "model": str(self.model), "test": str(test_dir), "tta": bool(self.cfg.get("tta", False)),
                "notices": notices}
