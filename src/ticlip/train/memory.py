"""Train from memory: a step's mixture decoded once, batches drawn by seeded index sampling and augmented
as tensors (``ticlip.data.tensor_augment``), instead of re-reading and re-decoding webdataset shards.

``memory_mixture(mixture, ...)`` decides: when the mixture's pairs (this stream's steps and replay
buffers, and every train pair of its pretraining pools) fit under ``TrainConfig.memory_limit_mb``
(estimated from the manifests' counts before anything is read), every image of those pairs is decoded
once into an ``ImageCache`` (RGBA uint8 at the model's resolution) and every caption tokenized once;
otherwise it returns None and the step keeps the webdataset path (``ticlip.train.batches``)
unchanged: a pool too large for the limit sends the whole step to the webdataset path. A buffer keeps
exactly the pairs the webdataset path keeps (``TimeStream.buffer_keys``, the same ranking); a pool's
steps are sources of their own, weighted like the webdataset path's pool pipeline weights them (the
pool's weight split over its steps by their manifest counts).

Decoded pairs live in a process-wide store keyed by the step's shards, the cache side and the
tokenizer, so the next step of a run (Cumulative: every earlier step again) decodes only its new step;
entries the current mixture does not use are dropped when the store outgrows the limit.

``MemoryBatches`` is the counterpart of ``ChunkedBatches``: chunk ``c`` of a step's batch stream is
planned from ``derive_seed(seed, "memory-plan", c)`` alone: per sample a source drawn with the
mixture's weights, and within a source its pairs in seeded random permutations (each pair once per
pass, like the shuffled shards). Under DDP the plan covers the global batch and rank ``r`` takes the
``r``-th slice of each batch; batch ``b``'s augmentation draws from
``derive_seed(seed, "memory-augment", c, b, rank)``. A batch is therefore a function of (seed, chunk,
batch, rank, world size) only — not of DataLoader workers, nor of the global RNGs — and a run resumed
at a chunk boundary sees exactly the batches an uninterrupted one saw.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.utils.data import IterableDataset

from ticlip.data.tensor_augment import ImageCache, TensorAugment, cache_side
from ticlip.train.batches import derive_seed

DATA_PATHS = ("memory", "webdataset")


@dataclass
class DecodedPairs:
    """Pairs of one step decoded so far: ``images[i]`` and ``tokens[i]`` belong to ``keys[i]``."""

    keys: list[str]
    row: dict[str, int]
    images: ImageCache
    tokens: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.tokens.numel() * self.tokens.element_size()


# (shard urls, cache side, tokenizer fingerprint) -> DecodedPairs, least recently used first
_STORE: "collections.OrderedDict[tuple, DecodedPairs]" = collections.OrderedDict()


@dataclass
class MemorySource:
    """One source of a mixture in memory: ``rows`` of ``pairs`` (the kept pairs, in a fixed order)."""

    label: str
    pairs: DecodedPairs
    rows: torch.Tensor
    weight: float
    origin: int = 0  # the mixture source it stands for: a local step's index, or len(steps) + a pool's


def bytes_per_pair(image_size: int, context_length: int) -> int:
    """What the store holds per pair: RGBA pixels, three small per-image records and the tokens."""
    side = cache_side(image_size)
    return 4 * side * side + 2 * 8 + 2 * 8 + 1 + 8 * context_length


def _tokenizer_fingerprint(tokenizer) -> tuple:
    probe = tokenizer(["a probe: 2 emoji 🙂, ünïcode"])
    return type(tokenizer).__module__, type(tokenizer).__qualname__, tuple(probe.shape), tuple(probe.flatten().tolist())


class MemoryMixture:
    """A step's mixture in memory; ``chunk_plan`` and ``batch`` make its batches."""

    def __init__(self, sources: Sequence[MemorySource], augment: TensorAugment):
        self.sources, self.augment = list(sources), augment
        self.probs = source_probs([s.weight for s in self.sources])

    def __len__(self) -> int:
        return sum(len(s.rows) for s in self.sources)

    @property
    def nbytes(self) -> int:
        seen, n = set(), 0
        for s in self.sources:
            if id(s.pairs) not in seen:
                seen.add(id(s.pairs))
                n += s.pairs.nbytes
        return n

    def chunk_plan(self, seed: int, chunk: int, batches: int, per_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, position within the source) of every sample of chunk ``chunk``: two (batches, per_batch)
        tensors, a function of (seed, chunk, shape) only."""
        total = batches * per_batch
        src, g = chunk_sources(self.probs, seed, chunk, total)
        pos = torch.empty(total, dtype=torch.long)
        for k, source in enumerate(self.sources):
            where = (src == k).nonzero().flatten()
            n = len(source.rows)
            if not len(where):
                continue
            passes = math.ceil(len(where) / n)  # each pair once per pass, passes in fresh random orders
            pos[where] = torch.rand(passes, n, generator=g).argsort(1).flatten()[:len(where)]
        return src.view(batches, per_batch), pos.view(batches, per_batch)

    def batch(self, src: torch.Tensor, pos: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, tokens) of the samples (source ``src[i]``, position ``pos[i]``), augmented with ``g``."""
        n = len(src)
        first = self.sources[0].pairs
        side = first.images.pixels.shape[-1]
        cache = ImageCache(torch.empty(n, 4, side, side, dtype=torch.uint8), torch.empty(n, 2, dtype=torch.long),
                           torch.empty(n, 2, dtype=torch.long), torch.empty(n, dtype=torch.bool))
        tokens = torch.empty(n, first.tokens.shape[1], dtype=first.tokens.dtype)
        for k, source in enumerate(self.sources):
            where = (src == k).nonzero().flatten()
            if not len(where):
                continue
            rows = source.rows[pos[where]]
            images = source.pairs.images
            cache.pixels[where] = images.pixels[rows]
            cache.sizes[where] = images.sizes[rows]
            cache.source_sizes[where] = images.source_sizes[rows]
            cache.alpha[where] = images.alpha[rows]
            tokens[where] = source.pairs.tokens[rows]
        return self.augment(cache, g), tokens


def source_probs(weights: Sequence[float]) -> torch.Tensor:
    """The probability of drawing each memory source."""
    total = float(sum(weights))
    return torch.tensor([w / total for w in weights], dtype=torch.float64)


def chunk_sources(probs: torch.Tensor, seed: int, chunk: int, total: int) -> tuple[torch.Tensor, torch.Generator]:
    """The source of each of the ``total`` samples of chunk ``chunk`` (the first draws of the chunk's
    generator), and the generator, which ``chunk_plan`` goes on drawing positions from."""
    g = torch.Generator().manual_seed(derive_seed(seed, "memory-plan", chunk))
    if len(probs) == 1:
        return torch.zeros(total, dtype=torch.long), g
    return torch.multinomial(probs, total, replacement=True, generator=g), g


def memory_sources(mixture: Any) -> list[tuple[Any, Any, float, int | None, int]]:
    """The memory path's sources of ``mixture``, read from the manifests alone: (stream, step, weight,
    pairs kept or None for all, origin) for each local step, then for each step of each pool."""
    out = [(mixture.stream, mixture.stream.step(s), float(w), n, i)
           for i, (s, w, n) in enumerate(zip(mixture.steps, mixture.weights, mixture.counts))]
    for k, pool in enumerate(mixture.pools):
        steps = [pool.stream.step(s) for s in (pool.steps if pool.steps is not None else range(len(pool.stream.steps)))]
        sizes = [max(st.train.count, 1) for st in steps]  # as the pool's train_pipeline weighs its steps
        out += [(pool.stream, st, float(pool.weight) * n / sum(sizes), None, len(mixture.steps) + k)
                for st, n in zip(steps, sizes)]
    return out


def memory_drawn(mixture: Any, seed: int, micro_batches: int, *, chunk_batches: int, global_batch: int) -> list[int]:
    """Pairs drawn from each source of ``mixture`` (local steps, then pools) by the first ``micro_batches``
    global batches of the memory path's batch stream with ``seed`` (``MemoryBatches``): the sources of
    ``chunk_plan``'s samples, replayed from the seed alone (no pair needs to be decoded)."""
    sources = memory_sources(mixture)
    probs = source_probs([w for _, _, w, _, _ in sources])
    out = [0] * (len(mixture.steps) + len(mixture.pools))
    for chunk in range(-(-micro_batches // chunk_batches)):
        taken = min(chunk_batches, micro_batches - chunk * chunk_batches)
        src, _ = chunk_sources(probs, seed, chunk, chunk_batches * global_batch)
        counts = torch.bincount(src[:taken * global_batch], minlength=len(sources)).tolist()
        for (_, _, _, _, origin), n in zip(sources, counts):
            out[origin] += n
    return out


def _decode(stream, st, keys: list[str], side: int, tokenizer) -> tuple[ImageCache, torch.Tensor, list[str]]:
    """Decode the pairs ``keys`` of step ``st`` (read from the shards that hold them)."""
    import webdataset as wds

    from ticlip.data.shards import decode_or_skip, tar_samples
    from ticlip.data.stream import decode_sample

    wanted = set(keys)
    holding = {p.shard for p in stream.train_index(st) if p.key in wanted}
    urls = [u for u in stream.train_urls(st) if u in holding]
    # the webdataset path's readers: an unreadable shard or sample is left out here, and the caller then
    # keeps the step on the webdataset path, which skips and counts it
    pipe = wds.DataPipeline(wds.SimpleShardList(urls), tar_samples(),
                            wds.select(lambda sample: sample.get("__key__") in wanted),
                            decode_or_skip(decode_sample))
    found, images, captions = [], [], []
    for sample in pipe:
        found.append(sample["__key__"])
        images.append(sample["image"])
        captions.append(sample["caption"])
    cache = ImageCache.from_images(images, side)
    tokens = torch.cat([tokenizer(captions[i:i + 1024]) for i in range(0, len(captions), 1024)]) if captions \
        else torch.empty(0, 0, dtype=torch.long)
    return cache, tokens, found


def _pairs_of(stream, st, keys: list[str], side: int, tokenizer, fingerprint: tuple) -> DecodedPairs | None:
    """The store's entry for step ``st`` holding (at least) ``keys``, decoding the missing ones; None when
    a key is not in the step's shards."""
    store_key = (tuple(stream.train_urls(st)), side, fingerprint)
    entry = _STORE.get(store_key)
    missing = [k for k in keys if entry is None or k not in entry.row]
    if missing:
        cache, tokens, found = _decode(stream, st, missing, side, tokenizer)
        if set(found) != set(missing) or len(found) != len(missing):
            return None
        if entry is None:
            entry = DecodedPairs(found, {k: i for i, k in enumerate(found)}, cache, tokens)
        else:
            start = len(entry.keys)
            entry = DecodedPairs(entry.keys + found, {**entry.row, **{k: start + i for i, k in enumerate(found)}},
                                 ImageCache.concat([entry.images, cache]), torch.cat([entry.tokens, tokens]))
        _STORE[store_key] = entry
    _STORE.move_to_end(store_key)
    return entry


def memory_mixture(mixture: Any, *, image_size: int, mean: Sequence[float] | None, std: Sequence[float] | None,
                   limit_mb: float) -> tuple[MemoryMixture | None, str]:
    """``mixture`` (a ``ticlip.train.batches.Mixture``) in memory, or None and why it stays on the
    webdataset path."""
    if not limit_mb or limit_mb <= 0:
        return None, "memory_limit_mb is 0"
    side = cache_side(image_size)
    fingerprint = _tokenizer_fingerprint(mixture.tokenizer)
    per_pair = bytes_per_pair(image_size, fingerprint[2][-1])
    limit = limit_mb * 2**20
    planned = memory_sources(mixture)
    # a first estimate from the manifests, before any shard is read
    estimate = sum((st.train.count if n is None else min(n, st.train.count)) * per_pair for _, st, _, n, _ in planned)
    if estimate > limit:
        pooled = " (with its pools)" if mixture.pools else ""
        return None, f"its pairs{pooled} need about {estimate / 2**20:.0f} MB, over memory_limit_mb {limit_mb:g}"
    picked = []
    for stream, st, w, n, origin in planned:
        if not st.train.shards or not w > 0:
            return None, f"step {st.label!r} has no train shards or no weight"
        keys = [p.key for p in stream.train_index(st)] if n is None else stream.buffer_keys(st, n, mixture.subset_seed)
        if not keys or len(set(keys)) != len(keys):
            return None, f"step {st.label!r} keeps no pair or repeats a key"
        picked.append((stream, st, w, keys, origin))
    actual = sum(len(keys) for *_, keys, _ in picked) * per_pair
    if actual > limit:  # the manifest's counts were low
        return None, f"its pairs need about {actual / 2**20:.0f} MB, over memory_limit_mb {limit_mb:g}"
    sources = []
    for stream, st, w, keys, origin in picked:
        pairs = _pairs_of(stream, st, keys, side, mixture.tokenizer, fingerprint)
        if pairs is None:
            return None, f"step {st.label!r}: some of its pairs could not be read from its shards"
        label = st.label if origin < len(mixture.steps) else f"pool {origin - len(mixture.steps)}: {st.label}"
        sources.append(MemorySource(label, pairs, torch.tensor([pairs.row[k] for k in keys]), float(w), origin))
    _trim_store({id(s.pairs) for s in sources}, limit)
    return MemoryMixture(sources, TensorAugment(image_size, mean=mean, std=std)), ""


def _trim_store(in_use: set[int], limit: float) -> None:
    """Drop the least recently used entries the current mixture does not use while the store is over ``limit``."""
    for key in list(_STORE):
        if sum(e.nbytes for e in _STORE.values()) <= limit:
            return
        if id(_STORE[key]) not in in_use:
            del _STORE[key]


def clear_store() -> None:
    """Forget every decoded pair of this process."""
    _STORE.clear()


@dataclass
class MemoryBatches(IterableDataset):
    """Endless ``(images, texts)`` batches of ``batch_size`` from a ``MemoryMixture``, from chunk
    ``start_chunk`` on (the memory path's ``ChunkedBatches``; see the module docstring)."""

    memory: MemoryMixture
    batch_size: int
    chunk_batches: int
    seed: int
    start_chunk: int = 0

    def __iter__(self):
        from webdataset.utils import pytorch_worker_info

        rank, world, worker, workers = pytorch_worker_info()
        if self.chunk_batches % workers:
            raise ValueError(f"chunk of {self.chunk_batches} batches does not split over {workers} workers")
        b0, b1 = rank * self.batch_size, (rank + 1) * self.batch_size
        chunk = self.start_chunk
        while True:
            src, pos = self.memory.chunk_plan(self.seed, chunk, self.chunk_batches, self.batch_size * world)
            for b in range(worker, self.chunk_batches, workers):
                g = torch.Generator().manual_seed(derive_seed(self.seed, "memory-augment", chunk, b, rank))
                yield self.memory.batch(src[b, b0:b1], pos[b, b0:b1], g)
            chunk += 1


__all__ = ["DATA_PATHS", "MemoryBatches", "MemoryMixture", "MemorySource", "bytes_per_pair", "chunk_sources",
           "clear_store", "memory_drawn", "memory_mixture", "memory_sources", "source_probs"]
