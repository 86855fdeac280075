"""Batches for the trainer: the step's mixture (TimeStream.train_pipeline) cut into seeded chunks.

Exact resume needs the data position. webdataset pipelines are deterministic for a (seed, rank,
worker), but cannot seek; so the batch stream of a step is made of *chunks* of ``chunk_batches``
batches, and chunk ``c`` comes from a fresh pipeline seeded by (seed, c) — webdataset folds the rank
and worker in — with the producing process's RNGs (torch, random, numpy: random augmentation draws
from them) re-seeded by (seed, c, rank, worker) too. The batches of chunk ``c`` are therefore a pure
function of (seed, c, rank, worker count): a run resumed at a chunk boundary sees exactly the batches
an uninterrupted run saw, with or without DataLoader workers.

With ``W`` workers, DataLoader takes batches round-robin from workers 0..W-1; ``chunk_batches`` is a
multiple of ``W`` so that every chunk starts at worker 0, and worker ``w`` makes batches
``w, w+W, ...`` of each chunk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch.utils.data import IterableDataset


def _skip_count():
    from ticlip.data.shards import SkipCount

    return SkipCount()


def derive_seed(*parts) -> int:
    """A 31-bit seed fixed by ``parts`` (stable across processes and Python runs, unlike hash())."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global RNG states as plain data that ``torch.load(weights_only=True)`` reads back: Python's
    state is a tuple of ints, numpy's keys become an int64 tensor (numpy arrays would need unpickling)."""
    import random

    import numpy as np
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Set the global RNG states ``rng_state`` recorded (also from lists in place of the tensor)."""
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((str(name), np.asarray(keys).astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Pool:
    """A pretraining pool in a mixture: ``steps`` of ``stream`` (None: all), drawn with ``weight``."""

    stream: Any  # TimeStream
    steps: Sequence[int | str] | None
    weight: float


@dataclass
class Mixture:
    """What a step trains on (from a method's StepPlan) and how samples become tensors.

    ``steps``/``weights``/``counts``: this stream's steps and replay buffers (one
    ``TimeStream.train_pipeline`` mixes them; ``counts[i]``: the exact pairs a buffer keeps, None for
    all of the step); ``pools``: sources outside this stream. Without pools the pipeline is exactly
    ``stream.train_pipeline(...)``; with pools, each part is drawn with its weight (this stream's part
    with the sum of its sources' weights) by a seeded mixer. ``origins``: the index in the plan's
    sources of each local step, then of each pool (what ``mixture_record`` reports drawn counts by)."""

    stream: Any  # TimeStream
    steps: Sequence[int]
    weights: Sequence[float]
    counts: Sequence[int | None]
    transform: Callable
    tokenizer: Callable
    subset_seed: int | str = 0
    shuffle: int = 1000
    pools: Sequence[Pool] = ()
    origins: Sequence[int] = ()

    @classmethod
    def from_plan(cls, stream, plan, transform, tokenizer, *, subset_seed: int | str | None = None,
                  shuffle: int = 1000):
        """The plan's mixture; ``subset_seed`` (default: the plan's) seeds the buffers' ranking."""
        from ticlip.methods.base import BufferSource, PoolSource

        local = [s for s in plan.sources if not isinstance(s, PoolSource) and s.weight > 0 and s.pairs > 0]
        pool_sources = [s for s in plan.sources if isinstance(s, PoolSource) and s.weight > 0]
        pools = [_pool(s) for s in pool_sources]
        origins = [next(i for i, p in enumerate(plan.sources) if p is s) for s in local + pool_sources]
        counts = [s.pairs if isinstance(s, BufferSource) else None for s in local]
        seed = plan.subset_seed if subset_seed is None else subset_seed
        seed = 0 if seed is None else seed
        for s, n in zip(local, counts):  # rank the buffers once here (forked DataLoader workers inherit the cache)
            if n is not None:
                stream.buffer_keys(s.step, n, seed)
        return cls(stream, [s.step for s in local], [s.weight for s in local], counts,
                   transform, tokenizer, seed, shuffle, pools, origins)

    def _local(self, seed: int, skipped=None):
        return self.stream.train_pipeline(
            steps=list(self.steps), weights=list(self.weights), counts=list(self.counts),
            transform=self.transform, tokenizer=self.tokenizer, resampled=True, seed=seed,
            shuffle=self.shuffle, subset_seed=self.subset_seed, skipped=skipped,
        )

    def pipeline(self, seed: int, skipped=None):
        """The mixture's endless sample pipeline; ``skipped`` (a ``SkipCount``) counts bad samples."""
        if not self.pools:
            return self._local(seed, skipped)
        parts, weights = [], self.part_weights()
        if self.steps:
            parts.append(self._local(seed, skipped))
        for k, pool in enumerate(self.pools):
            parts.append(pool.stream.train_pipeline(
                steps=None if pool.steps is None else list(pool.steps), transform=self.transform,
                tokenizer=self.tokenizer, resampled=True, seed=derive_seed(seed, "pool", k), shuffle=self.shuffle,
                skipped=skipped,
            ))
        return WeightedMix(parts, weights, derive_seed(seed, "mix"))

    def part_weights(self) -> list[float]:
        """The weights ``WeightedMix`` draws the parts with: this stream's part (all local sources), then each pool."""
        return ([float(sum(self.weights))] if self.steps else []) + [float(pool.weight) for pool in self.pools]

    def drawn(self, seed: int, micro_batches: int, *, chunk_batches: int, batch_size: int, workers: int,
              world_size: int = 1) -> list[int]:
        """Pairs drawn from each source (local steps, then pools) by the first ``micro_batches`` batches of
        every rank of the webdataset path's batch stream with ``seed`` (``ChunkedBatches``).

        Not counted while training (DataLoader workers prefetch batches the loop never takes, and a resumed
        run would count twice), but replayed: each sample's source is the draw of a seeded mixer that is a
        function of (chunk seed, rank, worker) alone, one draw per sample (a skipped bad sample is replaced
        from the same source), so the same draws give the same counts."""
        import collections
        import random

        from webdataset.utils import make_seed

        n_local, weights = len(self.steps), self.part_weights()
        local_probs = [w / float(sum(self.weights)) for w in self.weights] if n_local > 1 else []
        out = [0] * (n_local + len(self.pools))
        workers = max(1, workers)
        for chunk in range(-(-micro_batches // chunk_batches)):
            taken = min(chunk_batches, micro_batches - chunk * chunk_batches)
            data_seed = derive_seed(seed, "data", chunk)
            for rank in range(world_size):
                for worker in range(workers):
                    n = len(range(worker, taken, workers)) * batch_size  # the loader takes batches round-robin
                    if not n:
                        continue
                    local = n
                    if self.pools:  # WeightedMix's draws
                        rng = random.Random(derive_seed(derive_seed(data_seed, "mix"), rank, worker))
                        counts = collections.Counter(rng.choices(range(len(weights)), weights=weights, k=n))
                        local = counts[0] if n_local else 0
                        for k in range(len(self.pools)):
                            out[n_local + k] += counts[k + (1 if n_local else 0)]
                    if n_local == 1:
                        out[0] += local
                    elif local:  # the stream's own seeded mix over its steps (TimeStream.train_pipeline)
                        rng = random.Random(make_seed(data_seed, 7919, rank * 1000 + worker))
                        picks = collections.Counter(rng.choices(range(n_local), weights=local_probs, k=local))
                        for i in range(n_local):
                            out[i] += picks[i]
        return out


def mixture_record(plan, mixture: Mixture, drawn: Sequence[int], data_path: str) -> dict:
    """step.json's ``mixture``: each plan source's kind, role (``new``: step t; ``buffer``: an earlier step of
    this stream; ``pool``), ``ratio`` (its share of the draws) and ``pairs_drawn`` (``drawn``: per source
    of ``mixture``, as ``Mixture.drawn`` / ``MemoryMixture.drawn`` count them); and the totals per role."""
    from ticlip.methods.base import PoolSource, source_to_dict

    total = float(sum(mixture.weights) + sum(p.weight for p in mixture.pools)) or 1.0
    used = {o: i for i, o in enumerate(mixture.origins)}
    weights = list(mixture.weights) + [p.weight for p in mixture.pools]
    sources, ratios, pairs = [], {}, {}
    for k, source in enumerate(plan.sources):
        role = "pool" if isinstance(source, PoolSource) else "new" if source.step == plan.step else "buffer"
        i = used.get(k)
        ratio = weights[i] / total if i is not None else 0.0
        n = int(drawn[i]) if i is not None else 0
        d = source_to_dict(source)
        sources.append({"role": role, "kind": d["kind"], **{key: d[key] for key in ("step", "stream", "steps", "shards")
                                                             if key in d}, "ratio": ratio, "pairs_drawn": n})
        ratios[role] = ratios.get(role, 0.0) + ratio
        pairs[role] = pairs.get(role, 0) + n
    return {"data_path": data_path, "ratios": ratios, "pairs_drawn": pairs, "sources": sources}


def check_pools(plans, where: str = "method") -> None:
    """Every pool of ``plans`` as the data path will open it (``_pool``): a pool stream must load (every
    local shard present) and hold its steps; shard URLs go through ``check_shard_url`` (never pipe:).
    ``ConfigError``, one line naming ``where``, for the first problem (``check_run``: before any work)."""
    from ticlip.methods.base import PoolSource
    from ticlip.schema import ConfigError
    from ticlip.errors import TiclipError

    seen = set()
    for plan in plans:
        for source in plan.sources:
            if not isinstance(source, PoolSource) or source.weight <= 0 or source in seen:
                continue
            seen.add(source)
            try:
                pool = _pool(source)
                for s in pool.steps or ():
                    pool.stream.step(s)
            except TiclipError as e:
                key = "pool_stream" if source.stream is not None else "pool_shards"
                raise ConfigError(f"{where} {key}: {e}".replace("\n", " ")) from None


def _pool(source) -> Pool:
    """A plan's PoolSource as a Pool: another stream's steps, or shards wrapped as a one-step stream."""
    import os

    from ticlip.data.shards import check_shard_url
    from ticlip.data.stream import ShardSet, Step, TimeStream

    if source.stream is not None:
        stream = TimeStream.load(source.stream)
        return Pool(stream, list(source.steps) or None, source.weight)
    for url in source.shards:  # as a manifest's: files or fsspec URLs, never a command (pipe:)
        check_shard_url(url, "pool source shards")
    step = Step(index=0, label="pool", start="", end="", periods=[],
                train=ShardSet(shards=list(source.shards), count=source.pairs or 0))
    return Pool(TimeStream(root=os.getcwd(), name="pool", granularity="", steps=[step]), None, source.weight)


class WeightedMix(IterableDataset):
    """Draw from several endless pipelines with fixed weights; the draw order is a function of
    (seed, rank, worker), like the pipelines themselves."""

    def __init__(self, parts: Sequence, weights: Sequence[float], seed: int):
        self.parts, self.weights, self.seed = list(parts), list(weights), seed

    def __iter__(self):
        import random

        from webdataset.utils import pytorch_worker_info

        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(derive_seed(self.seed, rank, worker))
        its = [iter(p) for p in self.parts]
        idx = list(range(len(its)))
        while True:
            i = rng.choices(idx, weights=self.weights)[0]
            try:
                yield next(its[i])
            except StopIteration:
                return


@dataclass
class ChunkedBatches(IterableDataset):
    """Endless ``(images, texts)`` batches of ``batch_size``, from chunk ``start_chunk`` on.
    ``skipped`` counts the samples its pipelines skipped (unreadable shards, undecodable samples),
    across DataLoader workers (``train_loop`` logs it)."""

    mixture: Mixture
    batch_size: int
    chunk_batches: int
    seed: int
    start_chunk: int = 0
    skipped: Any = field(default_factory=_skip_count)

    def __iter__(self):
        import torch
        from webdataset.utils import pytorch_worker_info

        rank, _, worker, workers = pytorch_worker_info()
        if self.chunk_batches % workers:
            raise ValueError(f"chunk of {self.chunk_batches} batches does not split over {workers} workers")
        per_worker = self.chunk_batches // workers
        chunk = self.start_chunk
        while True:
            seed_everything(derive_seed(self.seed, "rng", chunk, rank, worker))
            samples = iter(self.mixture.pipeline(derive_seed(self.seed, "data", chunk), self.skipped))
            for _ in range(per_worker):
                images, texts = [], []
                for _ in range(self.batch_size):
                    try:
                        image, text = next(samples)
                    except StopIteration:
                        return
                    images.append(image)
                    texts.append(text)
                yield torch.stack(images), torch.stack(texts)
            chunk += 1


def make_loader(batches: ChunkedBatches, workers: int, *, pin_memory: bool = False):
    """A DataLoader over ``batches`` (already batched: batch_size=None)."""
    import torch
    from torch.utils.data import DataLoader

    kwargs: dict = {}
    if workers > 0:
        kwargs["prefetch_factor"] = 4
    # Our own generator: DataLoader draws its base seed from it instead of the global RNG.
    gen = torch.Generator().manual_seed(derive_seed(batches.seed, "loader", batches.start_chunk))
    return DataLoader(batches, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      generator=gen, **kwargs)


def chunk_iterations(requested: int, accum_freq: int, workers: int) -> int:
    """``requested`` rounded up so that a chunk's batches (iterations × accum_freq) split evenly
    over the DataLoader workers."""
    import math

    w = max(1, workers)
    step = w // math.gcd(w, accum_freq)
    return max(step, int(math.ceil(requested / step) * step))
