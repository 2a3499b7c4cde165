"""Running a frozen backbone over images once, into the feature cache.

Frozen-backbone training spends nearly all its time computing the same features every epoch
(Keras, fastai and Lightning all do). Here each image, and each augmented view of it, goes through
the backbone exactly once; the head then trains on the stored features in milliseconds per epoch.
"""

from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..backbones import Backbone
from ..data.discover import Sample
from ..data.images import draft_size_for, load_image
from ..data.transforms import Augment, eval_transform, train_transform
from ..engines import CompileError, choose_engine, frozen_forward
from ..fingerprint import file_identity, files_fingerprint
from ..memory import give_back
from ..progress import image_progress
from ..runtime import Runtime
from .cache import FeatureCache
from .entry import FeatureSet, cache_key
from .reuse import Reuse, identity_digests


class ViewDataset(Dataset):
    """Images through a transform; with `seed`, image i always gets the same random view.

    Seeding per (view, image) makes an augmented view a pure function of its inputs, so it can be
    cached and a second run reuses it instead of drawing different crops.
    """

    def __init__(self, paths: Sequence, transform, *, seed: int | None = None, draft_size: int | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.seed = seed
        self.draft_size = (draft_size, draft_size) if draft_size else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = load_image(self.paths[index], draft_size=self.draft_size)
        if self.seed is None:
            return self.transform(image)
        # Seed private copies of the generators: the caller's random streams stay untouched.
        item_seed = (self.seed * 1_000_003 + index) % 2**31
        state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(item_seed)  # timm's random crop draws from `random`
                torch.manual_seed(item_seed)  # torchvision's flip draws from torch
                return self.transform(image)
        finally:
            random.setstate(state)


def extract_into(
    backbone: Backbone,
    dataset: Dataset,
    out: np.ndarray,
    *,
    runtime: Runtime,
    description: str = "features",
    start: int = 0,
    written: Callable[[int], None] | None = None,
    engines: Path | None = None,
) -> None:
    """Write backbone(dataset[i]) into out[i] for i from `start` on, batch by batch (never the whole
    set in memory), calling `written(rows)` after each batch, when out[:rows] hold features.

    The backbone runs in `runtime.engine` (graft.engines; compiled graphs kept in `engines`).
    `start` resumes an interrupted extraction (`FeatureCache.build`): the rows before it are
    there already. Batches run from `start` as they ran from 0 when it is a multiple of the batch
    size, and dataset[i] does not depend on what else is read (ViewDataset seeds by index), so
    the rows are bitwise those an uninterrupted extraction writes.

    With `runtime.processes` > 1 in torch (and `out` a memory-mapped .npy), each of that many spawned
    processes computes every processes-th row, on its own GPU where there are several; `written`
    is then called once, at the end.
    """
    count = len(dataset)  # type: ignore[arg-type]  # a map-style dataset
    remaining = max(0, count - start)
    if start:
        dataset = Subset(dataset, range(start, count))
    if runtime.processes > 1 and runtime.engine == "torch":  # another engine uses every core from one process
        with image_progress(remaining, description, enabled=runtime.progress) as update:
            _extract_sharded(backbone, dataset, out, runtime=runtime, start=start)  # type: ignore[arg-type]  # a memmap here
            update(remaining)
        if written is not None:
            written(count)
        return
    loader = DataLoader(dataset, batch_size=runtime.batch_size, num_workers=runtime.workers, shuffle=False)
    row = start
    with frozen_forward(backbone, runtime=runtime, input_size=backbone.data_config.input_size, folder=engines) as forward, \
            image_progress(remaining, description, enabled=runtime.progress) as update:
        for batch in loader:
            out[row : row + len(batch)] = forward(batch).numpy()
            row += len(batch)
            update(len(batch))
            if written is not None:
                written(row)
    give_back()  # the engine's buffers, freed with it, to the system (the run's later steps need room)


def _extract_sharded(backbone, dataset, out: np.memmap, *, runtime: Runtime, start: int = 0) -> None:
    """`dataset` (rows `start` onwards of `out`) over runtime.processes spawned processes."""
    import torch.multiprocessing as mp

    if getattr(out, "filename", None) is None:
        raise ValueError("sharded extraction writes into a memory-mapped .npy file")
    out.flush()
    # Each process extracts alone, quietly, with at most one loader process of its own.
    shard = runtime.but(devices=1, num_nodes=1, workers=min(runtime.workers, 1), progress=False)
    mp.start_processes(
        _extract_shard,
        args=(runtime.processes, backbone, dataset, str(out.filename), shard, start),
        nprocs=runtime.processes,
        start_method="spawn",
    )


def _extract_shard(rank, processes, backbone, dataset, filename, runtime: Runtime, start: int = 0) -> None:
    """One process's share: dataset rows rank, rank + processes, ... written straight into the
    shared file, at rows start + rank, start + rank + processes, ..."""
    if torch.cuda.is_available():
        torch.cuda.set_device(rank % torch.cuda.device_count())
    else:  # share the cores instead of every process claiming all of them
        torch.set_num_threads(max(1, (torch.get_num_threads() or 1) // processes))
    out = np.load(filename, mmap_mode="r+")
    rows = range(rank, len(dataset), processes)
    extract_into(backbone, torch.utils.data.Subset(dataset, rows), out[start + rank :: processes],  # a view: no copy
                 runtime=runtime)
    out.flush()


def backbone_features(
    backbone: Backbone,
    samples: Sequence[Sample],
    *,
    split: str,
    runtime: Runtime,
    cache: FeatureCache | None = None,
    view: int | None = None,
    augment: Augment | None = None,
    seed: int = 0,
) -> FeatureSet:
    """Features of `samples` (one plain view, or augmented view number `view`), from the cache if there.

    The key holds everything that changes the numbers, the engine and the precision always among
    them, so features computed by different engines or precisions are never mixed; the split name
    is recorded but not part of the key (the same files are the same features). Extraction runs with
    `runtime`: its engine (auto: graft.engines.choice.choose_engine, from the machine and the
    options alone, never from what the cache holds), inference precision, workers, batch size and
    progress, sharded over `runtime.processes` in torch. Batches of 32 (Runtime's default): against
    64, they ran Lite0 faster on a 2-core CPU and peaked lower (the activations of early, wide layers
    dominate memory; docs/benchmarks.md, "2. Extraction throughput").

    A damaged cache entry is reported, removed and extracted again; a cache folder that cannot be
    written still gives the features (built in a temporary folder, with one warning); a full disk
    is a GraftError before any image is processed; an interrupted extraction (Ctrl-C, an error,
    kill -9) goes on from the batches it completed (`FeatureCache.build`). Under auto, a backbone
    that cannot be traced is extracted in torch fp32, with a warning.

    A plain view missing from the cache takes the rows of the files that did not change (same
    path, size and times; the label may differ), and of files with the same bytes as an extracted
    one (a copy at a new path), from earlier entries with the same settings, and extracts only the
    others (graft.features.reuse); the progress line says how many of each.
    """
    cache = cache or FeatureCache()
    engines = cache.engines
    identities = [file_identity(s.path) for s in samples]
    files = files_fingerprint([s.path for s in samples], np.array([s.label for s in samples], dtype=np.int64),
                              identities)
    digests = identity_digests(identities)
    requested = runtime.engine
    # decided now: the engine and its precision are part of the key
    runtime = runtime.but(engine=choose_engine(requested, device=runtime.device.type,
                                               precision=runtime.inference_precision))
    try:
        return _backbone_features(backbone, samples, files, digests, split=split, runtime=runtime, cache=cache,
                                  view=view, augment=augment, seed=seed, engines=engines)
    except CompileError as error:
        if requested != "auto":
            raise
        print(f"Warning: {error} Extracting with PyTorch (fp32) instead.", file=sys.stderr)
        return _backbone_features(backbone, samples, files, digests, split=split,
                                  runtime=runtime.but(engine="torch", inference_precision="32"), cache=cache,
                                  view=view, augment=augment, seed=seed, engines=engines)


def _describe(backbone: Backbone, files: str, *, runtime: Runtime, view: int | None, augment: Augment | None,
              seed: int):
    """What the cache key of the features of the images `files` (their files_fingerprint) holds, and
    the transform that prepares those images."""
    augmented = view is not None and augment is not None
    describe = {
        "backbone": backbone.name,
        # Random weights differ run to run unless seeded; never reuse their features.
        "weights": backbone.weights_id if backbone.weights_id != "none" else f"random-{uuid.uuid4()}",
        "data_config": backbone.data_config.to_dict(),
        "cut": backbone.cut,
        "view": view if augmented else "plain",
        "augment": augment.to_dict() if augment is not None and augmented else None,
        "seed": seed if augmented else None,
        "engine": runtime.engine,
        "precision": runtime.inference_precision if runtime.engine == "torch" else "32",
        "files": files,
    }
    config = backbone.data_config
    transform = train_transform(config, augment, pixels=True) if augmented else eval_transform(config, pixels=True)
    describe["transform"] = repr(transform)  # any change to preprocessing code changes the key
    return describe, transform


def settings_key(describe: dict) -> str:
    """What makes features what they are but the list of files: the key under which entries lend
    their rows to one another (graft.features.reuse)."""
    return cache_key({name: value for name, value in describe.items() if name != "files"})


def _backbone_features(backbone: Backbone, samples: Sequence[Sample], files: str, digests: np.ndarray, *,
                       split: str, runtime: Runtime, cache: FeatureCache, view: int | None,
                       augment: Augment | None, seed: int, engines: Path) -> FeatureSet:
    augmented = view is not None and augment is not None
    view_number = view if view is not None else 0
    paths = [s.path for s in samples]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    describe, transform = _describe(backbone, files, runtime=runtime, view=view, augment=augment, seed=seed)
    key = cache_key(describe)
    found = cache.get(key)
    if found is not None:
        return found
    dataset = ViewDataset(
        paths,
        transform,
        seed=(seed * 7919 + view_number) if augmented else None,
        draft_size=draft_size_for(backbone.data_config.image_size, augmented),
    )
    label = f"{split} features" + (f" (view {view_number + 1})" if augmented else "")
    # An augmented view's crop depends on the image's index and seed: never taken from another list.
    settings = None if augmented else settings_key(describe)
    reuse = cache.reusable(settings, digests, paths, dim=backbone.num_features) if settings \
        else Reuse(count=len(samples))

    def fill(out: np.ndarray, start: int, written: Callable[[int], None]) -> None:
        if not reuse.sources:
            extract_into(backbone, dataset, out, runtime=runtime, description=label, start=start, written=written,
                         engines=engines)
            return
        reuse.copy_into(out, start)
        _extract_rows(backbone, dataset, out, reuse.missing(start), runtime=runtime, description=label,
                      written=written, engines=engines)

    built = cache.build(key, count=len(samples), dim=backbone.num_features, labels=labels,
                        describe={**describe, "split": split, **({"settings": settings} if settings else {})},
                        fill=fill, files=None if augmented else digests, contents=reuse.contents)
    if reuse.sources and runtime.progress:
        print(f"{label}: {reuse.reused:,} reused, {len(samples) - reuse.reused:,} extracted", file=sys.stderr,
              flush=True)
    return built


def _extract_rows(backbone: Backbone, dataset: Dataset, out: np.ndarray, rows: np.ndarray, *, runtime: Runtime,
                  description: str, written: Callable[[int], None], engines: Path) -> None:
    """Write backbone(dataset[i]) into out[i] for each i of `rows` (increasing) and no other row,
    the rest of `out` being written already: `written(n)` then says out[:n] are complete."""
    if not len(rows):
        return
    count = len(out)
    subset = Subset(dataset, rows.tolist())
    if runtime.processes > 1 and runtime.engine == "torch":  # sharded: into a memory-mapped file of its own
        scratch = Path(out.filename).parent / f"rows-{uuid.uuid4().hex[:8]}.npy"  # type: ignore[attr-defined]  # a memmap
        try:
            computed = np.lib.format.open_memmap(scratch, mode="w+", dtype=out.dtype, shape=(len(rows), out.shape[1]))
            extract_into(backbone, subset, computed, runtime=runtime, description=description, engines=engines)
            out[rows] = computed
            del computed
        finally:
            scratch.unlink(missing_ok=True)
        return
    extract_into(backbone, subset, _Rows(out, rows), runtime=runtime, description=description,  # type: ignore[arg-type]
                 written=lambda done: written(int(rows[done]) if done < len(rows) else count), engines=engines)


class _Rows:
    """The rows `rows` of `out` as if they were consecutive: extract_into writes view[a:b]."""

    def __init__(self, out: np.ndarray, rows: np.ndarray):
        self.out, self.rows = out, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __setitem__(self, index: slice, value: np.ndarray) -> None:
        self.out[self.rows[index]] = value

