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
    p.add_argument("--update", default="full", help="which parameters train (as ticlip train --update): full, lora, "
                                                    "bitfit, layernorm, lock-image, lock-text; with --batch-size "
                                                    "the memory-adjusted unit is reported too")
    p.add_argument("--lora-rank", type=int, default=4, help="update lora: the adapters' rank")
    p.add_argument("--lora-targets", default="attn,c_fc,c_proj", help="update lora: module suffixes, comma-separated")
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
    adjusted = _memory_adjusted(args, mpp, out, lines)
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
    if adjusted is not None:  # the same total in memory-adjusted MACs: a cheaper update buys more iterations
        mbudget = Budget(budget.total_macs, args.steps, adjusted, args.batch_size, args.budget_scale)
        out["memory_adjusted_budget"] = mbudget.to_dict()
        lines.append(f"memory-adjusted (update {args.update}): {mbudget.iterations_per_step:,} iterations per step, "
                     f"{mbudget.total_iterations:,} in total")
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


def _memory_adjusted(args, mpp: float, out: dict, lines: list[str]) -> float | None:
    """FoMo-in-Flux's memory-adjusted cost of a pair under ``--update`` at ``--batch-size`` pairs on one
    device, in full fine-tuning's MACs (``ticlip.train.memory_budget``); None without a batch size."""
    from ticlip.train.updates import UPDATES, UpdateSettings

    if args.update not in UPDATES:
        raise TiclipError(f"--update {args.update!r} is not an update: choose one of {', '.join(UPDATES)}")
    if args.lora_rank < 1:
        raise TiclipError(f"--lora-rank must be a positive integer, got {args.lora_rank}")
    if args.batch_size is None:
        if args.update != "full":
            raise TiclipError("--update needs --batch-size: memory use depends on the batch")
        return None
    from ticlip.schema import csv_list
    from ticlip.train.memory_budget import training_cost

    settings = UpdateSettings(update=args.update, lora_rank=args.lora_rank,
                              lora_targets=tuple(csv_list(args.lora_targets)))
    kw = {"image_size": args.image_size, "context_length": args.context_length}
    full = training_cost(args.model, UpdateSettings(), args.batch_size, **kw)
    this = full if args.update == "full" else training_cost(args.model, settings, args.batch_size, **kw)
    ratio = this.maf / full.maf
    out["memory_adjusted"] = {"update": args.update, "ratio": ratio, "macs_per_pair": mpp * ratio,
                              "cost": this.to_dict(), "full": full.to_dict()}
    lines.append(f"update {args.update} at batch {args.batch_size} on one device: {this.train_flops:.4g} training "
                 f"FLOPs, {this.memory_bytes / 2**30:.3g} GiB ({this.trainable_params:,} of {this.params:,} "
                 f"parameters train); memory-adjusted {mpp * ratio:.4g} MACs per pair ({ratio:.4g} x full "
                 f"fine-tuning)")
    return mpp * ratio


def _emit(args, out: dict, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(lines))
