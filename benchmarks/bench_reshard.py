"""Reshard throughput and memory: N tiny synthetic pairs in webdataset shards + a uid → timestamp
Parquet table → a yearly stream (``ticlip data build SHARDS --timestamps TABLE``).

For each size (default 100k and 1M pairs) it writes the input (not timed: one tiny PNG reused, a
caption and a ``.json`` with the uid per sample, 10,000 samples a shard, years 2010-2019), then runs
the reshard in a fresh subprocess and prints pairs/s per core, by the wall clock and by the CPU time
the reshard used (goal >= 20,000; on a shared machine the CPU time is the fair measure), and that process's
peak RSS (``VmHWM``; with --workers > 1 also its largest worker's, ``getrusage``), then the ratio
of the peak RSS at the largest size to the smallest (goal <= 1.2).

    python benchmarks/bench_reshard.py [--sizes 100000,1000000] [--workers 1] [--engine local|dask] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

GOAL_PAIRS_PER_S_PER_CORE = 20_000
GOAL_MEMORY_RATIO = 1.2
PER_SHARD = 10_000

_RUN = r"""
import json, resource, sys, time

def hwm_mib():  # this process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

import ticlip.data.build.reshard  # imports (torch comes with ticlip.data.stream) are not timed
base_mib = hwm_mib()
start = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = start.ru_utime + start.ru_stime  # the imports' CPU time is not the reshard's
from ticlip.data.build.reshard import check_reshard_request, reshard_stream
spec, table, out, engine, workers = sys.argv[1:6]
t0 = time.perf_counter()
request = check_reshard_request(spec, table, {"eval_size": 1000, "shard_size": 10000})
stream = reshard_stream(request, out, engine=engine, workers=int(workers), progress=False)
elapsed = time.perf_counter() - t0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - cpu0
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "input_rows": stream.provenance["counts"]["input_rows"],
                  "rss_mib": hwm_mib(), "import_rss_mib": base_mib, "worker_rss_mib": kids.ru_maxrss / 1024}))
"""


def make_input(root: str, n: int) -> tuple[str, str]:
    """``n`` samples in shards of PER_SHARD under ``root``; the brace pattern and the Parquet table."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from ticlip.data.build.tar_stream import member as tar_member

    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 40, 90)).save(buf, format="PNG")
    png = buf.getvalue()
    shards = (n + PER_SHARD - 1) // PER_SHARD
    os.makedirs(os.path.join(root, "in"), exist_ok=True)
    uids, years = [], []
    for s in range(shards):
        with open(os.path.join(root, "in", f"{s:05d}.tar"), "wb") as f:
            for k in range(s * PER_SHARD, min(n, (s + 1) * PER_SHARD)):
                uid = f"{k:032x}"
                f.write(tar_member(f"{k:09d}.png", png))
                f.write(tar_member(f"{k:09d}.txt", f"a tiny synthetic picture number {k}".encode()))
                f.write(tar_member(f"{k:09d}.json", json.dumps({"uid": uid, "key": f"{k:09d}"}).encode()))
                uids.append(uid)
                years.append(f"{2010 + k % 10}-{1 + k % 12:02d}-{1 + k % 28:02d}")
            f.write(b"\0" * 1024)
    table = os.path.join(root, "timestamps.parquet")
    pq.write_table(pa.table({"uid": uids, "timestamp": years}), table)
    return os.path.join(root, "in", "{00000..%05d}.tar" % (shards - 1)), table


def main() -> int:
    if sys.argv[1:2] == ["--make-input"]:
        make_input(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated pair counts")
    ap.add_argument("--workers", type=int, default=1, help="cores the reshard uses (1: in one process)")
    ap.add_argument("--engine", default="local", choices=("local", "dask"))
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed)")
    args = ap.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="bench-reshard-")
    results = []
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            work = os.path.join(root, str(n))
            if not os.path.exists(os.path.join(work, "timestamps.parquet")):
                t = time.perf_counter()
                shutil.rmtree(work, ignore_errors=True)
                # in a child process, so that this one stays small (a forked child starts with its RSS)
                subprocess.run([sys.executable, __file__, "--make-input", work, str(n)], check=True)
                print(f"{n} pairs: input written in {time.perf_counter() - t:.1f} s (not timed)", flush=True)
            spec = os.path.join(work, "in", "{00000..%05d}.tar" % ((n + PER_SHARD - 1) // PER_SHARD - 1))
            out = os.path.join(work, "out")
            shutil.rmtree(out, ignore_errors=True)
            proc = subprocess.run([sys.executable, "-c", _RUN, spec, os.path.join(work, "timestamps.parquet"), out,
                                   args.engine, str(args.workers)], capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rate = r["input_rows"] / r["seconds"] / args.workers
            cpu_rate = r["input_rows"] / r["cpu_seconds"]
            peak = max(r["rss_mib"], r["worker_rss_mib"]) if args.workers > 1 else r["rss_mib"]
            results.append((n, rate, peak))
            print(f"{n} pairs: {r['seconds']:.1f} s wall, {rate:,.0f} pairs/s per core on {args.workers} core(s); "
                  f"{r['cpu_seconds']:.1f} CPU s, {cpu_rate:,.0f} pairs per CPU second "
                  f"(goal {GOAL_PAIRS_PER_S_PER_CORE:,}: {'met' if cpu_rate >= GOAL_PAIRS_PER_S_PER_CORE else 'NOT met'}); "
                  f"peak RSS {r['rss_mib']:.0f} MiB ({r['import_rss_mib']:.0f} MiB after the imports)"
                  + (f", workers' {r['worker_rss_mib']:.0f} MiB" if args.workers > 1 else ""), flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if len(results) > 1:
            ratio = results[-1][2] / results[0][2]
            print(f"peak RSS {results[-1][0]} vs {results[0][0]} pairs: {ratio:.2f}x "
                  f"(goal <= {GOAL_MEMORY_RATIO}: {'met' if ratio <= GOAL_MEMORY_RATIO else 'NOT met'})")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
