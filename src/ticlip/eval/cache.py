"""What the evaluator keeps so that nothing is read, preprocessed or encoded twice; one typed store each:

- :class:`EvalSets`: a stream's eval sets, each read from its shards once per run, and their uid indexes;
- :class:`StaticSets`: static task data, each read once per run (``None`` when missing on this machine);
- :class:`PixelCache`: preprocessed pixels of eval sets, kept across a run's models within a byte budget
  (every checkpoint of a run has the same model name, so the same transform);
- :class:`FeatureCache`: one model's image and text features per set and its zero-shot classifiers,
  encoded on first use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ticlip.eval.encode import encode_image_dataset, encode_pixels, encode_texts, images_to_pixels, pixel_bytes
from ticlip.eval.static import LoaderContext, TaskDataMissing, load_task_data
from ticlip.eval.zeroshot import build_classifier, templates

SetKey = tuple  # ("dynamic", eval set name, step index) or ("static", task name)


class EvalSets:
    """A stream's eval sets, each read once per run."""

    def __init__(self, stream):
        self.stream = stream
        self._sets: dict[tuple[str, int], Any] = {}
        self._uid_index: dict[tuple[str, int], dict[str, int] | None] = {}

    def get(self, name: str, step: int):
        key = (name, step)
        if key not in self._sets:
            self._sets[key] = self.stream.eval_set(step, name)
        return self._sets[key]

    def skipped(self, name: str, step: int) -> dict[str, int]:
        """Samples of a loaded eval set that could not be read (truncated shard, corrupt image), by
        reason: they are left out of the set and counted, not fatal (empty when none)."""
        loaded = self._sets.get((name, step))
        return dict(getattr(loaded, "skipped", None) or {})

    def has_pairs(self, name: str, step) -> bool:
        """Whether ``step`` (a stream Step) has a non-empty eval set ``name`` (`ticlip data classify`
        writes empty ones for steps where no caption names a class: those cells of E stay empty)."""
        shards = step.eval.get(name)
        if shards is None or not shards.shards:
            return False
        return shards.count > 0 or len(self.get(name, step.index)) > 0

    def size(self, name: str, step: int) -> int:
        count = self.stream.steps[step].eval[name].count
        return count if count > 0 else len(self.get(name, step))

    def uids(self, name: str, step: int) -> list[str] | None:
        """The samples' uids, or None when some lack one or two share one."""
        uids = [m.get("uid") for m in self.get(name, step).meta]
        return None if any(u is None for u in uids) or len(set(uids)) != len(uids) else [str(u) for u in uids]

    def uid_index(self, name: str, step: int) -> dict[str, int] | None:
        key = (name, step)
        if key not in self._uid_index:
            uids = self.uids(name, step)
            self._uid_index[key] = None if uids is None else {u: i for i, u in enumerate(uids)}
        return self._uid_index[key]


class StaticSets:
    """Static task data, read once per run; a task whose data is missing is reported through ``skip``
    and holds None. The time spent reading is charged to the task's first result (``take_load_time``)."""

    def __init__(self, data_dir: str | None, stream, skip: Callable[[str, str], None]):
        self.context = LoaderContext(data_dir=data_dir, stream=stream)
        self.skip = skip
        self._data: dict[str, Any] = {}
        self._load_s: dict[str, float] = {}

    def get(self, spec):
        if spec.name not in self._data:
            t0 = time.perf_counter()
            try:
                self._data[spec.name] = load_task_data(spec, self.context)
                self._load_s[spec.name] = time.perf_counter() - t0
            except TaskDataMissing as e:
                self._data[spec.name] = None
                self.skip(spec.name, str(e))
        return self._data[spec.name]

    def take_load_time(self, name: str) -> float:
        """Seconds spent reading task ``name``'s data, once (0 afterwards)."""
        return self._load_s.pop(name, 0.0)


@dataclass
class CachedPixels:
    pixels: torch.Tensor  # (N, 3, H, W)
    labels: torch.Tensor | None = None  # class indices of a labelled set


class PixelCache:
    """Preprocessed pixels keyed by (model name, image size, *set key), within ``budget`` bytes (labels
    are not counted). A set that does not fit is not kept: callers stream it instead."""

    def __init__(self, budget: int):
        self.budget = int(budget)
        self.used = 0
        self._entries: dict[tuple, CachedPixels] = {}

    def __contains__(self, key: tuple) -> bool:
        return key in self._entries

    def get(self, key: tuple) -> CachedPixels | None:
        return self._entries.get(key)

    def fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.budget

    def put(self, key: tuple, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> CachedPixels:
        entry = CachedPixels(pixels, labels)
        self._entries[key] = entry
        self.used += pixels.numel() * pixels.element_size()
        return entry

    def images(self, key: tuple, images: Sequence, transform, *, batch_size: int, workers: int) -> torch.Tensor | None:
        """Pixels of a sequence of images: cached, or preprocessed now and kept when they fit (else None)."""
        entry = self._entries.get(key)
        if entry is not None:
            return entry.pixels
        if not self.fits(pixel_bytes(images, transform)):
            return None
        return self.put(key, images_to_pixels(images, transform, batch_size=batch_size, workers=workers)).pixels

    def labelled(self, key: tuple, dataset, transform, *, batch_size: int, workers: int) -> CachedPixels | None:
        """Pixels and labels of a map-style (image, label) dataset: cached, or preprocessed now and kept
        when they fit (else None: iterable datasets and sets over budget are streamed by the caller)."""
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            return None
        n = len(dataset)
        if not n or not self.fits(pixel_bytes([dataset[0]], transform) * n):
            return None
        loader = torch.utils.data.DataLoader(_Transformed(dataset, transform), batch_size=batch_size, num_workers=workers)
        batches = list(loader)
        return self.put(key, torch.cat([b[0] for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches]))


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, ds, transform):
        self.ds, self.transform = ds, transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img, y = self.ds[i]
        return self.transform(img), int(y)


@dataclass
class FeatureCache:
    """One model's features, encoded on first use: image features per set key (dynamic sets also by
    uid from another set of the same step, see ``dynamic_images``), text features per set key, and
    zero-shot classifiers by name. Pixels come from the run's :class:`PixelCache`."""

    model: Any
    tokenizer: Callable
    transform: Callable
    model_key: tuple  # (model name, image size): the part of a pixel key that names the transform
    pixels: PixelCache
    batch_size: int = 256
    device: str = "cpu"
    workers: int = 0
    on_encoded: Callable[[int], None] | None = None  # called with the images or texts of each batch (progress)
    images: dict[SetKey, torch.Tensor] = field(default_factory=dict)
    texts: dict[SetKey, torch.Tensor] = field(default_factory=dict)
    classifiers: dict[str, torch.Tensor] = field(default_factory=dict)

    def encode_images(self, key: SetKey, images: Sequence) -> torch.Tensor:
        """Features of a sequence of images (not stored: callers store what they reuse)."""
        px = self.pixels.images(self.model_key + key, images, self.transform, batch_size=self.batch_size, workers=self.workers)
        if px is not None:
            return encode_pixels(self.model, px, batch_size=self.batch_size, device=self.device, on_batch=self.on_encoded)
        feats, _ = encode_image_dataset(self.model, images, self.transform, batch_size=self.batch_size,
                                        device=self.device, workers=self.workers, on_batch=self.on_encoded)
        return feats

    def encode_texts(self, captions: Sequence[str]) -> torch.Tensor:
        return encode_texts(self.model, self.tokenizer, captions, batch_size=self.batch_size, device=self.device,
                            on_batch=self.on_encoded)

    def dynamic_images(self, sets, name: str, step: int) -> torch.Tensor:
        """Image features of eval set ``name`` of ``step`` (``sets``: the run's EvalSets). When another
        set of the same step already encoded for this model holds all its samples (by uid), its rows are
        taken from there: `ticlip data classify` cuts the classification set out of the retrieval set,
        so its images need no second pass."""
        key = ("dynamic", name, step)
        if key not in self.images:
            img = self._shared_rows(sets, name, step)
            self.images[key] = img if img is not None else self.encode_images(key, sets.get(name, step).images)
        return self.images[key]

    def _shared_rows(self, sets, name: str, step: int) -> torch.Tensor | None:
        uids = sets.uids(name, step)
        if uids is None:
            return None
        for (kind, *rest), img in self.images.items():
            if kind != "dynamic" or rest[1] != step or rest[0] == name:
                continue
            index = sets.uid_index(rest[0], step)
            if index is not None and all(u in index for u in uids):
                return img[torch.as_tensor([index[u] for u in uids], dtype=torch.long)]
        return None

    def dynamic_texts(self, sets, name: str, step: int) -> torch.Tensor:
        key = ("dynamic", name, step)
        if key not in self.texts:
            self.texts[key] = self.encode_texts(sets.get(name, step).captions)
        return self.texts[key]

    def classifier(self, name: str, classnames: list[str], template_spec) -> torch.Tensor:
        """The zero-shot classifier ``name``, built once per model."""
        if name not in self.classifiers:
            prompts = templates(template_spec)
            self.classifiers[name] = build_classifier(self.model, self.tokenizer, classnames, prompts,
                                                      device=self.device)
            if self.on_encoded is not None:  # open_clip's builder encodes every (class, template) prompt
                self.on_encoded(len(classnames) * len(prompts))
        return self.classifiers[name]

    def labelled_images(self, key: SetKey, dataset) -> tuple[torch.Tensor, list]:
        """(image features, labels) of a static classification set: from cached pixels when the set is
        map-style and fits the budget, else streamed through a DataLoader."""
        entry = self.pixels.labelled(self.model_key + key, dataset, self.transform, batch_size=self.batch_size,
                                     workers=self.workers)
        if entry is not None:
            feats = encode_pixels(self.model, entry.pixels, batch_size=self.batch_size, device=self.device,
                                  on_batch=self.on_encoded)
            return feats, entry.labels.tolist()
        return encode_image_dataset(self.model, dataset, self.transform, batch_size=self.batch_size,
                                    device=self.device, workers=self.workers, on_batch=self.on_encoded)


__all__ = ["CachedPixels", "EvalSets", "FeatureCache", "PixelCache", "SetKey", "StaticSets"]
