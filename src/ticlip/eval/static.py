"""Loaders for static evaluation data kept on local disk (or shipped by a package).

Each loader takes the task's options (paths already expanded) and a :class:`LoaderContext`, and
returns :class:`ClassificationData` or :class:`RetrievalData`, or raises :class:`TaskDataMissing`
with one line saying what is missing and how to get it (the runner prints it and goes on).

Images are read lazily where sets can be large (ImageFolder, webdataset, image files); small sets
are held in memory.
"""

from __future__ import annotations

import csv
import glob
import gzip
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ticlip.errors import TiclipError

FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
DIGIT_NAMES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class TaskDataMissing(TiclipError):
    """A static task's data is not on this machine; the message says where it was looked for."""


@dataclass
class LoaderContext:
    data_dir: str | None = None
    stream: Any = None  # the run's TimeStream, for tasks cut from it (emoji groups)


@dataclass
class ClassificationData:
    """``dataset`` yields (PIL image, label index): a map-style dataset (len/getitem) or an iterable."""

    classnames: list[str]
    dataset: Any
    templates: list | None = None  # the dataset's own templates (wds layout), if any
    size: int | None = None


@dataclass
class RetrievalData:
    """Images (a map-style dataset of PIL images) and captions, ``text_to_image[i]`` = caption i's image."""

    images: Any
    captions: list[str]
    text_to_image: list[int] = field(default_factory=list)


class ArrayImages:
    """A map-style dataset over a uint8 array (N, H, W) or (N, H, W, 3) with labels: PIL on access."""

    def __init__(self, pixels: np.ndarray, labels: Sequence[int]):
        self.pixels, self.labels = pixels, np.asarray(labels)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i):
        from PIL import Image

        return Image.fromarray(self.pixels[i]).convert("RGB"), int(self.labels[i])


class ListImages:
    """A map-style dataset over in-memory items."""

    def __init__(self, items: Sequence):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class ImageFiles:
    """A map-style dataset of image files, opened on access."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.open(self.paths[i])
        img.load()
        return img


def _subset(data: ClassificationData, max_samples: int | None, seed: int = 0) -> ClassificationData:
    """A fixed random subset of a map-style dataset (same for every model and run)."""
    n = len(data.dataset) if hasattr(data.dataset, "__len__") else None
    if not max_samples or n is None or n <= max_samples:
        return data
    import torch

    idx = np.sort(np.random.default_rng(seed).choice(n, size=int(max_samples), replace=False))
    data.dataset = torch.utils.data.Subset(data.dataset, idx.tolist())
    data.size = int(max_samples)
    return data


# ------------------------------------------------------------------------------------ loaders
def _read_idx(path: str) -> np.ndarray:
    """An MNIST-format IDX file (gzipped or not) as a uint8 array. Hand-written: the format is a
    16-line affair and torchvision's reader wants its own folder layout and file names."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise TiclipError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(options: dict, ctx: LoaderContext) -> ClassificationData:
    root = options.get("root", "/usr/share/datasets/fashion-mnist")
    prefix = {"test": "t10k", "train": "train"}.get(options.get("split", "test"))
    if prefix is None:
        raise TiclipError(f"fashion-mnist: split must be test or train, got {options.get('split')!r}")
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = [p for p in (os.path.join(root, f"{prefix}-{kind}.gz"), os.path.join(root, f"{prefix}-{kind}")) if os.path.exists(p)]
        if not found:
            raise TaskDataMissing(
                f"no Fashion-MNIST in {root} (install the Debian package dataset-fashion-mnist, "
                "e.g. scripts/install-system-deps.sh, or set the task's root option)"
            )
        paths.append(found[0])
    images, labels = _read_idx(paths[0]), _read_idx(paths[1])
    if len(images) != len(labels):
        raise TiclipError(f"Fashion-MNIST in {root}: {len(images)} images but {len(labels)} labels")
    return ClassificationData(list(FASHION_MNIST_CLASSES), ArrayImages(images, labels), size=len(labels))


def load_sklearn_digits(options: dict, ctx: LoaderContext) -> ClassificationData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TaskDataMissing("scikit-learn is not installed (pip install scikit-learn)") from None
    d = load_digits()
    # 0..16 ink levels -> white digits on black, as MNIST draws them.
    pixels = np.clip(np.asarray(d.images) * (255.0 / 16.0), 0, 255).astype(np.uint8)
    return ClassificationData(list(DIGIT_NAMES), ArrayImages(pixels, d.target), size=len(d.target))


def _meta_group(meta: dict) -> str | None:
    g = meta.get("group")
    if g is None and isinstance(meta.get("extra"), dict):
        g = meta["extra"].get("group")
    return str(g) if g else None


def load_emoji_groups(options: dict, ctx: LoaderContext) -> ClassificationData:
    """Emoji → Unicode group ("Smileys & Emotion", "Animals & Nature", ...).

    ``source: stream`` (default ``auto`` tries it first): the held-out pairs of every step of the
    run's stream whose metadata has a ``group`` (the emoji stream's), so no model was trained on them;
    ``source: render``: every emoji the font covers, rendered with ticlip's emoji source helpers.
    """
    source = options.get("source", "auto")
    eval_set = options.get("eval_set", "retrieval")
    stream = ctx.stream
    if source in ("auto", "stream") and stream is not None and eval_set in stream.eval_tasks():
        items, seen = [], set()
        for st in stream.steps:
            if eval_set not in st.eval:
                continue
            es = stream.eval_set(st, eval_set)
            for img, meta in zip(es.images, es.meta):
                g, uid = _meta_group(meta), meta.get("uid")
                if g is None or (uid is not None and uid in seen):
                    continue
                seen.add(uid)
                items.append((img, g))
        if items:
            return _grouped(items)
        if source == "stream":
            raise TaskDataMissing(f"no eval sample of stream {stream.name!r} has an emoji group (build the emoji stream)")
    if source not in ("auto", "stream", "render"):
        raise TiclipError(f"emoji-groups: source must be auto, stream or render, got {source!r}")
    if source == "stream":
        raise TaskDataMissing("emoji-groups with source: stream needs a run's stream")
    try:
        from ticlip.data.sources.emoji import EmojiRenderer, emoji_entries, emoji_group, find_font
    except ImportError as e:
        raise TaskDataMissing(f"ticlip's emoji source is unavailable ({e})") from None
    try:
        renderer = EmojiRenderer(find_font(options.get("font")))
        entries = emoji_entries()
    except (TiclipError, ImportError) as e:
        raise TaskDataMissing(f"cannot render emoji: {e}") from None
    items = []
    for entry in entries:
        g = emoji_group(entry.char)
        if g is None:
            continue
        img, _ = renderer.render(entry.char)
        if img is not None:
            items.append((img, g))
    if not items:
        raise TaskDataMissing("no emoji could be rendered with a group")
    return _grouped(items)


def _grouped(items: list[tuple[Any, str]]) -> ClassificationData:
    names = sorted({g for _, g in items})
    index = {g: i for i, g in enumerate(names)}
    # Group names as the text encoder reads them: "Smileys & Emotion" -> "smileys and emotion".
    classnames = [g.replace("&", "and").lower() for g in names]
    return ClassificationData(classnames, ListImages([(img, index[g]) for img, g in items]), size=len(items))


def _imagenet_names_for(folders: list[str]) -> list[str] | None:
    """open_clip's ImageNet class names for folders named by synset id ("n01440764") or by class
    index ("0".."999"); None when the folders are neither."""
    from open_clip import IMAGENET_CLASSNAMES

    if all(f.isdigit() and int(f) < len(IMAGENET_CLASSNAMES) for f in folders):
        return [IMAGENET_CLASSNAMES[int(f)] for f in folders]
    from ticlip.data.imagenet_classes import imagenet_wnids

    index = {w: i for i, w in enumerate(imagenet_wnids())}
    if all(f in index for f in folders):
        return [IMAGENET_CLASSNAMES[index[f]] for f in folders]
    return None


def load_image_folder(options: dict, ctx: LoaderContext) -> ClassificationData:
    """torchvision's ImageFolder (root/<class>/<image>): class names are the folder names with
    '_' read as spaces, or ``classnames: imagenet`` (folders named by synset id or class index),
    or ``classnames: FILE`` (one name per line, in sorted-folder order)."""
    root = options.get("root")
    if not root or not os.path.isdir(root):
        raise TaskDataMissing(f"no image folder at {root} (one sub-folder per class; set the task's root or --data-dir)")
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(root, loader=_open_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise TaskDataMissing(f"image folder {root} holds no images: {e}") from None
    folders = list(ds.classes)
    spec = options.get("classnames")
    if spec == "imagenet":
        names = _imagenet_names_for(folders)
        if names is None:
            raise TiclipError(f"{root}: classnames: imagenet needs folders named by synset id (n01440764) or class index")
    elif spec:
        names = _read_lines(spec)
        if len(names) != len(folders):
            raise TiclipError(f"{spec} has {len(names)} class names for {len(folders)} folders in {root}")
    else:
        names = [f.replace("_", " ") for f in folders]
    return ClassificationData(names, ds, size=len(ds))


def _open_image(path: str):
    from PIL import Image

    img = Image.open(path)
    img.load()
    return img


def _read_lines(path: str) -> list[str]:
    if not os.path.exists(path):
        raise TaskDataMissing(f"no file {path}")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_wds(options: dict, ctx: LoaderContext) -> ClassificationData:
    """CLIP_benchmark's webdataset layout: ``root/classnames.txt``, optional
    ``root/zeroshot_classification_templates.txt`` and ``root/<split>/*.tar`` whose samples have an
    image (webp/png/jpg) and ``cls`` (the class index)."""
    import webdataset as wds

    root = options.get("root")
    split = options.get("split", "test")
    classnames_file = os.path.join(str(root), "classnames.txt")
    shards = sorted(glob.glob(os.path.join(str(root), split, "*.tar")))
    if not root or not os.path.exists(classnames_file) or not shards:
        raise TaskDataMissing(
            f"no CLIP_benchmark webdataset at {root} (needs classnames.txt and {split}/*.tar; "
            "set the task's root or --data-dir)"
        )
    names = _read_lines(classnames_file)
    tfile = os.path.join(root, "zeroshot_classification_templates.txt")
    tmpl = _read_lines(tfile) if os.path.exists(tfile) else None
    ds = (
        wds.WebDataset(shards, shardshuffle=False, empty_check=False, nodesplitter=wds.split_by_node)
        .decode("pil")
        .to_tuple("webp;png;jpg;jpeg", "cls")
    )
    return ClassificationData(names, ds, templates=tmpl)


def _read_captions(path: str) -> list[tuple[str, str]]:
    """(image file name, caption) pairs from JSON ([{"image", "caption"|"captions"}], caption a
    string or a list), a Flickr30k token file ("name.jpg#0<TAB>caption") or a CSV/TSV/'|'-separated
    table with image and caption columns (names like image, image_name, filename / caption, comment)."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict):
            data = data.get("images") or data.get("annotations") or list(data.values())
        out = []
        for row in data:
            image = row.get("image") or row.get("filename") or row.get("file_name")
            caps = row.get("caption", row.get("captions", row.get("sentences", [])))
            for c in [caps] if isinstance(caps, str) else caps:
                out.append((str(image), c if isinstance(c, str) else str(c.get("raw", c))))
        return out
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and "\t" in lines[0] and "#" in lines[0].split("\t")[0]:
        return [(line.split("\t", 1)[0].rsplit("#", 1)[0], line.split("\t", 1)[1].strip()) for line in lines]
    dialect = csv.Sniffer().sniff(lines[0], delimiters=",\t|")
    rows = list(csv.reader(lines, dialect))
    header = [h.strip().lower() for h in rows[0]]
    img_col = next((i for i, h in enumerate(header) if h in ("image", "image_name", "filename", "file_name", "file")), None)
    cap_col = next((i for i, h in enumerate(header) if h in ("caption", "comment", "text", "sentence")), None)
    if img_col is None or cap_col is None:
        raise TiclipError(f"{path}: needs a header with an image column and a caption column, got {rows[0]}")
    return [(r[img_col].strip(), r[cap_col].strip()) for r in rows[1:] if len(r) > max(img_col, cap_col)]


def load_image_captions(options: dict, ctx: LoaderContext) -> RetrievalData:
    """A retrieval set given as an images folder and a captions file (several captions per image allowed)."""
    images_dir, captions = options.get("images"), options.get("captions")
    if not images_dir or not os.path.isdir(images_dir) or not captions or not os.path.exists(captions):
        raise TaskDataMissing(f"no retrieval set at images={images_dir} captions={captions} (set the task's options or --data-dir)")
    pairs = _read_captions(captions)
    index: dict[str, int] = {}
    paths, texts, owner = [], [], []
    missing = 0
    for name, caption in pairs:
        path = os.path.join(images_dir, name) if not os.path.isabs(name) else name
        if not os.path.exists(path):
            path = os.path.join(images_dir, os.path.basename(name))
        if not os.path.exists(path):
            missing += 1
            continue
        if path not in index:
            index[path] = len(paths)
            paths.append(path)
        texts.append(caption)
        owner.append(index[path])
    if not texts:
        raise TaskDataMissing(f"none of the {len(pairs)} images named in {captions} is in {images_dir}")
    if missing:
        raise TiclipError(
            f"{missing} of {len(pairs)} captions in {captions} name images missing from {images_dir}: "
            "fix the folder or the captions file (a partial set would not be comparable)"
        )
    return RetrievalData(ImageFiles(paths), texts, owner)


def load_stream_task(options: dict, ctx: LoaderContext) -> ClassificationData:
    """A held-out task of the run's task stream (its eval set ``task``; ``ticlip.eval.task_scores``)."""
    if ctx.stream is None or not getattr(ctx.stream, "held_out", None):
        raise TaskDataMissing("the stream has no held-out tasks (build a task stream: docs/DATA.md)")
    st = ctx.stream.held_out_task(str(options.get("task")))
    es = ctx.stream.eval_set(st, "task")
    return ClassificationData(list(st.classes), ListImages(list(zip(es.images, [int(m["class_index"]) for m in es.meta]))),
                              [st.template] if st.template else None, len(es))


LOADERS: dict[str, Callable[[dict, LoaderContext], Any]] = {
    "fashion_mnist": load_fashion_mnist,
    "sklearn_digits": load_sklearn_digits,
    "emoji_groups": load_emoji_groups,
    "image_folder": load_image_folder,
    "wds": load_wds,
    "image_captions": load_image_captions,
    "stream_task": load_stream_task,
}

# The task kind each loader's data serves (a task table entry must agree).
LOADER_KINDS: dict[str, str] = {
    "fashion_mnist": "zeroshot_classification",
    "sklearn_digits": "zeroshot_classification",
    "emoji_groups": "zeroshot_classification",
    "image_folder": "zeroshot_classification",
    "wds": "zeroshot_classification",
    "image_captions": "retrieval",
    "stream_task": "zeroshot_classification",
}

PATH_OPTIONS = ("root", "images", "captions", "classnames", "font")


def resolve_path(value: str, data_dir: str | None = None) -> str:
    """Expand {data_dir}, ~ and $VARS in a path option."""
    base = data_dir or os.environ.get("TICLIP_DATA_DIR") or "data"
    return os.path.expanduser(os.path.expandvars(str(value).replace("{data_dir}", base)))


def load_task_data(spec, ctx: LoaderContext):
    """Run ``spec``'s loader (a TaskSpec: ``loader``, ``options``) with its path options expanded;
    applies ``max_samples`` if given."""
    options = dict(spec.options)
    for k in PATH_OPTIONS:
        if k in options and isinstance(options[k], str) and not (k == "classnames" and options[k] == "imagenet"):
            options[k] = resolve_path(options[k], ctx.data_dir)
    max_samples = options.pop("max_samples", None)
    data = LOADERS[spec.loader](options, ctx)
    if isinstance(data, ClassificationData):
        data = _subset(data, max_samples)
    return data


__all__ = [
    "ArrayImages",
    "ClassificationData",
    "ImageFiles",
    "LOADERS",
    "LOADER_KINDS",
    "LoaderContext",
    "RetrievalData",
    "TaskDataMissing",
    "load_task_data",
    "resolve_path",
]
