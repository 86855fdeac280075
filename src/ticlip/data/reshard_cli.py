"""``ticlip data build SHARDS --timestamps TABLE --out DIR``: the reshard's flags → ``reshard_stream``
(``ticlip.data.build.reshard``); ``ticlip.data.cli`` registers the flags and calls ``cmd_reshard``."""

from __future__ import annotations

import sys

from ticlip.errors import TiclipError

# flags of `ticlip data build` that mean nothing for a reshard (refused rather than ignored)
_NOT_FOR_RESHARD = {"image_col": "--image-col", "caption_col": "--caption-col", "font": "--font",
                    "num_pairs": "--num-pairs", "step_col": "--step-col", "order": "--order",
                    "held_out": "--held-out", "checkpoint": "--checkpoint", "model": "--model"}


def add_reshard_arguments(parser) -> None:
    g = parser.add_argument_group("reshard existing webdataset shards by timestamp, without re-encoding "
                                  "(SOURCE is then SHARDS: a brace pattern, a directory or a list file; "
                                  "docs/DATA.md)")
    g.add_argument("--timestamps", metavar="TABLE",
                   help="CSV/Parquet table mapping each sample's uid to its timestamp (--uid-col, default uid; "
                        "--timestamp-col, default timestamp): reshard SOURCE's shards by it")
    g.add_argument("--engine", choices=("local", "dask"), default="local",
                   help="where the reshard runs: local processes (--workers) or a dask.distributed cluster "
                        "(a local one of --workers workers, or --scheduler's); the output is the same")
    g.add_argument("--scheduler", metavar="ADDRESS", help="--engine dask: the address of an existing cluster "
                   "(e.g. tcp://10.0.0.1:8786); OUT must then be on a file system every worker mounts at the same path")


def cmd_reshard(args, settings: dict) -> int:
    from ticlip.data.build.reshard import check_reshard_request, reshard_stream

    for key, flag in _NOT_FOR_RESHARD.items():
        if getattr(args, key, None) not in (None, False):
            raise TiclipError(f"{flag} does not apply with --timestamps (a reshard copies the shards' samples); "
                              "leave it out")
    if getattr(args, "option", None):
        raise TiclipError("--option does not apply with --timestamps; leave it out")
    request = check_reshard_request(args.source, args.timestamps, settings, uid_col=args.uid_col or "uid",
                                    timestamp_col=args.timestamp_col or "timestamp")
    stream = reshard_stream(request, args.out, name=args.name, engine=args.engine, workers=args.workers,
                            scheduler=args.scheduler, progress=not args.quiet, overwrite=args.overwrite)
    c = stream.provenance["counts"]
    train = sum(s.train.count for s in stream.steps)
    ev = sum(e.count for s in stream.steps for e in s.eval.values())
    val = f" + {sum(stream.validation_count(s) for s in stream.steps)} validation" if stream.has_validation else ""
    print(f"resharded {c['input_rows']} samples of {len(request.shards)} shards into stream {stream.name!r}: "
          f"{len(stream.steps)} steps ({', '.join(stream.labels)}), {train} train + {ev} eval{val} pairs in "
          f"{stream.root}; skipped {c['skipped'] or 0}, filtered {c['filtered'] or 0}, duplicates {c['duplicates']}")
    for w in stream.provenance.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"see `ticlip data info {args.out}`")
    return 0


__all__ = ["add_reshard_arguments", "cmd_reshard"]
