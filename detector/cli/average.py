"""`python -m detector average`: one model file from the mean of several runs' weights (`detector.average`).

    python -m detector average runs/a/model.pth runs/b/model.pth --out runs/ab.pth --validate runs/a/data/val

The runs must be fine-tunes of the same model file (`train --init-from`), e.g.
the same stage with other seeds; the lineage in each file is checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.cli import command_line
from detector.cli.model import validation_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "average",
        help="average the weights of runs fine-tuned from one model file into one model file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", type=Path, nargs="+", metavar="MODEL.pth", help="two or more station model files")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.pth", help="model file to write")
    p.add_argument("--validate", type=Path, metavar="SPLIT_DIR",
                   help="measure validation AP on a split folder of `detector dataset` (annotations.json + images/)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.pth if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detector.average import average_model_files

    if args.out.suffix.lower() != ".pth":
        print(f"error: --out must end in .pth, got {args.out}", file=sys.stderr)
        return 2
    if any(args.out.resolve() == m.resolve() for m in args.models):
        print("error: --out must not be one of the models averaged", file=sys.stderr)
        return 2
    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; --overwrite replaces it", file=sys.stderr)
        return 2
    if args.validate and not (args.validate / "annotations.json").is_file():
        print(f"error: {args.validate} is not a split folder (no annotations.json)", file=sys.stderr)
        return 2
    try:
        model = average_model_files(args.models, args.out, validate=args.validate, command=command_line(args))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: the mean of {len(args.models)} models' weights")
    val = model.metadata.training.get("validation")
    if val:
        print(validation_summary(val))
    return 0
