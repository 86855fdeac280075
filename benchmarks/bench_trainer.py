"""Trainer overhead: pairs/s of ticlip's training loop divided by a bare training loop's.

Both loops train the same open_clip model (ticlip-tiny-32 by default) from the same weights, on the
same batches already in memory, with the same optimizer (AdamW with ticlip's parameter groups) and
open_clip's ClipLoss. The bare loop is forward, loss, zero_grad, backward, step — nothing else.
ticlip's loop (``ticlip.train.loop.train_loop``) adds what a run does each iteration: the LR
schedule, the logit-scale clamp, MAC accounting, a JSONL log line per iteration, the tqdm progress
bar and the after-iteration hook of ``ticlip.train.run``. Goal: ratio >= 0.95. Rounds alternate
between the two loops (busy machines drift); the median round of each is compared.

Then, for information, the end-to-end pairs/s of ``ticlip train`` with the real data pipeline
(webdataset shards of a toy stream, decoding, augmentation, tokenisation), which is what a user
sees, and its ratio to the bare loop (data loading is not free; see docs/TRAINING.md).

    .venv/bin/python benchmarks/bench_trainer.py [--batch-size 128] [--iterations 15] [--rounds 3]
        [--threads 1] [--workers 1] [--stream DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

GOAL = 0.95


def batches(tokenizer, n: int, batch: int, image_size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    words = ["red", "green", "blue", "square", "circle", "bar", "ring", "cross", "small", "big"]
    out = []
    for i in range(n):
        images = torch.randn(batch, 3, image_size, image_size, generator=g)
        texts = tokenizer([f"a {words[(i + j) % 10]} {words[(3 * i + j) % 10]} {j}" for j in range(batch)])
        out.append((images, texts))
    return out


def bare_loop(model, data, optimizer, loss_fn) -> float:
    t0 = time.perf_counter()
    for images, texts in data:
        out = model(images, texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def ticlip_loop(model, data, optimizer, loss_fn, log_path: str) -> float:
    from ticlip.train.loop import JsonlLog, LoopOptions, LoopState, train_loop
    from ticlip.train.schedule import ScheduleConfig

    sched = ScheduleConfig("cosine", 1e-3, warmup=2).for_step(len(data), "initial")
    log = JsonlLog(log_path, {"step": 0, "label": "bench"})
    opts = LoopOptions(iterations=len(data), macs_per_pair=1e9, budget_macs=1e9 * len(data) * len(data[0][1]),
                       progress=True, desc="ticlip loop")
    saves = []

    def after(state):  # what run.py's hook does between saves: a boundary check
        if state.iteration % 50 == 0:
            saves.append(state.iteration)

    t0 = time.perf_counter()
    train_loop(model, data, optimizer, sched, loss_fn, opts, state=LoopState(),
               log=lambda r: log({"phase": "main", **r}), after_iteration=after)
    elapsed = time.perf_counter() - t0
    log.close()
    return elapsed


def end_to_end(args, tmp: str) -> tuple[float, float]:
    """(pairs/s inside the loop, data loading included; pairs/s of the whole step incl. model
    creation and checkpoint) of a one-step `ticlip train` run."""
    import json

    from ticlip.config import TrainConfig
    from ticlip.data.toy import make_toy_stream
    from ticlip.train.run import train_run

    stream = args.stream or make_toy_stream(os.path.join(tmp, "toy"), steps=1, train_per_step=512,
                                            image_size=32, shard_size=128).root
    cfg = TrainConfig(stream=stream, method="sequential", model=args.model, iterations_per_step=args.iterations,
                      batch_size=args.batch_size, workers=args.workers, warmup=2, steps="0", logs=tmp,
                      name="e2e", progress=False, threads=args.threads, save_every_s=1e9)
    info = train_run(cfg)
    with open(os.path.join(tmp, "e2e", "steps", "0", "train_log.jsonl")) as f:
        loop_rate = [json.loads(line) for line in f][-1]["pairs_per_s"]
    return loop_rate, info.steps[0].pairs_seen / float(info.extra["seconds"]["0"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ticlip-tiny-32")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=15, help="iterations per measured round (default 15)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per loop (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a busy box)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers for the end-to-end run")
    ap.add_argument("--stream", default=None, help="stream for the end-to-end run (default: a generated toy one)")
    args = ap.parse_args(argv)

    import torch
    from open_clip.loss import ClipLoss

    from ticlip.models import create_model, quiet_open_clip
    from ticlip.train.loop import make_optimizer

    torch.set_num_threads(args.threads)
    with quiet_open_clip():
        bundle = create_model(args.model, seed=0)
    data = batches(bundle.tokenizer, args.iterations, args.batch_size, bundle.image_size)
    init = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    loss_fn = ClipLoss()
    pairs = args.iterations * args.batch_size
    times = {"bare": [], "ticlip": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):  # round 0 warms up both
            for name in ("bare", "ticlip"):
                bundle.model.load_state_dict(init)
                opt = make_optimizer(bundle.model, lr=1e-3)
                if name == "bare":
                    for g in opt.param_groups:
                        g["lr"] = 1e-3
                    dt = bare_loop(bundle.model, data, opt, loss_fn)
                else:
                    dt = ticlip_loop(bundle.model, data, opt, loss_fn, os.path.join(tmp, f"log{r}.jsonl"))
                if r > 0:
                    times[name].append(dt)
        bare = pairs / statistics.median(times["bare"])
        ours = pairs / statistics.median(times["ticlip"])
        ratio = ours / bare
        print(f"model {args.model}, batch {args.batch_size}, {args.iterations} iterations x {args.rounds} rounds, "
              f"{args.threads} thread(s)")
        print(f"bare loop:    {bare:8.1f} pairs/s  (rounds: {', '.join(f'{pairs / t:.0f}' for t in times['bare'])})")
        print(f"ticlip loop:  {ours:8.1f} pairs/s  (rounds: {', '.join(f'{pairs / t:.0f}' for t in times['ticlip'])})")
        print(f"ratio ticlip/bare: {ratio:.3f}  (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")

        loop_rate, step_rate = end_to_end(args, tmp)
        print(f"end to end (`ticlip train`, real data pipeline, {args.workers} worker(s)): {loop_rate:.1f} pairs/s "
              f"in the loop = {loop_rate / bare:.3f} x bare; {step_rate:.1f} pairs/s over the whole step "
              f"(model creation and checkpoint included)")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
