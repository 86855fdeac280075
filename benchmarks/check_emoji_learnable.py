"""Is the emoji stream learnable? Train ticlip-tiny-32 from scratch on one step and measure held-out
retrieval Recall@1 against chance (the claim in DESIGN.md: a tiny model learns in minutes on CPU).

    python benchmarks/check_emoji_learnable.py [--stream DIR] [--step 0] [--iters 150] [--batch-size 128]

Builds the emoji stream into a temporary directory unless --stream names a built one. Prints R@1
(image->text, text->image) of the trained model and of the untrained one on the step's held-out set
and on the last step's (new concepts: expected lower), with chance = 1 / eval-set size.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch


def recall_at_1(model, tokenizer, transform, eval_set) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        images = torch.stack([transform(im) for im in eval_set.images])
        texts = tokenizer(eval_set.captions)
        out = model(images, texts)
        sim = out["image_features"] @ out["text_features"].T
    target = torch.arange(len(eval_set))
    i2t = (sim.argmax(1) == target).float().mean().item()
    t2i = (sim.argmax(0) == target).float().mean().item()
    return i2t, t2i


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", help="a built emoji stream (default: build one in a temp dir)")
    p.add_argument("--step", default="0")
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", default="random", help='"random" or "white" (train transform)')
    p.add_argument("--scale", type=float, nargs=2, default=(0.7, 1.0), help="train glyph scale range")
    args = p.parse_args(argv)

    from open_clip import ClipLoss

    from ticlip.data.build import build_stream_from
    from ticlip.data.stream import TimeStream
    from ticlip.data.transforms import make_eval_transform, make_train_transform, model_mean_std
    from ticlip.models import create_model

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    tmp = None
    if args.stream and os.path.exists(TimeStream.manifest_path(args.stream)):
        stream = TimeStream.load(args.stream)
    else:
        out = args.stream or (tmp := tempfile.TemporaryDirectory()).name
        t0 = time.perf_counter()
        stream = build_stream_from("emoji", out, progress=False)
        print(f"built the emoji stream in {time.perf_counter() - t0:.1f} s")
    for s in stream.steps:
        print(f"  step {s.index} {s.label:>9}: train {s.train.count:4d}  eval {s.eval['retrieval'].count:4d}")

    bundle = create_model("ticlip-tiny-32", seed=args.seed)
    model, tokenizer = bundle.model, bundle.tokenizer
    mean, std = model_mean_std(model)
    background = (255, 255, 255) if args.background == "white" else args.background
    train_tf = make_train_transform(bundle.image_size, mean=mean, std=std, background=background, scale=args.scale)
    eval_tf = make_eval_transform(bundle.image_size, mean=mean, std=std)
    step = stream.step(args.step)
    held_out = stream.eval_set(step)
    last = stream.eval_set(stream.steps[-1])
    before = recall_at_1(model, tokenizer, eval_tf, held_out)

    torch.manual_seed(args.seed)
    pipeline = stream.train_pipeline([step], transform=train_tf, tokenizer=tokenizer, seed=args.seed)
    loader = torch.utils.data.DataLoader(pipeline, batch_size=args.batch_size, num_workers=0)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / args.iters)))
    loss_fn = ClipLoss()
    model.train()
    t0, batches = time.perf_counter(), iter(loader)
    for it in range(args.iters):
        images, texts = next(batches)
        out = model(images, texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it % 25 == 0 or it == args.iters - 1:
            print(f"  iter {it:4d}  loss {loss.item():.3f}")
    train_s = time.perf_counter() - t0

    after = recall_at_1(model, tokenizer, eval_tf, held_out)
    after_last = recall_at_1(model, tokenizer, eval_tf, last)
    print(f"trained {args.iters} iters x {args.batch_size} on step {step.label} in {train_s:.1f} s "
          f"({args.iters * args.batch_size / train_s:.0f} pairs/s, data loading in the main process)")
    print(f"held-out step {step.label} ({len(held_out)} pairs, chance R@1 {1 / len(held_out):.3f}): "
          f"untrained i2t {before[0]:.3f} t2i {before[1]:.3f} -> trained i2t {after[0]:.3f} t2i {after[1]:.3f} "
          f"(mean {sum(after) / 2:.3f}, {sum(after) / 2 * len(held_out):.1f}x chance)")
    print(f"last step {last.step} ({len(last)} pairs, chance {1 / len(last):.3f}): trained i2t {after_last[0]:.3f} "
          f"t2i {after_last[1]:.3f} (new concepts)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
