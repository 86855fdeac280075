"""`ticlip analyze shift STREAM` and `ticlip analyze forgetting RUN`: thin wrappers over
ticlip.analysis.run_shift and ticlip.analysis.run_forgetting (docs/ANALYSIS.md)."""

from __future__ import annotations

import sys

SHIFT_FLAGS = ("split", "task", "top_k", "max_samples", "seed", "fid", "drift_top", "min_count", "examples",
               "batch_size", "device", "wordnet_dir")
FORGETTING_FLAGS = ("task", "max_samples", "seed", "min_count", "examples", "show", "batch_size", "device",
                    "wordnet_dir")


def register(subparsers) -> None:
    from ticlip.analysis.config import ForgettingConfig, ShiftConfig
    from ticlip.schema import add_schema_arguments

    a = subparsers.add_parser("analyze", help="distribution shift of a stream; concepts a run forgot",
                              description="Analyses the report picks up: `shift` (per stream) and `forgetting` "
                              "(per run). See docs/ANALYSIS.md.")
    sub = a.add_subparsers(dest="analysis", metavar="ANALYSIS")
    s = sub.add_parser(
        "shift", help="FID and noun TV distance between every pair of steps; concepts new or growing per step",
        description="For every pair of steps: FID between image embeddings of a model (--checkpoint + --model, "
        "or --run + --step) and the total-variation distance between the steps' distributions of the top-k "
        "WordNet nouns in captions (TiC-CLIP §2.4, App. C.6). Writes shift_fid.csv, shift_tv.csv, heatmaps "
        "and shift.json (with the concepts new or grown most per step and sample images) to --out "
        "(default STREAM/analysis, where `ticlip report` looks).")
    s.add_argument("stream", metavar="STREAM", help="stream directory or stream.json")
    s.add_argument("--out", help="output directory (default STREAM/analysis)")
    s.add_argument("--checkpoint", help="open_clip checkpoint whose image embeddings FID compares")
    s.add_argument("--model", help="open_clip model name of --checkpoint")
    s.add_argument("--run", help="take the model from this run directory (with --step)")
    s.add_argument("--step", help="step label or index of --run")
    add_schema_arguments(s, ShiftConfig, SHIFT_FLAGS)
    s.set_defaults(func=run_shift_cmd)
    f = sub.add_parser(
        "forgetting", help="per-concept retrieval: the model that introduced a concept against the last model",
        description="For each WordNet noun of the run's eval captions: image→text recall@1 on the eval pairs of "
        "the step that introduced it (its first step with at least --min-count pairs) under that step's model "
        "and under the last model. Writes RUN/analysis/forgetting.csv and forgetting.json (examples of the "
        "concepts that dropped most), which `ticlip report` shows.")
    f.add_argument("run", metavar="RUN", help="run directory (holding run.json and step checkpoints)")
    add_schema_arguments(f, ForgettingConfig, FORGETTING_FLAGS)
    f.set_defaults(func=run_forgetting_cmd)
    a.set_defaults(func=lambda args: (a.print_help(), 2)[1])


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_shift_cmd(args) -> int:
    from ticlip.analysis.config import ShiftConfig
    from ticlip.analysis.run_shift import analyze_shift
    from ticlip.schema import given_flags

    import numpy as np

    cfg = ShiftConfig.load(given_flags(args, ShiftConfig), source="ticlip analyze shift")
    res = analyze_shift(args.stream, args.out, cfg, checkpoint=args.checkpoint, model=args.model, run=args.run,
                        step=args.step, log=_log)
    for name, M in (("FID", res.fid), ("TV", res.tv)):
        if M is not None:
            off = M[~np.eye(len(M), dtype=bool)]
            print(f"{name}: mean over step pairs {off.mean():.4g}, max {off.max():.4g}")
    print(f"wrote {len(res.files)} files to {res.out_dir}")
    return 0


def run_forgetting_cmd(args) -> int:
    from ticlip.analysis.config import ForgettingConfig
    from ticlip.analysis.run_forgetting import analyze_forgetting
    from ticlip.schema import given_flags

    cfg = ForgettingConfig.load(given_flags(args, ForgettingConfig), source="ticlip analyze forgetting")
    meta = analyze_forgetting(args.run, cfg, log=_log)
    for c in meta["dropped_most"]:
        print(f"{c['concept']}: introduced {c['step']} (n={c['n']}), recall@1 {c['recall_intro']:.3f} -> "
              f"{c['recall_last']:.3f}")
    print(f"{meta['concepts']} concepts scored; wrote {len(meta['files'])} files to {meta['out_dir']}")
    return 0
