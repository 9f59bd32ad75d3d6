"""`python -m detector ...`: data sets, training, evaluation, model files."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from detector import evaluate, export, model_tool, quantize, train
    from detector.data import cli as dataset_cli

    parser = argparse.ArgumentParser(
        prog="python -m detector",
        description="Scratch/pit detector: build data sets, train, evaluate, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dataset_cli.register(sub)
    train.register(sub)
    evaluate.register(sub)
    export.register(sub)
    quantize.register(sub)
    model_tool.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
