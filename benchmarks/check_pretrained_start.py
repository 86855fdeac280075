"""Zero-shot accuracy of a starting model on packaged classification sets, against chance.

Scores a checkpoint (by default one made here with `ticlip model make-start`) on tasks the start
was not aligned on: scikit-learn digits (8x8 handwritten digits), Fashion-MNIST (Debian
dataset-fashion-mnist; skipped with a note when not installed) and, as a seen-pool reference, emoji
groups (the emoji pool's own images, so not held out). Uses ticlip's eval loaders, templates,
transform and scorer, so the numbers match `ticlip eval`.

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/check_pretrained_start.py \
        [--init starts/start.pt] [--model ticlip-minilm-lite0] [--max-samples 2000] [--build-args ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

TASKS = [  # (name, loader, templates, held out from the emoji pool)
    ("digits", "sklearn_digits", "digits", True),
    ("fashion-mnist", "fashion_mnist", "photo", True),
    ("emoji-groups", "emoji_groups", "emoji", False),
]


def score(bundle, loader: str, template_spec: str, max_samples: int) -> tuple[float, int, int]:
    import numpy as np

    from ticlip.eval import static
    from ticlip.eval.encode import encode_pixels, eval_transform, images_to_pixels
    from ticlip.eval.zeroshot import build_classifier, templates, zero_shot_accuracy

    options = {"source": "render"} if loader == "emoji_groups" else {}
    data = static.LOADERS[loader](options, static.LoaderContext())
    n = len(data.dataset)
    idx = np.random.default_rng(0).permutation(n)[:max_samples] if n > max_samples else np.arange(n)
    items = [data.dataset[int(i)] for i in idx]
    pixels = images_to_pixels([im for im, _ in items], eval_transform(bundle))
    feats = encode_pixels(bundle.model, pixels)
    classifier = build_classifier(bundle.model, bundle.tokenizer, data.classnames, templates(template_spec))
    acc = zero_shot_accuracy(feats, [y for _, y in items], classifier, ks=(1,))
    return acc["acc1"], len(items), len(data.classnames)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", help="checkpoint to score (default: build one with make-start in a temp dir)")
    parser.add_argument("--model", default="ticlip-minilm-lite0")
    parser.add_argument("--max-samples", type=int, default=2000, help="images per task (a seeded sample)")
    parser.add_argument("--steps", type=int, default=None, help="make-start --steps when building")
    args = parser.parse_args(argv)

    from ticlip.errors import TiclipError
    from ticlip.eval.static import TaskDataMissing
    from ticlip.eval.stats import above_chance, classification_chance
    from ticlip.models import create_model, quiet_open_clip

    init = args.init
    if init is None:
        from ticlip.pretrained import StartConfig, make_start

        init = os.path.join(tempfile.mkdtemp(prefix="ticlip-start-"), "start.pt")
        extra = {"steps": args.steps} if args.steps else {}
        make_start(StartConfig(out=init, **extra))
    with quiet_open_clip():
        bundle = create_model(args.model, init)
    print(f"{'task':<14} {'held out':>8} {'n':>6} {'classes':>7} {'acc1':>7} {'chance':>7}  above chance (binomial, p<0.05)")
    for name, loader, tmpl, held_out in TASKS:
        t0 = time.perf_counter()
        try:
            acc, n, classes = score(bundle, loader, tmpl, args.max_samples)
        except (TaskDataMissing, TiclipError) as e:
            print(f"{name:<14} skipped: {e}")
            continue
        chance = classification_chance(classes)
        verdict = above_chance(acc, chance, n)
        print(f"{name:<14} {'yes' if held_out else 'no':>8} {n:>6} {classes:>7} {acc:>7.3f} {chance:>7.3f}  "
              f"{verdict} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
