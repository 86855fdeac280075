"""`ticlip plan RUN... --target oracle --metric backward [--tolerance 1.0]`: thin wrapper over
ticlip.report.compute_planner (the compute each method needs to match a target method)."""

from __future__ import annotations


def register(subparsers) -> None:
    from ticlip.report.compute_planner import FORMS

    p = subparsers.add_parser(
        "plan",
        help="compute each method needs to match a target method's score (fits a budget sweep)",
        description="Read evaluated runs of a sweep over compute budgets, fit each method's metric against "
        "log-compute, and say how much compute each method needs to reach the target method's score (at the "
        "target's budget) within a tolerance, with a 95%% interval. Writes plan.csv, plan.json, plan.md and "
        "plots/plan_fit.png. See docs/REPORTS.md.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (runs/<name>) of the budget sweep")
    p.add_argument("--target", required=True, metavar="METHOD", help="the method to match, e.g. oracle")
    p.add_argument("--metric", default="backward",
                   help="backward, in_domain or forward (of --task), or static:<task> (default backward)")
    p.add_argument("--task", default="retrieval", help="dynamic task of the metric (default retrieval)")
    p.add_argument("--tolerance", type=float, default=1.0, help="percentage points below the target that count "
                   "as reaching it (default 1.0)")
    p.add_argument("--form", choices=FORMS, default="loglinear", help="curve fitted against log10 compute")
    p.add_argument("--target-macs", type=float, default=None,
                   help="the target budget to match (default: the target's largest compute in the sweep)")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap draws for the interval")
    p.add_argument("--out", help="output directory (default <common parent>/plan)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    import os

    from ticlip.report.compute_planner import make_plan, write_plan
    from ticlip.report.results import load_runs

    plan = make_plan(load_runs(args.runs), target=args.target, metric=args.metric, task=args.task,
                     tolerance=args.tolerance, form=args.form, target_macs=args.target_macs, samples=args.samples)
    out = args.out or os.path.join(os.path.commonpath([os.path.dirname(os.path.abspath(d)) for d in args.runs]), "plan")
    files = write_plan(plan, out)
    print(plan.to_markdown().rstrip())
    print("wrote " + ", ".join(files))
    return 0
