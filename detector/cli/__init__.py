"""`python -m detector ...`: data sets, training, evaluation, model files.

Every argument parser of the detector lives in this package, one module per
command (`register(sub)` adds it, `run(args)` runs it); the library modules
(`detector.train`, `detector.evaluate`, ...) take plain typed arguments.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from detector.cli import average, dataset, evaluate, export, model, quantize, train

    parser = argparse.ArgumentParser(
        prog="python -m detector",
        description="Scratch/pit detector: build data sets, train, evaluate, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dataset.register(sub)
    train.register(sub)
    evaluate.register(sub)
    export.register(sub)
    quantize.register(sub)
    model.register(sub)
    average.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return int(args.func(args) or 0)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, for the provenance recorded in model files."""
    return "python -m detector " + " ".join(getattr(args, "argv", None) or sys.argv[1:])
