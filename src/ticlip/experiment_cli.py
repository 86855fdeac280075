"""`ticlip run`, `ticlip demo` and `ticlip compare`: experiments from one YAML file."""

from __future__ import annotations

import os
import sys

from ticlip.schema import csv_list

DEMO_PRESET = "emoji-cpu"


def _add_run_flags(p, *, with_config: bool) -> None:
    if with_config:
        p.add_argument("config", help="experiment YAML, or a preset name from configs/ (e.g. emoji-cpu, tic-yfcc)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the YAML, dotted for sections (e.g. train.lr=5e-4, stream.path=data/x); repeatable")
    p.add_argument("--methods", type=csv_list, help="comma-separated methods (overrides 'methods')")
    p.add_argument("--seeds", type=csv_list, help="comma-separated seeds (overrides 'seeds')")
    p.add_argument("--name", help="experiment name (overrides 'name'; results go to LOGS/NAME)")
    p.add_argument("--logs", help="where experiments are written (overrides 'logs'; default runs)")
    p.add_argument("--parallel", type=int, help="training processes at once (overrides 'parallel')")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--no-report", action="store_true", help="do not write the report")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run an experiment: build the stream if missing, train every run, evaluate, report",
        description="Run an experiment from a YAML file: methods x seeds x sweep values. Finished runs are "
                    "skipped and interrupted ones resumed, so re-running only does what is missing.",
    )
    _add_run_flags(p, with_config=True)
    p.set_defaults(func=run_command)

    d = subparsers.add_parser(
        "demo", help=f"the CPU demo: every method on the emoji stream (the {DEMO_PRESET} preset), then the comparison",
        description=f"Runs the {DEMO_PRESET} preset: builds the emoji stream if needed, trains every method on "
                    "it on the CPU, evaluates, prints the comparison table and the path of report.html.",
    )
    _add_run_flags(d, with_config=False)
    d.set_defaults(func=demo_command)

    c = subparsers.add_parser("compare", help="print the comparison table (mean ± std over seeds, chance levels, "
                                              "paired differences to a reference method) of evaluated runs")
    c.add_argument("runs", nargs="+", help="run directories, or an experiment directory holding them")
    c.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    c.add_argument("--reference", default=None, metavar="METHOD",
                   help="method every other is compared with, paired by training seed (default cumulative-all "
                        "when it is among the runs; e.g. --reference oracle)")
    c.set_defaults(func=compare_command)


def _overrides(args) -> list[str]:
    items = list(args.overrides)
    if args.methods:
        items.append(f"methods=[{', '.join(args.methods)}]")
    if args.seeds:
        items.append(f"seeds=[{', '.join(args.seeds)}]")
    for key in ("name", "logs", "parallel"):
        value = getattr(args, key)
        if value is not None:
            items.append(f"{key}={value}")
    return items


def _run(config: str, args) -> int:
    from ticlip.experiment import load_experiment, preset_path, run_experiment

    exp = load_experiment(config, _overrides(args))
    result = run_experiment(exp, evaluate=not args.no_eval, report=not args.no_report, source=preset_path(config))
    print()
    if result.table:
        print(result.table.rstrip())
        print()
    if result.failed:
        print(f"FAILED runs: {', '.join(result.failed)}", file=sys.stderr)
    minutes = result.seconds / 60
    print(f"{len(result.runs)} runs ({len(result.trained)} trained now, {len(result.skipped)} already finished) "
          f"in {minutes:.1f} min; results in {result.out_dir}")
    if result.report:
        print(f"report: {os.path.abspath(result.report)}")
    return 1 if result.failed else 0


def run_command(args) -> int:
    return _run(args.config, args)


def demo_command(args) -> int:
    return _run(DEMO_PRESET, args)


def expand_run_dirs(paths: list[str]) -> list[str]:
    """Run directories as given; an experiment directory stands for the runs inside it."""
    from ticlip.errors import TiclipError
    from ticlip.run_layout import RUN_INFO

    out = []
    for p in paths:
        if os.path.exists(os.path.join(p, RUN_INFO)):
            out.append(p)
        elif os.path.isdir(p):
            inner = sorted(os.path.join(p, d) for d in os.listdir(p) if os.path.exists(os.path.join(p, d, RUN_INFO)))
            if not inner:
                raise TiclipError(f"{p} holds no ticlip runs (no */{RUN_INFO})")
            out.extend(inner)
        else:
            raise TiclipError(f"no run directory {p}")
    return out


def compare_command(args) -> int:
    from ticlip.report.results import group_runs, load_runs
    from ticlip.report.tables import DEFAULT_REFERENCE, summary_table

    runs = load_runs(expand_run_dirs(args.runs))
    for r in runs:
        for w in r.warnings:
            print(f"warning: {w}", file=sys.stderr)
    reference = args.reference or DEFAULT_REFERENCE
    table = summary_table(group_runs(runs), reference, require_reference=args.reference is not None)
    print(table.to_markdown() if args.format == "markdown" else table.to_csv(), end="")
    return 0
