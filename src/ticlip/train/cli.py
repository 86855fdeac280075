"""`ticlip train`: run a continual-training method over a stream (thin layer over ticlip.train.run).

Every flag that sets a training setting is derived from ``ticlip.config.TrainConfig``: its name, help
text and default come from the schema, so the two cannot drift apart.
"""

from __future__ import annotations

import sys

from ticlip.config import TrainConfig, parse_param
from ticlip.schema import add_schema_arguments, given_flags

# TrainConfig fields by argument group, in --help order (method_params has its own repeatable flag).
FLAG_GROUPS = {
    "what to train": ["stream", "method", "model", "init", "steps"],
    "budget": ["total_macs", "iterations_per_step", "budget_scale", "budget_unit"],
    "parameter-efficient updates": ["update", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets"],
    "optimisation (open_clip's flags)": [
        "batch_size", "accum_freq", "lr", "wd", "beta1", "beta2", "eps", "warmup", "warmup_later", "schedule",
        "warmup_every_step", "decay_fraction", "anneal", "rsqrt_timescale", "peak_decay", "optimizer",
        "grad_clip_norm", "precision",
    ],
    "execution and outputs": [
        "workers", "seed", "device", "threads", "name", "label", "logs", "report_to", "log_every", "chunk_iterations",
        "save_every_s", "shuffle_buffer", "memory_limit_mb", "progress", "step_cache",
    ],
}
NOT_SETTINGS = ("func", "command", "config", "resume", "method_param")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a CLIP model continually over a stream's steps, within a compute budget",
        description=(
            "For every step of the stream (or --steps A:B): ask the method for its data plan and init, train "
            "the budgeted iterations, write runs/<name>/steps/<index>/checkpoint.pt (open_clip format). "
            "Example: ticlip train --stream data/emoji --method cumulative-all --iterations-per-step 150. "
            "Under torchrun every process runs this same command (DDP; gloo on CPU, nccl on GPU). "
            "Boolean settings also take --no-NAME."
        ),
    )
    metavars = {"init": "PATH", "steps": "A:B"}
    for title, fields in FLAG_GROUPS.items():
        group = p.add_argument_group(title)
        add_schema_arguments(group, TrainConfig, fields, metavars=metavars)
        if title == "what to train":
            group.add_argument("--method-param", action="append", default=[], metavar="KEY=VALUE",
                               help="a method parameter, e.g. lam=1.0 (repeatable)")
            group.add_argument("--config", default=None, metavar="YAML",
                               help="read settings from a YAML file (flags win)")
        if title == "execution and outputs":
            group.add_argument("--resume", action="store_true",
                               help="continue an interrupted run from its last saved state")
    p.set_defaults(func=run)


def config_from_args(args) -> tuple[TrainConfig, set[str]]:
    """TrainConfig from --config (if any) overridden by the flags given; also the given setting names."""
    given = given_flags(args, TrainConfig)
    base = TrainConfig.from_yaml(args.config).to_dict() if args.config else {}
    base.update(given)
    params = dict(base.get("method_params") or {})
    for text in args.method_param:
        key, value = parse_param(text)
        params[key] = value
    base["method_params"] = params
    names = set(given) | ({"method_params"} if args.method_param else set())
    return TrainConfig.load(base, source=args.config or "command line"), names


def run(args) -> int:
    from ticlip.train.run import resume_overrides_ignored, train_run

    cfg, given = config_from_args(args)
    if args.resume:
        ignored = resume_overrides_ignored(cfg, given)
        if ignored:
            print(f"ticlip train: note: --resume uses the run's saved config; ignoring {', '.join(ignored)}",
                  file=sys.stderr)
    info = train_run(cfg, resume=args.resume, given=given)
    done = sum(1 for s in info.steps if s.finished)
    print(f"run {info.name}: {done} step(s) trained; checkpoints under "
          f"{cfg.logs}/{info.name}/steps/<index>/checkpoint.pt")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ticlip.train.cli ...`` (same as ``ticlip train ...``)."""
    from ticlip.cli import main as ticlip_main

    return ticlip_main(["train", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
