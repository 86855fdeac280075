"""Training pairs/s of `ticlip train` against open_clip's own training script, side by side.

Issue 10, point 6: on one GPU, ViT-B-16, the same batch and precision, ticlip's end-to-end training
should reach >= 0.95x the pairs/s of ``python -m open_clip_train.main``. One command does it all:

    .venv/bin/python benchmarks/bench_gpu_vs_openclip.py            # cuda, ViT-B-16, batch 256, bf16

1. writes synthetic webdataset shards (random smooth images at the model's resolution, JPEG, and
   random captions) as a one-step ticlip stream (``stream.json``), enough pairs for the run;
2. runs open_clip's training script on those shards (``--dataset-type webdataset
   --dataset-resampled``, one epoch of exactly the iterations below, ``--log-every-n-steps 1``, no
   checkpoint, no evaluation) and reads each iteration's time from its ``Batch (t)`` log lines
   (its samples/s figure);
3. runs ``ticlip train`` on the same stream with the same model, batch, precision, workers and
   iterations (no evaluation; ``--log-every 1``) and reads ``train_log.jsonl`` (``elapsed_s``);
4. prints both rates over the same post-warm-up window (iterations warmup+1 .. warmup+iterations),
   the ratio ticlip/open_clip and the goal.

Both are fed from the same shards through a DataLoader with ``--workers`` workers. ticlip would train
from memory when the step's pairs fit in ``--memory-limit-mb`` (docs/TRAINING.md); by default this
benchmark turns that off (``--data-path webdataset``) so both read, decode and augment the shards
every iteration; ``--data-path auto`` keeps ticlip's default. Each tool keeps its own augmentation
(open_clip: RandomResizedCrop 0.9-1; ticlip: its training transforms).

A CPU smoke run (checks the plumbing, NOT the goal's measurement):

    .venv/bin/python benchmarks/bench_gpu_vs_openclip.py --device cpu --model ticlip-tiny-32 \\
        --batch-size 16 --iterations 6

Exit status 0 when the ratio meets the goal, 1 when not, 2 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time

GOAL = 0.95
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
PRECISION_OPEN_CLIP = {"bf16": "amp_bf16", "fp16": "amp", "fp32": "fp32"}
WORDS = ("red green blue small big old new photo of a the cat dog car tree house river city street "
         "night day man woman child bird flower sky sea road book table chair window door light").split()

# open_clip_train.main, with ticlip's tiny model configs registered (a no-op for open_clip's own
# models) and one compatibility shim: open_clip 3.3's webdataset reader (pinned to webdataset <= 0.2.86)
# fails on the empty end-of-shard marker that webdataset 1.x's tar_file_expander yields (KeyError:
# 'fname'); dropping those markers gives exactly webdataset 0.2's stream of files
OPEN_CLIP_RUNNER = (
    "import sys; from ticlip.models import register_tiny_models; register_tiny_models(); "
    "import open_clip_train.data as d; _x = d.tar_file_expander; "
    "d.tar_file_expander = lambda *a, **k: (s for s in _x(*a, **k) if s); "
    "from open_clip_train.main import main; main(sys.argv[1:])"
)
# open_clip 3.x: "... Batch (t): 0.123, 2081.30/s, 2081.30/s/gpu LR: ..." once per logged step
BATCH_RE = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/\s*\d+ .*?Batch \(t\): [0-9.]+, ([0-9.eE+-]+)/s,")


def write_stream(out: str, pairs: int, image_size: int, shard_size: int, seed: int = 0) -> str:
    """A one-step ticlip stream of ``pairs`` synthetic train pairs (+ 16 eval pairs); returns its root."""
    import numpy as np
    from PIL import Image

    from ticlip.data.shards import ShardSample, encode_image, sample_key, write_shard
    from ticlip.data.stream import ShardSet, Step, TimeStream, library_versions

    rng = np.random.default_rng(seed)
    crng = random.Random(seed)
    sets = {}
    for part, n in (("train", pairs), ("eval", 16)):
        names = []
        for j in range(0, n, shard_size):
            samples = []
            for i in range(j, min(n, j + shard_size)):
                # smooth random colour fields plus noise: JPEG sizes and decode costs like photos'
                low = rng.integers(0, 256, (max(2, image_size // 16),) * 2 + (3,), dtype=np.uint8)
                img = np.asarray(Image.fromarray(low).resize((image_size, image_size), Image.Resampling.BICUBIC))
                img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
                ext, data = encode_image(Image.fromarray(img))
                uid = f"bench-{part}-{i}"
                caption = " ".join(crng.choice(WORDS) for _ in range(crng.randint(4, 12)))
                samples.append(ShardSample(sample_key(uid), ext, data, caption,
                                           {"uid": uid, "timestamp": "2020-06-01", "step": "2020"}))
            rel = os.path.join("steps", "0", f"{part}-{j // shard_size:06d}.tar")
            write_shard(os.path.join(out, rel), samples)
            names.append(rel)
        sets[part] = ShardSet(names, n)
    step = Step(0, "2020", "2020-01-01", "2020-12-31", ["2020"], sets["train"], {"retrieval": sets["eval"]}, None)
    TimeStream(root=os.path.abspath(out), name="bench", granularity="year", steps=[step],
               provenance={"source": "synthetic-bench", "seed": seed, "versions": library_versions()}).save()
    return os.path.abspath(out)


def _env(threads: int | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run(cmd: list[str], env: dict, log_path: str, label: str) -> float:
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{label} failed (exit {rc}); end of its output ({log_path}):\n{tail}")
    return time.perf_counter() - t0


def window_rate(per_iter_s: list[float], batch: int, warmup: int, iterations: int) -> float:
    window = per_iter_s[warmup:warmup + iterations]
    if len(window) < iterations:
        raise RuntimeError(f"only {len(per_iter_s)} iterations logged; need {warmup + iterations}")
    return batch * iterations / sum(window)


def run_open_clip(args, stream: str, work: str, total: int) -> dict:
    shards = sorted(f for f in os.listdir(os.path.join(stream, "steps", "0")) if f.startswith("train-"))
    first, last = shards[0][len("train-"):-4], shards[-1][len("train-"):-4]
    urls = os.path.join(stream, "steps", "0", f"train-{{{first}..{last}}}.tar") if len(shards) > 1 \
        else os.path.join(stream, "steps", "0", shards[0])
    # a fresh name per run: open_clip refuses a --name whose log folder exists (a reused --work-dir)
    name = time.strftime("bench-%Y%m%d-%H%M%S")
    cmd = [sys.executable, "-c", OPEN_CLIP_RUNNER,
           "--train-data", urls, "--dataset-type", "webdataset", "--dataset-resampled",
           "--train-num-samples", str(total * args.batch_size),
           "--model", args.model, "--batch-size", str(args.batch_size),
           "--precision", PRECISION_OPEN_CLIP[args.precision], "--device", args.device,
           "--workers", str(args.workers), "--epochs", "1", "--lr", "1e-3", "--wd", "0.2",
           "--warmup", str(args.warmup_iterations), "--seed", "0",
           "--log-every-n-steps", "1", "--save-frequency", "0", "--report-to", "",
           "--logs", os.path.join(work, "open_clip_logs"), "--name", name]
    log_path = os.path.join(work, "open_clip.out")
    wall = _run(cmd, _env(args.threads), log_path, "open_clip_train.main")
    samples, rates = [], []
    with open(log_path) as f:
        for line in f:
            m = BATCH_RE.search(line)
            if m:
                samples.append(int(m.group(1)))
                rates.append(float(m.group(2)))
    if not rates:
        raise RuntimeError(f"no 'Batch (t)' lines in open_clip's output ({log_path})")
    per_iter = [args.batch_size / r for r in rates]
    return {"iterations": len(rates), "pairs_seen": samples[-1], "wall_s": wall, "log": log_path,
            "rate": window_rate(per_iter, args.batch_size, args.warmup_iterations, args.iterations)}


def run_ticlip(args, stream: str, work: str, total: int) -> dict:
    memory_mb = "0" if args.data_path == "webdataset" else str(args.memory_limit_mb)
    cmd = [sys.executable, "-m", "ticlip.cli", "train", "--stream", stream, "--method", "sequential",
           "--model", args.model, "--iterations-per-step", str(total), "--batch-size", str(args.batch_size),
           "--precision", args.precision, "--device", args.device, "--workers", str(args.workers),
           "--lr", "1e-3", "--warmup", str(args.warmup_iterations), "--seed", "0", "--log-every", "1",
           "--save-every-s", "1e9", "--chunk-iterations", str(total), "--memory-limit-mb", memory_mb,
           "--logs", work, "--name", f"ticlip-run-{os.getpid()}-{time.time_ns()}"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    log_path = os.path.join(work, "ticlip.out")
    wall = _run(cmd, _env(args.threads), log_path, "ticlip train")
    step_dir = os.path.join(work, cmd[cmd.index("--name") + 1], "steps", "0")
    with open(os.path.join(step_dir, "train_log.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [r for r in records if "elapsed_s" in r]
    elapsed = [r["elapsed_s"] for r in records]
    per_iter = [b - a for a, b in zip([0.0] + elapsed[:-1], elapsed)]
    data_path = None
    try:
        with open(os.path.join(step_dir, "step.json")) as f:
            data_path = (json.load(f).get("facts") or {}).get("data_path")
    except OSError:
        pass
    return {"iterations": records[-1]["iteration"], "pairs_seen": records[-1]["pairs_seen"], "wall_s": wall,
            "log": os.path.join(step_dir, "train_log.jsonl"), "data_path": data_path,
            "rate": window_rate(per_iter, args.batch_size, args.warmup_iterations, args.iterations)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--precision", default="bf16", choices=sorted(PRECISION_OPEN_CLIP))
    ap.add_argument("--iterations", type=int, default=50, help="measured iterations after the warm-up (default 50)")
    ap.add_argument("--warmup-iterations", type=int, default=None,
                    help="iterations trained, not measured, first (default: cuda 10, cpu 2; also both tools' LR warmup)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers of each tool (default: cuda 8, cpu 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads of each tool (OMP_NUM_THREADS; default: cpu 1, cuda unset)")
    ap.add_argument("--pairs", type=int, default=None,
                    help="synthetic train pairs to write (default: batch x iterations trained, at least 1024)")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--data-path", choices=("webdataset", "auto"), default="webdataset",
                    help="ticlip's data path: webdataset (default; as open_clip) or auto (memory when it fits)")
    ap.add_argument("--memory-limit-mb", type=int, default=1024, help="ticlip's --memory-limit-mb with --data-path auto")
    ap.add_argument("--work-dir", default=None, help="keep shards and logs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    if args.threads is None and cpu:
        args.threads = 1
    if args.warmup_iterations is None:
        args.warmup_iterations = 2 if cpu else 10
    if args.workers is None:
        args.workers = 1 if cpu else 8
    if args.iterations < 1 or args.warmup_iterations < 0:
        ap.error("--iterations must be >= 1 and --warmup-iterations >= 0")

    sys.path.insert(0, SRC)
    from ticlip.models import model_config

    image_size = model_config(args.model)["vision_cfg"]["image_size"]
    image_size = image_size if isinstance(image_size, int) else image_size[0]
    # open_clip's webdataset epoch is a whole number of batches per DataLoader worker: train that many
    # iterations in both, so the two runs are the same length
    total = math.ceil((args.warmup_iterations + args.iterations) / max(1, args.workers)) * max(1, args.workers)
    pairs = args.pairs or max(1024, total * args.batch_size)

    tmp = None
    work = args.work_dir
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-gpu-")
        work = tmp.name
    os.makedirs(work, exist_ok=True)
    try:
        t0 = time.perf_counter()
        stream = write_stream(os.path.join(work, "stream"), pairs, image_size, args.shard_size)
        print(f"wrote {pairs} synthetic pairs ({image_size} px JPEG) in {time.perf_counter() - t0:.1f} s: {stream}",
              flush=True)
        try:
            oc = run_open_clip(args, stream, work, total)
            print(f"open_clip_train.main: {oc['iterations']} iterations, {oc['pairs_seen']} pairs, "
                  f"{oc['wall_s']:.1f} s wall", flush=True)
            tc = run_ticlip(args, stream, work, total)
            print(f"ticlip train: {tc['iterations']} iterations, {tc['pairs_seen']} pairs, {tc['wall_s']:.1f} s wall, "
                  f"data path {tc['data_path']}", flush=True)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if oc["iterations"] != tc["iterations"] or oc["pairs_seen"] != tc["pairs_seen"]:
            print(f"error: the runs differ in length (open_clip {oc['iterations']} iterations / {oc['pairs_seen']} "
                  f"pairs, ticlip {tc['iterations']} / {tc['pairs_seen']})", file=sys.stderr)
            return 2
        ratio = tc["rate"] / oc["rate"]
        lo, hi = args.warmup_iterations + 1, args.warmup_iterations + args.iterations
        print(f"\ndevice {args.device}, model {args.model}, batch {args.batch_size}, precision {args.precision}, "
              f"{args.workers} worker(s), threads {args.threads or 'default'}; both trained {total} iterations, "
              f"measured iterations {lo}..{hi}")
        print(f"open_clip_train.main: {oc['rate']:10.1f} pairs/s")
        print(f"ticlip train:         {tc['rate']:10.1f} pairs/s  (data path: {tc['data_path']})")
        print(f"ratio ticlip/open_clip: {ratio:.3f}  (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")
        return 0 if ratio >= GOAL else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
