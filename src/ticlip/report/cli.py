"""`ticlip report RUN [RUN ...] [--out DIR]`: thin wrapper over ticlip.report.write.write_report."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables, heatmaps, compute curves and an offline report.html for evaluated runs",
        description="Summarise evaluated runs (run.json + matrix_<task>.csv / static_scores.csv from "
        "`ticlip eval`): a TiC-CLIP Table 2-style table (Markdown, CSV, HTML), the evaluation-matrix "
        "heatmap of each method, scores against cumulative compute, per-step curves. Runs of one method "
        "with different seeds are averaged (mean ± std). See docs/REPORTS.md.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (runs/<name>)")
    p.add_argument("--out", help="output directory (default: the run's directory for one run, "
                   "<common parent>/report for several)")
    p.add_argument("--title", help="page title")
    p.add_argument("--reference", default=None, metavar="METHOD",
                   help="method every other is compared with, paired by training seed (default cumulative-all "
                        "when it is among the runs)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ticlip.report.tables import DEFAULT_REFERENCE
    from ticlip.report.write import write_report

    files = write_report(args.runs, args.out, title=args.title, reference=args.reference or DEFAULT_REFERENCE,
                         require_reference=args.reference is not None)
    for w in files.warnings:
        print(f"warning: {w}")
    with open(files.markdown, encoding="utf-8") as f:
        print(f.read().rstrip())
    print(f"wrote {files.html} ({len(files.plots)} figures in {files.out_dir}/plots), "
          f"{files.markdown}, {files.csv}, {files.summary}")
    return 0
