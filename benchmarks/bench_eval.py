"""Cost of evaluating one checkpoint against every step and task, ticlip's way, divided by the cost
of the DataComp way (model reloaded, eval set re-read and re-encoded, classifier rebuilt for every
(step, task) pair), both measured in this one run on the same data. Goal: >= 3x for 7 steps.

    python benchmarks/bench_eval.py                       # a 7-step toy stream made here
    python benchmarks/bench_eval.py --stream data/emoji   # an existing stream (e.g. the emoji one)

The stream gets a small "classification" eval set per step when it has none (toy images labelled
with ImageNet classes, as `ticlip data classify` would write them), so the zero-shot classifier's
cost is part of the comparison. Both ways must produce the same numbers; the script checks it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from ticlip.data.shards import ShardSample, encode_image, write_shard
from ticlip.data.stream import ShardSet, TimeStream
from ticlip.eval.encode import encode_pixels, encode_texts, eval_transform, images_to_pixels
from ticlip.eval.retrieval import subsampled_recall
from ticlip.eval.runner import EvalConfig, Evaluator, ModelRef
from ticlip.eval.static import LoaderContext, load_task_data
from ticlip.eval.tasks import load_tasks, select_tasks
from ticlip.eval.zeroshot import build_classifier, templates, zero_shot_accuracy
from ticlip.models import create_model, quiet_open_clip, save_checkpoint

def add_classification_sets(stream: TimeStream, per_step: int, classes: int) -> None:
    """A "classification" set per step cut from its retrieval set (same images and uids, as
    `ticlip data classify` does), labelled with ``classes`` ImageNet classes spread over the 1000."""
    from open_clip import IMAGENET_CLASSNAMES

    chosen = [round(c * 1000 / classes) for c in range(classes)]
    for st in stream.steps:
        es = stream.eval_set(st, "retrieval")
        samples = []
        for i, (img, meta) in enumerate(zip(es.images[:per_step], es.meta)):
            k = chosen[(i * 7 + st.index) % len(chosen)]
            ext, data = encode_image(img)
            samples.append(ShardSample(f"cls{st.index}_{i}", ext, data, IMAGENET_CLASSNAMES[k], dict(meta, class_index=k)))
        rel = f"steps/{st.index}/classification-bench-000000.tar"
        write_shard(os.path.join(stream.root, rel), samples)
        st.eval["classification"] = ShardSet([rel], len(samples))
    stream.save()


def datacomp_way(stream, specs, steps, checkpoint, model_name, config, subsample) -> tuple[dict, float]:
    """One (task, step) pair at a time: load the model, read the data, encode, (build the
    classifier,) score; nothing kept between pairs."""
    from open_clip import IMAGENET_CLASSNAMES

    results = {}
    dev, bs = config.device, config.batch_size
    static_seconds = 0.0

    def load():
        with quiet_open_clip():
            b = create_model(model_name, init=checkpoint, device=dev)
        b.model.eval()
        return b

    for spec in specs:
        if spec.kind == "dynamic_retrieval":
            for st in (stream.steps[j] for j in steps[spec.name]):
                b = load()
                es = stream.eval_set(st, spec.eval_set)
                img = encode_pixels(b.model, images_to_pixels(es.images, eval_transform(b), batch_size=bs), batch_size=bs, device=dev)
                txt = encode_texts(b.model, b.tokenizer, es.captions, batch_size=bs, device=dev)
                mean, _, _ = subsampled_recall(img, txt, size=subsample, seeds=range(config.seeds), key=st.index)
                results[(spec.name, st.index)] = mean["mean_recall@1"]
        elif spec.kind == "dynamic_classification":
            present = sorted({int(m["class_index"]) for j in steps[spec.name] for m in stream.eval_set(j, spec.eval_set).meta})
            col = {k: c for c, k in enumerate(present)}
            for st in (stream.steps[j] for j in steps[spec.name]):
                b = load()
                w = build_classifier(b.model, b.tokenizer, [IMAGENET_CLASSNAMES[k] for k in present], templates(spec.templates or "openai"), device=dev)
                es = stream.eval_set(st, spec.eval_set)
                img = encode_pixels(b.model, images_to_pixels(es.images, eval_transform(b), batch_size=bs), batch_size=bs, device=dev)
                labels = [col[int(m["class_index"])] for m in es.meta]
                results[(spec.name, st.index)] = zero_shot_accuracy(img, labels, w)["acc1"]
        else:
            t0 = time.perf_counter()
            b = load()
            data = load_task_data(spec, LoaderContext(data_dir=config.data_dir, stream=stream))
            w = build_classifier(b.model, b.tokenizer, data.classnames, templates(spec.templates or data.templates or "photo"), device=dev)
            images = [data.dataset[i] for i in range(len(data.dataset))]
            px = images_to_pixels([im for im, _ in images], eval_transform(b), batch_size=bs)
            img = encode_pixels(b.model, px, batch_size=bs, device=dev)
            results[(spec.name, None)] = zero_shot_accuracy(img, [y for _, y in images], w)["acc1"]
            static_seconds += time.perf_counter() - t0
    return results, static_seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", help="an existing stream directory (default: make a 7-step toy stream)")
    p.add_argument("--model", default="ticlip-tiny-32")
    p.add_argument("--checkpoint", help="default: a freshly initialised --model")
    p.add_argument("--eval-per-step", type=int, default=200, help="toy stream eval pairs per step")
    p.add_argument("--classes", type=int, default=1000,
                   help="ImageNet classes the added classification labels are spread over (default 1000, as in "
                   "TiC-DataComp-Net, whose steps hold most of ImageNet-1k's classes; with 50 images per step "
                   "about 350 classes are present, 28,000 prompts with the 80 OpenAI templates)")
    p.add_argument("--repeats", type=int, default=2, help="measure each way this many times, in ABBA order, and average")
    p.add_argument("--static", default="digits,fashion-mnist", help="static tasks to include (comma-separated, '' for none)")
    p.add_argument("--static-samples", type=int, default=2000, help="cap on each static set (fixed random subset)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench_eval_")
    try:
        return measure(args, work)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def measure(args, work: str) -> int:
    if args.stream:
        stream = TimeStream.load(args.stream)
    else:
        from ticlip.data.toy import make_toy_stream

        stream = make_toy_stream(os.path.join(work, "stream"), steps=7, train_per_step=8, eval_per_step=args.eval_per_step)
    if "classification" not in stream.eval_tasks():
        if args.stream:
            import shutil

            shutil.copytree(stream.root, os.path.join(work, "stream"))
            stream = TimeStream.load(os.path.join(work, "stream"))
        add_classification_sets(stream, per_step=max(12, args.eval_per_step // 4), classes=args.classes)
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = save_checkpoint(create_model(args.model, seed=0).model, os.path.join(work, "model.pt"), name=args.model)

    static = [s for s in args.static.split(",") if s]
    task_file = os.path.join(work, "tasks.yaml")
    with open(task_file, "w") as f:
        for name in static:
            spec = load_tasks()[name]
            f.write(f"{name}:\n  kind: {spec.kind}\n  loader: {spec.loader}\n")
            if spec.templates:
                f.write(f"  templates: {spec.templates}\n")
            f.write(f"  options: {dict(spec.options, max_samples=args.static_samples)!r}\n")
    config = EvalConfig(tasks=["retrieval", "classification", *static], task_file=task_file,
                        device=args.device, batch_size=args.batch_size)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    # Warm-up (imports, open_clip's registry, tokenizer files, allocator) so neither way pays it.
    with quiet_open_clip():
        b = create_model(args.model, init=checkpoint, device=args.device)
    encode_texts(b.model, b.tokenizer, ["warm up"], device=args.device)
    del b
    for spec in select_tasks(load_tasks(task_file), static):
        try:  # imports the loaders' libraries (scikit-learn) and reads the files once
            load_task_data(spec, LoaderContext(data_dir=config.data_dir, stream=stream))
        except Exception:
            pass  # reported (and skipped) by the measured runs

    def ticlip_way(k: int):
        # Everything from reading the task table on, as the DataComp way below: a fresh evaluator
        # and output directory, so nothing is cached between repeats.
        ev = Evaluator(stream, config, os.path.join(work, f"out{k}"), log=lambda m: print(m, file=sys.stderr))
        out = ev.run([ModelRef(0, "bench", checkpoint, args.model, outside=True)], [(0, "bench")])
        return ev, out

    specs = None
    times = {"ticlip": [], "datacomp": []}
    order = ["ticlip", "datacomp", "datacomp", "ticlip"] * ((args.repeats + 1) // 2)
    for k, way in enumerate(order[: 2 * args.repeats]):
        t0 = time.perf_counter()
        if way == "ticlip":
            evaluator, outcome = ticlip_way(k)
        else:
            if specs is None:
                planned = {t.spec.name for t in evaluator.dynamic}
                specs = [s for s in select_tasks(load_tasks(task_file), config.tasks)
                         if s.name not in evaluator.skipped_tasks and (not s.dynamic or s.name in planned)]
            steps = {t.spec.name: t.steps for t in evaluator.dynamic}
            theirs, static_s = datacomp_way(stream, specs, steps, checkpoint, args.model, config, evaluator.subsample)
            times["datacomp_static"] = times.get("datacomp_static", []) + [static_s]
        times[way].append(time.perf_counter() - t0)
        if way == "ticlip":
            recs = _records(outcome.out_dir)
            times["ticlip_static"] = times.get("ticlip_static", []) + [sum(r["time"] for r in recs if r["eval_step"] is None)]
    ticlip_s = sum(times["ticlip"]) / len(times["ticlip"])
    datacomp_s = sum(times["datacomp"]) / len(times["datacomp"])
    ours = {(r["task"], None if r["eval_step"] is None else r["eval_step"]["index"]): r["metrics"][r["metric"]]
            for r in _records(outcome.out_dir)}

    diffs = [k for k in theirs if abs(theirs[k] - ours.get(k, float("nan"))) > 1e-4 or k not in ours]
    pairs = len(theirs)
    print(f"stream {stream.name}: {len(stream.steps)} steps; tasks {', '.join(s.name for s in specs)}; "
          f"{pairs} (step, task) pairs; model {args.model} on {args.device}; retrieval subsample {evaluator.subsample} x {config.seeds} seeds")
    n_classes = len({int(m["class_index"]) for t in evaluator.dynamic if t.classes for j in t.steps
                     for m in stream.eval_set(j, t.spec.eval_set).meta})
    print(f"classification: {n_classes} ImageNet classes x {len(templates('openai'))} templates; "
          f"{args.repeats} measurement(s) of each way, ABBA order, averaged")
    print(f"ticlip way:   {ticlip_s:7.2f} s  (1 model load, 1 classifier per task, each image encoded once)")
    print(f"DataComp way: {datacomp_s:7.2f} s  ({pairs} model loads, classifier rebuilt per step)")
    print(f"speed-up: {datacomp_s / ticlip_s:.2f}x  (goal >= 3x for 7 steps)")
    if static:
        ts = sum(times["ticlip_static"]) / len(times["ticlip_static"])
        ds = sum(times["datacomp_static"]) / len(times["datacomp_static"])
        print(f"  of which static tasks ({', '.join(static)}): ticlip {ts:.2f} s, DataComp {ds:.2f} s (one pair each both ways); "
              f"dynamic tasks alone: {(datacomp_s - ds) / max(ticlip_s - ts, 1e-9):.2f}x")
    if diffs:
        print(f"MISMATCH: {len(diffs)} results differ between the two ways, e.g. {diffs[:3]}")
        return 1
    print(f"both ways agree on all {pairs} results")
    return 0


def _records(out_dir):
    from ticlip.eval.results import EVAL_LOG, read_results

    return read_results(os.path.join(out_dir, EVAL_LOG))


if __name__ == "__main__":
    sys.exit(main())
