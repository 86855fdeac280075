"""A tiny stream written directly (no builder) for tests and examples: coloured shapes whose
vocabulary changes over steps. Deterministic for a seed; a few hundred pairs in well under a second.
"""

from __future__ import annotations

import os
import random

from ticlip.data.shards import ShardSample, encode_image, sample_key, write_shard
from ticlip.data.stream import ShardSet, Step, TimeStream, library_versions

COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
    "purple": (150, 60, 190), "orange": (240, 140, 30), "black": (20, 20, 20), "cyan": (40, 200, 210),
}
SHAPES = ["square", "circle", "triangle", "cross", "bar", "ring"]


def _draw(shape: str, colour, size: int, rng: random.Random):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    m = rng.randint(2, size // 6)
    box = (m, m, size - m, size - m)
    if shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(size // 2, m), (m, size - m), (size - m, size - m)], fill=colour)
    elif shape == "cross":
        w = size // 6
        d.rectangle((size // 2 - w, m, size // 2 + w, size - m), fill=colour)
        d.rectangle((m, size // 2 - w, size - m, size // 2 + w), fill=colour)
    elif shape == "bar":
        d.rectangle((m, size // 3, size - m, 2 * size // 3), fill=colour)
    else:
        d.ellipse(box, outline=colour, width=max(2, size // 8))
    return img


def make_toy_stream(
    out: str,
    *,
    steps: int = 4,
    train_per_step: int = 64,
    eval_per_step: int = 16,
    validation_per_step: int = 16,
    image_size: int = 32,
    seed: int = 0,
    shard_size: int = 32,
) -> TimeStream:
    """Write a toy stream of ``steps`` yearly steps (2019, 2020, ...) to ``out`` and return it.

    Step k draws shapes from a window of the shape list that slides by one per step, so later
    steps hold concepts earlier ones never saw. Each step also gets ``validation_per_step`` validation
    pairs (``steps/<k>/validation-000000.tar``; 0: none, as in streams built without validation sets),
    drawn from their own random generator so the train and eval pairs do not depend on them.
    """
    rng = random.Random(seed)
    val_rng = random.Random(f"{seed}/validation")
    colours = list(COLOURS)
    step_objs = []
    for k in range(steps):
        year = 2019 + k
        shapes = [SHAPES[(k + i) % len(SHAPES)] for i in range(3)]
        sets = {}
        parts = [("train", train_per_step, rng), ("eval", eval_per_step, rng)]
        if validation_per_step:
            parts.append(("validation", validation_per_step, val_rng))
        for part, n, part_rng in parts:
            samples = []
            for i in range(n):
                shape, colour = part_rng.choice(shapes), part_rng.choice(colours)
                img = _draw(shape, COLOURS[colour], image_size, part_rng)
                ext, data = encode_image(img)
                uid = f"toy-{k}-{part}-{i}"
                samples.append(
                    ShardSample(sample_key(uid), ext, data, f"a {colour} {shape}",
                                {"uid": uid, "timestamp": f"{year}-06-01", "step": str(year)})
                )
            names = []
            for j in range(0, len(samples), shard_size):
                rel = os.path.join("steps", str(k), f"{part}-{j // shard_size:06d}.tar")
                write_shard(os.path.join(out, rel), samples[j:j + shard_size])
                names.append(rel)
            sets[part] = ShardSet(names, len(samples))
        step_objs.append(
            Step(k, str(year), f"{year}-01-01", f"{year}-12-31", [str(year)], sets["train"],
                 {"retrieval": sets["eval"]}, sets.get("validation"))
        )
    stream = TimeStream(
        root=os.path.abspath(out), name="toy", granularity="year", steps=step_objs,
        provenance={"source": "toy", "seed": seed, "versions": library_versions()},
    )
    stream.save()
    return stream
