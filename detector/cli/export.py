"""`python -m detector export`: a station model file as one ONNX file (`detector.export`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.export import DEFAULT_OPSET, MIN_OPSET, export_onnx


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `export` sub-command; sets `func=run` on the parsed args."""
    p = subparsers.add_parser(
        "export",
        help="export a model file to ONNX for the light station runtime",
        description=(
            "Export a station model file (.pth) to one ONNX file holding the network "
            "(backbone, neck, CenterNet heads; dynamic batch) and the model's metadata. "
            "The export is checked with the ONNX checker and its ONNX Runtime outputs are "
            "compared with PyTorch's before the file is written."
        ),
    )
    p.add_argument("--model", required=True, type=Path, metavar="PATH", help="station model file (.pth)")
    p.add_argument("--out", type=Path, metavar="OUT.onnx", help="ONNX file to write (default: the model path with .onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset version (default: {DEFAULT_OPSET})")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Entry point of `export`; returns the process exit status."""
    out = args.out if args.out is not None else args.model.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        print(f"error: --out must end in .onnx, got {out}", file=sys.stderr)
        return 2
    if not MIN_OPSET <= args.opset <= 20:
        print(f"error: --opset must be within {MIN_OPSET}..20, got {args.opset}", file=sys.stderr)
        return 2
    if out.resolve() == args.model.resolve():
        print("error: --out must differ from --model", file=sys.stderr)
        return 2
    try:
        result = export_onnx(args.model, out, args.opset)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the exporter raises many kinds; keep it one line
        print(f"error: ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in result.max_diff.items())
    rewrites = ", ".join(f"{k} {v}" for k, v in result.rewrites.items())
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, opset {result.opset}; graph rewrites: {rewrites}); "
          f"max |PyTorch - ONNX Runtime|: {diffs}")
    return 0
