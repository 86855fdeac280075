"""The `ticlip` command line: a thin layer that parses arguments and calls library functions.

Each command group lives in its own module exposing ``register(subparsers)``; a registered command
sets ``func`` (taking the parsed namespace, returning an exit status or None).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ticlip import __version__
from ticlip.errors import TiclipError

# Modules that add subcommands. Each defines register(subparsers).
COMMAND_MODULES = [
    "ticlip.data.cli",
    "ticlip.data.classify_cli",
    "ticlip.eval.cli",
    "ticlip.report.cli",
    "ticlip.report.plan_cli",
    "ticlip.train.budget_cli",
    "ticlip.train.cli",
    "ticlip.experiment_cli",
    "ticlip.pretrained_cli",
    "ticlip.analysis.cli",
]


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``ticlip train: error: ... (see ticlip train --help)``)
    instead of the usage block and the error; subcommand parsers inherit the class."""

    def error(self, message: str):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ticlip",
        description="Time-continual training and evaluation of CLIP models.",
    )
    parser.add_argument("--version", action="version", version=f"ticlip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except (TiclipError, FileNotFoundError) as e:
        if os.environ.get("TICLIP_DEBUG"):
            raise
        print(f"ticlip {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
