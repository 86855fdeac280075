"""`ticlip eval` (score a run's checkpoints, or one outside checkpoint) and `ticlip metrics`
(ID / backward / forward transfer of an evaluation matrix, as JSON). Thin: flags (derived from
EvalConfig) -> EvalConfig -> ticlip.eval.runner; see docs/EVAL.md.
"""

from __future__ import annotations

import json
import os
import sys

from ticlip.errors import TiclipError

# EvalConfig fields that are flags of `ticlip eval` (subsample_cap and cache_bytes are config-only)
FLAG_FIELDS = ("tasks", "seeds", "subsample", "batch_size", "device", "workers", "data_dir", "task_file", "steps")


def _task_difficulty(tasks, checkpoint, model, config):
    from ticlip.eval.task_scores import task_difficulty

    return task_difficulty(tasks, checkpoint, model, config)


def register(subparsers) -> None:
    from ticlip.data.task_stream import register_difficulty_scorer
    from ticlip.eval.config import EvalConfig
    from ticlip.schema import add_schema_arguments

    register_difficulty_scorer(_task_difficulty)  # `ticlip data build --order difficulty` (data cannot import eval)

    e = subparsers.add_parser(
        "eval",
        help="score every step checkpoint of a run on every step's eval sets and on static tasks",
        description="Evaluate a run (RUN: its directory) or one outside open_clip checkpoint "
        "(--checkpoint, --model, --stream). Results are appended to eval.jsonl as they finish "
        "(finished pairs are skipped on a re-run); matrix_<task>.csv, static_scores.csv and "
        "eval_summary.json are written at the end. Under torchrun the ranks split the (model step, task) "
        "work and rank 0 writes the results. See docs/EVAL.md.",
    )
    e.add_argument("run", nargs="?", metavar="RUN", help="run directory (holding run.json)")
    add_schema_arguments(e, EvalConfig, FLAG_FIELDS, metavars={"tasks": "NAMES", "steps": "INDICES"})
    e.add_argument("--checkpoint", help="evaluate this open_clip checkpoint instead of a run: a file, "
                   "hf-hub:ORG/REPO[/FILE] or an open_clip MODEL:TAG (docs/TRAINING.md, hub checkpoints)")
    e.add_argument("--model", help="open_clip model name of --checkpoint (e.g. ViT-B-16)")
    e.add_argument("--stream", help="stream directory or stream.json for --checkpoint")
    e.add_argument("--out", help="output directory for --checkpoint (default evals/<checkpoint name>)")
    e.add_argument("--list-tasks", action="store_true", help="print the task table and exit")
    e.add_argument("--no-progress", action="store_true",
                   help="no progress display on stderr (models, tasks, images+texts encoded per second)")
    e.set_defaults(func=run_eval)

    m = subparsers.add_parser(
        "metrics",
        help="in-domain, backward and forward transfer of an evaluation matrix, as JSON",
        description="Print JSON summaries of E (rows: model after step i, columns: eval data of step j): "
        "in_domain (mean diagonal), backward (mean below it), forward (mean above it) and the normalised "
        "variants. MATRIX is a CSV (step labels as header/index allowed) or a run/eval directory (every "
        "matrix_*.csv in it, plus static_scores.csv).",
    )
    m.add_argument("matrix", metavar="MATRIX", help="matrix CSV, or a directory holding matrix_*.csv")
    m.set_defaults(func=run_metrics)


def config_from_args(args):
    """The EvalConfig of the flags given (schema defaults for the rest); one-line ConfigError if invalid."""
    from ticlip.eval.config import EvalConfig
    from ticlip.schema import ConfigError, given_flags

    flags = given_flags(args, EvalConfig)
    for name in ("tasks", "steps"):
        if name in flags and not flags[name]:
            raise ConfigError(f"--{name} needs at least one value")
    return EvalConfig.load(flags, source="ticlip eval")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_eval(args) -> int:
    from ticlip.eval.metrics import json_safe
    from ticlip.eval.runner import evaluate_checkpoint, evaluate_run
    from ticlip.eval.tasks import load_tasks
    from ticlip.progress import EvalProgress

    if args.list_tasks:
        for t in load_tasks(getattr(args, "task_file", None)).values():
            where = t.eval_set if t.dynamic else t.loader
            print(f"{t.name:32s} {t.kind:24s} {where:16s} {'' if t.default else '(not default) '}{t.description}")
        return 0
    config = config_from_args(args)
    outside = [f for f, v in (("--model", args.model), ("--stream", args.stream), ("--out", args.out)) if v]
    _check_targets(args, config, outside)
    from ticlip.eval.dist import init_eval_dist, main_rank_lock

    ed = init_eval_dist()  # under torchrun: the ranks share the work, rank 0 writes (ticlip.eval.dist)
    try:
        progress = EvalProgress(enabled=not args.no_progress and ed.is_main)
        if args.checkpoint:
            from ticlip.models import checkpoint_label

            out = args.out or os.path.join("evals", checkpoint_label(args.checkpoint))  # hub names: the file or repo
            with main_rank_lock(ed, out, what="evaluation"):  # one writer per output directory
                outcome = evaluate_checkpoint(args.checkpoint, args.model, args.stream, out, config, log=_log,
                                              progress=progress, dist=ed)
        else:
            # it writes results into the run: one writer at a time (not while it trains, not two evaluations)
            with main_rank_lock(ed, args.run, what="run", create=False):
                outcome = evaluate_run(args.run, config, log=_log, progress=progress, dist=ed)
    finally:
        ed.shutdown()
    if not ed.is_main:
        return 0  # rank 0 reports for every rank
    report = {
        "out_dir": outcome.out_dir,
        "evaluated": outcome.evaluated,
        "reused": outcome.reused,
        "models_loaded": outcome.models_loaded,
        "skipped_tasks": outcome.skipped_tasks,
        "skipped_models": outcome.skipped_models,
        "files": outcome.files,
        "summary": {k: v for k, v in outcome.summary.items() if k != "skipped_tasks"},
    }
    print(json.dumps(json_safe(report), indent=2, ensure_ascii=False))
    return 0


def _check_targets(args, config, outside: list[str]) -> None:
    """RUN or --checkpoint with --model and --stream, checked before any process group or lock."""
    if args.checkpoint:
        if args.run:
            raise TiclipError("give either RUN or --checkpoint, not both")
        if not args.model or not args.stream:
            raise TiclipError("--checkpoint needs --model NAME (e.g. ViT-B-16) and --stream DIR")
        if config.steps is not None:
            raise TiclipError("--steps applies to runs, not to --checkpoint")
        return
    if not args.run:
        raise TiclipError("give a run directory (ticlip eval RUN) or --checkpoint PATH --model NAME --stream DIR")
    if outside:
        raise TiclipError(f"{', '.join(outside)} apply to --checkpoint; a run names its own model and stream")
    if not os.path.isdir(args.run):
        raise TiclipError(f"no run directory {args.run}")


def run_metrics(args) -> int:
    from ticlip.eval.metrics import json_safe, static_summary
    from ticlip.eval.results import STATIC_SCORES, matrix_files, matrix_metrics, read_static_scores, task_of_matrix_file

    path = args.matrix
    if os.path.isdir(path):
        files = matrix_files(path)
        if not files:
            raise TiclipError(f"no matrix_*.csv in {path}: run `ticlip eval` first")
        out: dict = {task_of_matrix_file(f): matrix_metrics(f) for f in files}
        static_path = os.path.join(path, STATIC_SCORES)
        if os.path.exists(static_path):
            S, _, tasks = read_static_scores(static_path)
            out["static"] = {t: static_summary(S[:, k]) for k, t in enumerate(tasks)}
    else:
        out = matrix_metrics(path)
    print(json.dumps(json_safe(out), indent=2, ensure_ascii=False))
    return 0
