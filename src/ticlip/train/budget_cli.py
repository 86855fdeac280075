"""`ticlip budget`: per-pair MACs of a model and what a total budget buys per step."""

from __future__ import annotations

import json

from ticlip.errors import TiclipError


def _number(text: str) -> float:
    """A positive finite float (argparse type)."""
    import argparse

    from ticlip.schema import number

    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number: {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "budget",
        help="MACs per image-text pair and the iterations a total compute budget buys",
        description=(
            "Forward MACs of one image-text pair (FlopCounterMode, train mode) and, with --total-macs or "
            "--iterations-per-step, the per-step budget split evenly over --steps (TiC-CLIP's convention: "
            "budget = forward MACs per pair x pairs seen). Example, the paper's TiC-YFCC row: "
            "ticlip budget --model ViT-B-16 --total-macs 3.4e18 --batch-size 8192 --steps 4"
        ),
    )
    p.add_argument("--model", required=True, help="open_clip model name (ViT-B-16, ticlip-tiny-32, ...)")
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: the model's)")
    p.add_argument("--context-length", type=int, default=None, help="text tokens (default: the model's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--total-macs", type=_number, default=None, help="total budget over all steps, e.g. 3.4e18")
    g.add_argument("--iterations-per-step", type=int, default=None,
                   help="instead of --total-macs: the budget that buys this many iterations per step")
    p.add_argument("--batch-size", type=int, default=None, help="GLOBAL batch size (all processes)")
    p.add_argument("--steps", type=int, default=None, help="number of time steps the budget is split over")
    p.add_argument("--budget-scale", type=_number, default=1.0,
                   help="multiply the budget (e.g. 1.5 for Cumulative-All* with a little extra compute)")
    p.add_argument("--method", action="append", default=[], metavar="NAME",
                   help="also print per-step rows for this method (repeatable; 'all' for every method)")
    p.add_argument("--schedule", default="cosine",
                   help="LR schedule: cosine, constant, cosine-decaying-peak, global-cosine; const-cosine, wsd, rsqrt "
                        "(their trunk is charged)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e6 else f"{x:,.0f}"


def run(args) -> int:
    from ticlip.train.budget import Budget, BudgetError, macs_per_pair

    for name in ("batch_size", "steps", "iterations_per_step", "image_size", "context_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BudgetError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    mpp = macs_per_pair(args.model, args.image_size, args.context_length)
    out: dict = {"model": args.model, "image_size": args.image_size, "context_length": args.context_length,
                 "macs_per_pair": mpp}
    lines = [f"model {args.model}: {mpp:.4g} forward MACs per image-text pair"
             + (f" (image {args.image_size}px)" if args.image_size else "")
             + (f" (context {args.context_length} tokens)" if args.context_length else "")]
    if args.total_macs is None and args.iterations_per_step is None:
        if args.method:
            raise TiclipError("--method needs a budget: give --total-macs (or --iterations-per-step)")
        _emit(args, out, lines)
        return 0
    missing = [f for f in ("batch_size", "steps") if getattr(args, f) is None]
    if missing:
        raise TiclipError("a budget needs " + " and ".join("--" + m.replace("_", "-") for m in missing))
    if args.total_macs is not None:
        budget = Budget(args.total_macs, args.steps, mpp, args.batch_size, args.budget_scale)
    else:
        base = Budget.from_iterations(args.iterations_per_step, args.steps, mpp, args.batch_size)
        budget = Budget(base.total_macs, args.steps, mpp, args.batch_size, args.budget_scale)
    out["budget"] = budget.to_dict()
    lines += [
        f"total budget {budget.total_macs:.4g} MACs"
        + (f" x scale {args.budget_scale:g}" if args.budget_scale != 1 else "")
        + f" over {budget.steps} steps: {budget.per_step_macs:.4g} MACs per step",
        f"global batch {budget.global_batch_size}: {budget.macs_per_iteration:.4g} MACs per iteration",
        f"iterations per step: {budget.iterations_per_step:,} ({budget.pairs_per_step:,} pairs)",
        f"iterations in total: {budget.total_iterations:,}",
    ]
    if args.method:
        from ticlip.methods import get_method, list_methods
        from ticlip.train.schedule import ScheduleConfig

        schedule = ScheduleConfig(kind=args.schedule)
        names = list_methods() if "all" in args.method else args.method
        out["methods"] = {}
        notes: list[str] = []
        lines.append("")
        lines.append(f"{'method':<18}{'step':>5}{'iterations':>12}{'train MACs':>12}{'extra MACs':>12}{'overrun':>9}")
        for name in names:
            method = get_method(name)
            rows = budget.plan(method, schedule=schedule)
            out["methods"][method.name] = [r.to_dict() for r in rows]
            for r in rows:
                if r.cost.note and r.cost.note not in notes:
                    notes.append(r.cost.note)
            for r in rows:
                lines.append(f"{method.name:<18}{r.step:>5}{r.iterations:>12,}{r.macs:>12.3g}"
                             f"{r.extra_macs_estimate:>12.3g}{r.overrun:>8.0%} ")
            total_it = sum(r.iterations for r in rows)
            total = sum(r.total_macs for r in rows)
            lines.append(f"{method.name:<18}{'all':>5}{total_it:>12,}{total:>12.3g}"
                         f"{'':>12}{max(0.0, total / (budget.total_macs * budget.budget_scale) - 1):>8.0%} ")
        lines += [f"({note})" for note in notes]
    _emit(args, out, lines)
    return 0


def _emit(args, out: dict, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(lines))
