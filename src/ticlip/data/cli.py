"""`ticlip data build | info | show`: build a stream, describe it, look at a step.

Thin: flags become build settings (``BuildConfig`` fields, derived from the schema) and source options
(or table columns); ``ticlip.data.build.build_stream_from`` does the rest, as it does for experiments.
"""

from __future__ import annotations

import json
import os
import sys

from ticlip.data.build import TABLE_OPTIONS, BuildConfig, build_stream_from, check_build_request
from ticlip.data.task_stream import ORDERS
from ticlip.errors import TiclipError
from ticlip.schema import add_schema_arguments, given_flags, parse_kv, read_yaml_mapping

_BUILD_GROUP = "build settings (BuildConfig fields; see docs/DATA.md)"


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="build, describe and look at time-continual streams")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    b = sub.add_parser(
        "build",
        help="build a stream from a source or a metadata table",
        description="Build a TimeStream (per-step webdataset shards, held-out eval and validation sets, manifest) "
        "from a registered source (emoji, synthetic) or a CSV/JSONL/Parquet table. Flags override "
        "--config, which overrides the source's defaults. See docs/DATA.md.",
    )
    b.add_argument("source", metavar="SOURCE", help="a source name (emoji, synthetic) or a .csv/.jsonl/.parquet table")
    b.add_argument("--out", required=True, help="output directory (local)")
    b.add_argument("--name", help="stream name (default: the source name or the table's file name)")
    b.add_argument("--config", help="BuildConfig YAML; flags given here override it")
    add_schema_arguments(b, BuildConfig, groups={f: _BUILD_GROUP for f in BuildConfig.model_fields},
                         metavars={"step_ends": "P1,P2,...", "aggregate_until": "PERIOD"})
    b.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes decoding and encoding images (default: min(4, CPUs))")
    for key, default in TABLE_OPTIONS.items():
        b.add_argument("--" + key.replace("_", "-"), dest=key,
                       help=f"table column of the {key[:-4]} (default {default or 'uid if present'})")
    b.add_argument("--format", dest="tic_format", choices=("tic-datacomp", "yfcc15m", "redcaps"),
                   help="SOURCE is a file in this released TiC format (ticlip.data.tic_formats): the same as "
                   "source FORMAT with --option path=SOURCE")
    b.add_argument("--images", help="--format yfcc15m/redcaps: the directory of the downloaded images "
                   "(default: the URLs in the metadata)")
    b.add_argument("--font", help="source option font: a colour emoji font file")
    b.add_argument("--num-pairs", type=int, help="source option num_pairs")
    b.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="another source option (repeatable; VALUE read as YAML)")
    t = b.add_argument_group("task streams (steps are tasks, not periods; docs/DATA.md)")
    t.add_argument("--step-col", help="table column naming each row's task: build a task stream from the table")
    t.add_argument("--class-col", default="class", help="table column of the class name (default class; "
                   "absent: the caption)")
    t.add_argument("--order", choices=ORDERS, help="order of the adaptation tasks (default given)")
    t.add_argument("--order-seed", type=int, help="seed of --order random")
    t.add_argument("--held-out", help="comma-separated tasks held out (never trained on)")
    t.add_argument("--eval-per-class", type=int, help="eval pairs per class of an adaptation task (default 10)")
    t.add_argument("--checkpoint", help="--order difficulty: the initial model's checkpoint")
    t.add_argument("--model", help="--order difficulty: the checkpoint's model name")
    from ticlip.data.reshard_cli import add_reshard_arguments

    add_reshard_arguments(b)
    b.add_argument("--overwrite", action="store_true", help="replace a different earlier build in OUT")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)

    _register_tic_timestamps(sub)

    i = sub.add_parser("info", help="per-step counts of a stream and its build counts")
    i.add_argument("dir", metavar="DIR", help="stream directory (or its stream.json; local or URL)")
    i.add_argument("--json", action="store_true", help="print the manifest's steps and counts as JSON")
    i.add_argument("--verify", action="store_true",
                   help="also read every shard and decode every image, checking the manifest's counts "
                        "(without it, info checks the manifest's counts and that its files exist)")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("show", help="a contact sheet of one step's images and captions")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--step", required=True, help="step label (2016, <=2014) or 0-based index")
    s.add_argument("--out", required=True, help="output image (e.g. sheet.png)")
    s.add_argument("--n", type=int, default=48, help="number of pairs (default 48)")
    s.add_argument("--split", default="train", help="train or an eval task such as retrieval (default train)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_show)


# ------------------------------------------------------------------------------------- build
def build_settings_from_args(args) -> dict:
    """The build settings given: the --config YAML (checked on its own, naming the file), then flags.
    The source's defaults go under them (``check_build_request``)."""
    settings = {}
    if args.config:
        settings = read_yaml_mapping(args.config)
        BuildConfig.load(settings, source=args.config)
    flags = given_flags(args, BuildConfig)
    if flags.get("max_aspect_ratio") is not None and flags["max_aspect_ratio"] <= 0:
        flags["max_aspect_ratio"] = None  # 0 on the command line: no limit
    return {**settings, **flags}


def options_from_args(args) -> dict:
    """Source options (--option KEY=VALUE, --font, --num-pairs) and table columns (--image-col, ...);
    ``check_build_request`` refuses those that do not apply to the source."""
    options = dict(parse_kv(item, flag="--option") for item in args.option)
    if args.font is not None:
        options["font"] = args.font
    if args.num_pairs is not None:
        options["num_pairs"] = args.num_pairs
    options.update({key: getattr(args, key) for key in TABLE_OPTIONS if getattr(args, key) is not None})
    return options


def _task_build(args) -> int:
    from ticlip.data.build import TABLE_OPTIONS as _cols
    from ticlip.data.stream import ADAPTATION
    from ticlip.data.task_stream import TaskBuildConfig, assign_roles, build_task_stream, difficulty_scores, group_tasks

    settings = {k: v for k, v in {"order": args.order, "order_seed": args.order_seed,
                                  "eval_per_class": args.eval_per_class,
                                  "held_out": args.held_out.split(",") if args.held_out else None}.items()
                if v is not None}
    config = TaskBuildConfig.load(settings, source="task stream")
    if config.order != "difficulty" and (args.checkpoint or args.model):
        raise TiclipError("--checkpoint and --model are for --order difficulty only")
    if config.order == "difficulty" and not (args.checkpoint and args.model and os.path.isfile(args.checkpoint)):
        raise TiclipError("--order difficulty needs the initial model: --checkpoint PATH (an existing file) "
                          f"and --model NAME; got --checkpoint {args.checkpoint} --model {args.model}")
    if args.step_col:
        from ticlip.data.table import read_table

        cols = {k: getattr(args, k) or d for k, d in _cols.items() if k != "timestamp_col"}
        records = read_table(args.source, timestamp_col=args.step_col, **cols)
        params = {"table": os.path.abspath(args.source), "step_col": args.step_col, "class_col": args.class_col}
        source, name = "table", os.path.splitext(os.path.basename(args.source))[0]
    else:
        from ticlip.data.sources import get_source

        options = options_from_args(args)
        records, params, source, name = get_source(args.source).records(options), options, args.source, args.source
    tasks = assign_roles(group_tasks(records, task_key=args.step_col or "task", class_key=args.class_col),
                         config.held_out)
    difficulty = None
    if config.order == "difficulty":  # the initial model's zero-shot top-1 per adaptation task (ticlip.eval)
        difficulty = difficulty_scores([t for t in tasks if t.role == ADAPTATION], args.checkpoint, args.model, config)
    stream = build_task_stream(tasks, args.out, config, name=args.name or name, source=source, source_params=params,
                               overwrite=args.overwrite, difficulty=difficulty, source_skipped=dict(getattr(records, "skipped", {}) or {}))
    print(f"built task stream {stream.name!r}: {len(stream.steps)} adaptation tasks ({', '.join(stream.labels)}), "
          f"{len(stream.held_out)} held out ({', '.join(s.label for s in stream.held_out)}) in {stream.root}")
    return 0


def _is_task_source(args) -> bool:
    if args.step_col:
        return True
    from ticlip.data.sources import _SOURCE_MODULES, get_source

    return args.source.lower() in _SOURCE_MODULES and get_source(args.source).kind == "tasks"


def _tic_format_source(args) -> tuple[str, dict]:
    """``--format F SOURCE``: source F with option path=SOURCE (and images=--images)."""
    options = options_from_args(args)
    if args.tic_format is None:
        if args.images is not None:
            raise TiclipError("--images is for --format yfcc15m or redcaps")
        return args.source, options
    options["path"] = args.source
    if args.images is not None:
        options["images"] = args.images
    return args.tic_format, options


def cmd_build(args) -> int:
    if getattr(args, "timestamps", None):  # existing shards + a uid -> timestamp table (ticlip.data.reshard_cli)
        from ticlip.data.reshard_cli import cmd_reshard

        return cmd_reshard(args, build_settings_from_args(args))
    if getattr(args, "tic_format", None) is None and _is_task_source(args):
        return _task_build(args)
    source, options = _tic_format_source(args)
    request = check_build_request(source, build_settings_from_args(args), options, where="")
    stream = build_stream_from(request, args.out, name=args.name, progress=not args.quiet, workers=args.workers,
                               overwrite=args.overwrite)
    train = sum(s.train.count for s in stream.steps)
    ev = sum(e.count for s in stream.steps for e in s.eval.values())
    val = f" + {sum(stream.validation_count(s) for s in stream.steps)} validation" if stream.has_validation else ""
    print(f"built stream {stream.name!r}: {len(stream.steps)} steps ({', '.join(stream.labels)}), "
          f"{train} train + {ev} eval{val} pairs in {stream.root}")
    for w in stream.provenance.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"see `ticlip data info {args.out}`")
    return 0


# -------------------------------------------------------------------------------------- info
def cmd_info(args) -> int:
    from ticlip.data.build import count_check, format_info, format_verification, verify_stream
    from ticlip.data.stream import TimeStream

    stream = TimeStream.load(args.dir, check_files=False)  # info reports missing files instead of refusing
    verified = verify_stream(stream) if args.verify else None
    if args.json:
        ok, line = count_check(stream)
        doc = {"name": stream.name, "granularity": stream.granularity,
               "steps": [s.to_dict() for s in stream.steps],
               "counts": stream.provenance.get("counts"), "counts_add_up": ok, "check": line,
               "missing_files": [path for _, _, path in stream.missing_shards()]}
        if verified is not None:
            doc["verify"] = {"ok": verified.ok, "shard_sets": verified.sets, "pairs": verified.samples,
                             "problems": verified.problems}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(format_info(stream))
        if verified is not None:
            print(format_verification(verified))
    return 0 if verified is None or verified.ok else 1


# -------------------------------------------------------------------------------------- show
def cmd_show(args) -> int:
    from ticlip.data.stream import TimeStream

    try:
        from ticlip.data.show import contact_sheet
    except ImportError:
        raise TiclipError("`ticlip data show` is not available in this installation (ticlip.data.show missing)") from None
    if args.n < 1:
        raise TiclipError(f"--n must be at least 1, not {args.n}")
    stream = TimeStream.load(args.dir)
    step = stream.step(args.step)
    path = contact_sheet(stream, step, args.out, n=args.n, split=args.split, seed=args.seed)
    print(f"wrote {path or args.out} ({step.label}, {args.split})")
    return 0


# ----------------------------------------------------------------------------- tic-timestamps
def _register_tic_timestamps(sub) -> None:
    t = sub.add_parser("tic-timestamps", help="TiC-DataComp's uid files as one uid -> timestamp table",
                       description="Read TiC-DataComp's per-period uid files (YYYY.npy, YYYYMM.npy, or the "
                       "CDN's YYYY.tar) and write a Parquet table with columns uid and timestamp (the period), "
                       "for resharding existing DataComp shards by time. See ticlip.data.tic_formats.")
    t.add_argument("paths", nargs="+", metavar="PATH", help="uid files or directories holding them")
    t.add_argument("--out", required=True, help="the table to write (.parquet)")
    t.set_defaults(func=cmd_tic_timestamps)


def cmd_tic_timestamps(args) -> int:
    from ticlip.data.tic_formats import read_tic_datacomp_timestamps, tic_datacomp_files, write_timestamp_table

    if not args.out.endswith(".parquet"):
        raise TiclipError(f"--out {args.out}: name a .parquet file")
    for path in args.paths:
        tic_datacomp_files(path)  # every input checked before anything is written

    def pairs():
        for path in args.paths:
            yield from read_tic_datacomp_timestamps(path)

    n = write_timestamp_table(pairs(), args.out)
    print(f"wrote {n} uid -> timestamp rows to {args.out}")
    return 0
