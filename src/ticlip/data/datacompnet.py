"""TiC-DataCompNet eval sets: each step's listed pairs labelled with their ImageNet class.

TiC-DataCompNet (Garg et al., ICLR 2024, §2.3 "Evaluation tasks"; apple/ml-tic-clip
``tic-datacompnet_year2uids.pkl``, year → WordNet synset → uids) is a per-year zero-shot classification
benchmark: its images are DataComp pairs whose caption names an ImageNet-1k class, labelled with that
class's synset (``generate_datacompnet_uid2classid.py`` maps the synsets to ImageNet class ids 0..999).

When a build's ``eval_uids`` file is such a list, the eval pairs of every step are the listed uids
(``ticlip.data.build.plan``) and, after the image pass, ``add_datacompnet_sets`` copies the step's
``retrieval`` eval pairs that carry a synset, image bytes untouched, into a second eval set
``datacompnet`` whose samples' metadata gains ``class_index`` (the ImageNet index, timm's synset order,
the order of the release's class-id mapping), ``synset`` and ``classname`` (open_clip's ImageNet class
name, the name the zero-shot classifier prompts with). That is the layout of ``ticlip data classify``'s
caption-derived ``classification`` sets, so the evaluator's ``dynamic_classification`` kind scores it
(task ``datacompnet`` in eval/tasklist.yaml: zero-shot top-1 over the ImageNet classes present in the
stream's sets, per step, with its chance level).
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from ticlip.atomic import write_json_atomic
from ticlip.data.imagenet_classes import imagenet_wnids
from ticlip.data.shards import ShardSample, sample_key, tar_samples, write_shard
from ticlip.data.stream import IMAGE_KEYS, ShardSet, StreamError, TimeStream
from ticlip.data.tic_formats import FormatError, read_eval_uid_synsets

EVAL_SET = "datacompnet"
SOURCE_SET = "retrieval"  # the build's eval set (ticlip.data.build.config.EVAL_TASK)


def imagenet_labels(wnids) -> dict[str, tuple[int, str]]:
    """synset id → (ImageNet class index, open_clip class name) for every id in ``wnids``; an id that is
    not one of ImageNet-1k's 1000 synsets is a FormatError (TiC-DataCompNet only lists those)."""
    from open_clip import IMAGENET_CLASSNAMES

    index = {w: i for i, w in enumerate(imagenet_wnids())}
    unknown = sorted(set(wnids) - set(index))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise FormatError(f"synset {unknown[0]}{more} is not an ImageNet-1k class; TiC-DataCompNet's "
                          "year -> synset -> uids lists use ImageNet-1k synsets only")
    return {w: (index[w], IMAGENET_CLASSNAMES[index[w]]) for w in set(wnids)}


def _raw_samples(urls: list[str]):
    """Undecoded samples (bytes per extension), so images are copied byte for byte."""
    import webdataset as wds

    if not urls:
        return
    yield from wds.DataPipeline(wds.SimpleShardList(urls), tar_samples())


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")


def add_datacompnet_sets(stream: TimeStream, synsets: Mapping[str, str], *, shard_size: int,
                         eval_uids: str | None = None) -> dict:
    """Write a ``datacompnet`` eval set beside each step's ``retrieval`` set (its pairs whose uid has a
    synset in ``synsets``, uid → synset id) and add it to ``stream`` (not saved here). A step with no
    labelled pair gets no set. Returns the per-step counts, also recorded as ``provenance["datacompnet"]``."""
    labels = imagenet_labels(synsets.values())
    counts = {}
    for st in stream.steps:
        src = st.eval.get(SOURCE_SET)
        kept: list[ShardSample] = []
        total = 0
        for s in _raw_samples([stream.resolve(u) for u in src.shards] if src else []):
            total += 1
            meta = json.loads(s.get("json", b"{}") or b"{}")
            wnid = synsets.get(str(meta.get("uid", "")).lower())
            if wnid is None:
                continue  # a pair that stood in for a listed one whose image failed the checks
            ext = next((k for k in IMAGE_KEYS if k in s), None)
            if ext is None:
                raise StreamError(f"sample {s.get('__key__')!r} in step {st.label} has no image")
            index, classname = labels[wnid]
            meta.update({"class_index": index, "synset": wnid, "classname": classname})
            kept.append(ShardSample(s["__key__"] or sample_key(meta["uid"]), ext, s[ext], _text(s.get("txt")), meta))
        counts[st.label] = {"eval": total, "labelled": len(kept),
                            "classes": len({k.meta["class_index"] for k in kept})}
        if not kept:
            continue
        rel_dir = os.path.dirname(src.shards[0])
        names, sizes = [], {}
        for j in range(0, len(kept), shard_size):
            name = f"eval-{EVAL_SET}-{j // shard_size:06d}.tar"
            sizes[name] = write_shard(os.path.join(stream.root, rel_dir, name), kept[j:j + shard_size])
            names.append(os.path.join(rel_dir, name))
        st.eval[EVAL_SET] = ShardSet(names, len(kept))
        _add_sizes(os.path.join(stream.root, rel_dir, "sizes.json"), sizes)
    stream.provenance[EVAL_SET] = {
        "source_set": SOURCE_SET, "eval_uids": eval_uids, "labelled_uids": len(synsets),
        "class_index": "ImageNet-1k index (timm's imagenet_synsets.txt order)",
        "classname": "open_clip.IMAGENET_CLASSNAMES", "counts": counts,
    }
    return counts


def _add_sizes(path: str, sizes: dict) -> None:
    """Add the new shards to the step's ``sizes.json`` (shard name → pairs), as the builder lists its own."""
    old = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    write_json_atomic(path, {**old, **sizes})


def add_datacompnet_from_eval_uids(stream: TimeStream, eval_uids: str, *, shard_size: int) -> dict | None:
    """``add_datacompnet_sets`` with the synsets of a build's ``eval_uids`` file; None (nothing done)
    when the file lists no synsets (TiC-DataComp-Retrieval's year → uids, ``.npy`` files, text)."""
    synsets = read_eval_uid_synsets(eval_uids)
    if not synsets:
        return None
    return add_datacompnet_sets(stream, synsets, shard_size=shard_size, eval_uids=os.path.abspath(eval_uids))


__all__ = ["EVAL_SET", "add_datacompnet_from_eval_uids", "add_datacompnet_sets", "imagenet_labels"]
