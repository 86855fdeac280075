"""The demo's training throughput against a bare open_clip loop, side by side; and where a finished demo spent
its time.

Throughput (issue 10, goal >= 0.9): in the demo's configuration — ``--processes`` training processes (2)
with one torch thread each, batch 128, the demo's ticlip-tiny-32-t16 in bf16 — every process measures, alternating over
``--rounds``:

- ticlip end to end: ``train_run`` of one Cumulative-All step of the emoji stream (steps 0..2 mixed), the
  path the demo takes (the memory path when the step fits ``memory_limit_mb``), pairs/s inside the loop
  as its train_log reports them (data, augmentation, schedule, logging included; model creation and
  the checkpoint excluded);
- a bare open_clip loop (forward, ClipLoss, zero_grad, backward, AdamW step) on batches already in memory.

The processes run at the same time, as the demo's do, so they share the two cores the same way.
``--precision fp32,bf16`` measures each precision (bf16: autocast on CPU, in both loops).

Time split: ``--demo runs/emoji-cpu`` (a finished ``ticlip run`` directory) prints the stream build,
training, evaluation and report times (from run.json ``seconds``, eval.jsonl ``time`` and file times)
and the share of training iterations that step reuse saved (steps whose step.json has ``reused_from``).

    .venv/bin/python benchmarks/bench_demo.py --stream data/emoji [--iterations 20] [--rounds 2]
        [--processes 2] [--precision fp32,bf16] [--webdataset] [--demo runs/emoji-cpu]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

GOAL = 0.9


# --------------------------------------------------------------------------- one process
def bare_rate(bundle, data, precision: str, tuned: bool = True) -> float:
    """Pairs/s of a bare loop. ``tuned``: with ticlip's CPU choices (``ticlip.train.loop``: the math
    attention kernel under bf16, channels-last ResNet towers), which the training path also makes, so the
    ratio measures the training path's own overhead; otherwise open_clip's defaults (plain autocast,
    contiguous layout), printed for information."""
    import contextlib

    import torch
    from open_clip.loss import ClipLoss

    from ticlip.train.loop import autocast_context, make_optimizer, use_fast_layout

    model, loss_fn = bundle.model, ClipLoss()
    if tuned:
        use_fast_layout(model, "cpu")
        autocast = autocast_context(precision, "cpu")
    else:
        model.visual.to(memory_format=torch.contiguous_format)
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                    else contextlib.nullcontext())
    opt = make_optimizer(model, lr=1e-3)
    t0 = time.perf_counter()
    for images, texts in data:
        with autocast:
            out = model(images, texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return len(data) * len(data[0][1]) / (time.perf_counter() - t0)


def ticlip_rate(args, logs: str, name: str, precision: str, memory_limit_mb: float = 1024) -> tuple[float, str]:
    from ticlip.config import TrainConfig
    from ticlip.train.run import train_run

    cfg = TrainConfig(stream=args.stream, method="cumulative-all", model=args.model, iterations_per_step=args.iterations,
                      batch_size=args.batch_size, workers=0, threads=1, warmup=2, steps="2", logs=logs, name=name,
                      progress=False, save_every_s=1e9, precision=precision, log_every=args.iterations,
                      memory_limit_mb=memory_limit_mb)
    train_run(cfg)
    step = os.path.join(logs, name, "steps", "2")
    with open(os.path.join(step, "train_log.jsonl")) as f:
        rate = [json.loads(line) for line in f][-1]["pairs_per_s"]
    with open(os.path.join(step, "step.json")) as f:
        path = json.load(f)["facts"].get("data_path", "?")
    return float(rate), path


def one_process(args) -> dict:
    import torch

    from ticlip.models import create_model, quiet_open_clip

    torch.set_num_threads(1)
    with quiet_open_clip():
        bundle = create_model(args.model, seed=0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(args.batch_size, 3, bundle.image_size, bundle.image_size, generator=g),
             torch.randint(1, 1000, (args.batch_size, bundle.tokenizer(["x"]).shape[1]), generator=g))
            for _ in range(args.iterations)]
    init = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    out: dict = {}
    with tempfile.TemporaryDirectory() as logs:
        for precision in args.precision.split(","):
            rates: dict = {"bare": [], "ticlip": [], "webdataset": [], "open_clip_defaults": []}
            bundle.model.load_state_dict(init)
            bare_rate(bundle, data[:3], precision)  # warm up
            for r in range(args.rounds):
                bundle.model.load_state_dict(init)
                rates["bare"].append(bare_rate(bundle, data, precision))
                bundle.model.load_state_dict(init)
                rates["open_clip_defaults"].append(bare_rate(bundle, data, precision, tuned=False))
                rate, path = ticlip_rate(args, logs, f"{precision}-{r}", precision)
                rates["ticlip"].append(rate)
                if args.webdataset:
                    rates["webdataset"].append(ticlip_rate(args, logs, f"{precision}-{r}-wds", precision, 0)[0])
            out[precision] = {"bare": statistics.median(rates["bare"]), "ticlip": statistics.median(rates["ticlip"]),
                              "webdataset": statistics.median(rates["webdataset"]) if rates["webdataset"] else None,
                              "open_clip_defaults": statistics.median(rates["open_clip_defaults"]),
                              "rounds": rates, "data_path": path}
    return out


# --------------------------------------------------------------------------- the demo's time split
def demo_split(root: str) -> None:
    runs = sorted(d for d in glob.glob(os.path.join(root, "*")) if os.path.exists(os.path.join(d, "run.json")))
    if not runs:
        print(f"--demo {root}: no runs (directories with run.json) found")
        return
    train_s = eval_s = 0.0
    iters = reused_iters = 0
    reused_steps = steps = 0
    for run in runs:
        with open(os.path.join(run, "run.json")) as f:
            info = json.load(f)
        train_s += sum(float(v) for v in info.get("extra", {}).get("seconds", {}).values())
        for path in glob.glob(os.path.join(run, "steps", "*", "step.json")):
            with open(path) as f:
                step = json.load(f)
            n = int(step.get("iterations") or 0)
            iters += n
            steps += 1
            if step.get("reused_from"):
                reused_iters += n
                reused_steps += 1
        ev = os.path.join(run, "eval.jsonl")
        if os.path.exists(ev):
            with open(ev) as f:
                eval_s += sum(float(json.loads(line).get("time") or 0) for line in f if line.strip())
    mtime = os.path.getmtime
    start = mtime(os.path.join(root, "experiment.yaml")) if os.path.exists(os.path.join(root, "experiment.yaml")) else None
    first_run = min(mtime(os.path.join(r, "config.yaml")) for r in runs if os.path.exists(os.path.join(r, "config.yaml")))
    last_eval = max((mtime(p) for p in glob.glob(os.path.join(root, "*", "eval_summary.json"))), default=None)
    report = os.path.join(root, "report.html")
    parallel = None
    try:
        import yaml

        with open(os.path.join(root, "experiment.yaml")) as f:
            parallel = (yaml.safe_load(f) or {}).get("parallel")
    except (OSError, ImportError):
        pass
    print(f"demo {root}: {len(runs)} runs, {steps} steps")
    if start is not None:
        print(f"  stream build (experiment start -> first run's config, file times): {first_run - start:8.1f} s wall")
    print(f"  training (run.json seconds, summed over runs): {train_s:8.1f} process-s"
          + (f" (~{train_s / parallel:.1f} s wall with parallel {parallel})" if parallel else ""))
    print(f"  evaluation (eval.jsonl time, summed): {eval_s:8.1f} s")
    if last_eval is not None and os.path.exists(report):
        print(f"  report (last eval summary -> report.html, file times): {mtime(report) - last_eval:8.1f} s wall")
    if start is not None and os.path.exists(report):
        print(f"  total (experiment.yaml -> report.html): {mtime(report) - start:8.1f} s wall")
    if iters:
        print(f"  step reuse: {reused_steps} of {steps} steps reused, {reused_iters} of {iters} iterations "
              f"({100 * reused_iters / iters:.1f} % of the training work) saved"
              + ("" if reused_steps else " (no step.json has reused_from: reuse off or from before it)"))


# --------------------------------------------------------------------------- main
def build_emoji(tmp: str) -> str:
    out = os.path.join(tmp, "emoji")
    subprocess.run([sys.executable, "-m", "ticlip.cli", "data", "build", "emoji", "--out", out], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", default=None, help="the emoji stream (default: data/emoji, else built in a temp dir)")
    ap.add_argument("--model", default="ticlip-tiny-32-t16", help="default: the demo's model")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=20, help="iterations per measurement (default 20)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per loop (default 2)")
    ap.add_argument("--processes", type=int, default=2, help="processes measuring at once (the demo: 2)")
    ap.add_argument("--precision", default="bf16", help="comma-separated: fp32, bf16 (default bf16, the demo's)")
    ap.add_argument("--webdataset", action="store_true", help="also measure ticlip on the webdataset path "
                                                                "(memory_limit_mb 0), for comparison")
    ap.add_argument("--demo", default=None, help="a finished demo directory to split the time of")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a measuring child process
    args = ap.parse_args(argv)

    if args.one:
        print(json.dumps(one_process(args)))
        return 0
    if args.demo:
        demo_split(args.demo)
        if args.stream is None and not os.path.exists("data/emoji/stream.json"):
            return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.stream is None:
            args.stream = "data/emoji" if os.path.exists("data/emoji/stream.json") else build_emoji(tmp)
        cmd = [sys.executable, os.path.abspath(__file__), "--one", "--stream", args.stream, "--model", args.model,
               "--batch-size", str(args.batch_size), "--iterations", str(args.iterations), "--rounds",
               str(args.rounds), "--precision", args.precision] + (["--webdataset"] if args.webdataset else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(args.processes)]
        results = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode:
                print(err[-3000:], file=sys.stderr)
                return 2
            results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{args.processes} process(es) x 1 thread, {args.model}, batch {args.batch_size}, {args.iterations} "
          f"iterations x {args.rounds} rounds each, stream {args.stream}")
    ok = True
    for precision in args.precision.split(","):
        bare = statistics.mean(r[precision]["bare"] for r in results)
        ours = statistics.mean(r[precision]["ticlip"] for r in results)
        ratio = ours / bare
        ok &= ratio >= GOAL
        print(f"[{precision}] per process: bare open_clip loop {bare:7.1f} pairs/s, ticlip end to end "
              f"({results[0][precision]['data_path']} path) {ours:7.1f} pairs/s; ratio {ratio:.3f} "
              f"(goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")
        plain = statistics.mean(r[precision]["open_clip_defaults"] for r in results)
        print(f"    bare loop with open_clip's defaults (plain autocast, contiguous layout): {plain:7.1f} pairs/s; "
              f"ticlip's CPU kernel/layout choices make the bare loop {bare / plain:.2f}x faster")
        if args.webdataset:
            wds = statistics.mean(r[precision]["webdataset"] for r in results)
            print(f"    ticlip on the webdataset path (memory_limit_mb 0): {wds:7.1f} pairs/s = {wds / bare:.3f} x bare")
        for i, r in enumerate(results):
            print(f"    process {i}: bare {', '.join(f'{v:.0f}' for v in r[precision]['rounds']['bare'])}; "
                  f"ticlip {', '.join(f'{v:.0f}' for v in r[precision]['rounds']['ticlip'])}")
    if "fp32" in args.precision and "bf16" in args.precision:
        f32 = statistics.mean(r["fp32"]["ticlip"] for r in results)
        b16 = statistics.mean(r["bf16"]["ticlip"] for r in results)
        print(f"bf16 / fp32, ticlip end to end: {b16 / f32:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
