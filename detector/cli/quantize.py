"""`python -m detector quantize`: an int8 ONNX model for the station's CPUs (`detector.quantize`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.cli import command_line
from detector.quantize import (
    CHECK_PICTURES,
    DEFAULT_ACTIVATIONS,
    DEFAULT_CALIBRATION,
    DEFAULT_COUNT,
    DEFAULT_FORMAT,
    NOISE_DRAWS,
    NOISE_SIGMA,
    ap50_drops,
    calibration_pictures,
    int8_rule,
    noisy_ap50_drops,
    quantize_onnx,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `quantize` sub-command; sets `func=run` on the parsed args."""
    p = subparsers.add_parser(
        "quantize",
        help="make an int8 ONNX model (static quantization calibrated on training pictures)",
        description=(
            "Quantize an exported station ONNX model to int8 with ONNX Runtime static quantization: "
            "int8 per-channel weights, 8-bit activations calibrated on training pictures preprocessed "
            "exactly as the detector does. The file keeps the model metadata and records how it was "
            "quantized; its heatmap is compared with the fp32 model's before it is written."
        ),
    )
    p.add_argument("--model", required=True, type=Path, metavar="MODEL.onnx", help="fp32 ONNX model (from `export`)")
    p.add_argument("--calib", required=True, type=Path, metavar="DIR|COCO.json",
                   help="calibration pictures: a training split folder (with annotations.json), a COCO file, "
                        "or a folder of pictures")
    p.add_argument("--images", type=Path, metavar="DIR", help="picture folder of a COCO file (default: next to it)")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT,
                   help="calibration pictures drawn at random from --calib (default: all of them)")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing --count pictures (default 0)")
    p.add_argument("--validate", type=Path, metavar="SPLIT_DIR",
                   help="evaluate the fp32 and the int8 model on this annotated validation split before writing "
                        "and record both AP50s in the file (shown in the model card)")
    p.add_argument("--noise-draws", type=int, default=NOISE_DRAWS, metavar="N",
                   help=f"with --validate, also evaluate both models on N copies of the split with {NOISE_SIGMA:g} grey "
                        f"level of Gaussian noise (the same copies for both) and judge the 1-point rule on the paired "
                        f"drop: one box moves a small split's AP50 by a point (default {NOISE_DRAWS}; 0: judge on "
                        f"the split itself)")
    p.add_argument("--out", type=Path, metavar="OUT.onnx", help="file to write (default: MODEL.int8.onnx)")
    p.add_argument("--format", dest="quant_format", choices=("qdq", "qoperator"), default=DEFAULT_FORMAT,
                   help=f"quantized graph format (default {DEFAULT_FORMAT})")
    p.add_argument("--activations", choices=("u8", "s8"), default=DEFAULT_ACTIVATIONS,
                   help=f"activation type (default {DEFAULT_ACTIVATIONS})")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per layer instead of per output channel")
    p.add_argument("--calibration", choices=("minmax", "percentile"), default=DEFAULT_CALIBRATION,
                   help=f"activation range calibration (default {DEFAULT_CALIBRATION}: 99.999th percentile)")
    p.add_argument("--keep-fp32", action="append", default=[], metavar="NODE|PATTERN",
                   help="graph node to leave in fp32, by name or shell-style pattern, e.g. '/neck/*' (repeatable)")
    p.add_argument("--int8-stem", action="store_true",
                   help="quantize the backbone's high-resolution stem too (by default fp32: it holds most of the "
                        "int8 accuracy loss and little of the speed-up)")
    p.add_argument("--int8-heatmap", action="store_true",
                   help="quantize the heatmap's last Conv and Sigmoid too (by default fp32: 8-bit scores tie "
                        "and give duplicate peaks)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Entry point of `quantize`; returns the process exit status."""
    out = args.out if args.out is not None else args.model.with_suffix(".int8.onnx")
    if out.suffix.lower() != ".onnx":
        print(f"error: --out must end in .onnx, got {out}", file=sys.stderr)
        return 2
    if out.resolve() == args.model.resolve():
        print("error: --out must differ from --model", file=sys.stderr)
        return 2
    if args.noise_draws < 0 or args.noise_draws == 1:
        print(f"error: --noise-draws must be 0 or at least 2, got {args.noise_draws}", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print(f"error: --count must be at least 1, got {args.count}", file=sys.stderr)
        return 2
    try:
        pictures = calibration_pictures(args.calib, args.images, args.count, args.seed)
        if args.validate is not None and not (args.validate / "annotations.json").is_file():
            raise FileNotFoundError(f"validation split not found: {args.validate / 'annotations.json'}")
        result = quantize_onnx(
            args.model, out, pictures,
            quant_format=args.quant_format,
            activations=args.activations,
            per_channel=not args.per_tensor,
            calibration=args.calibration,
            fp32_heatmap=not args.int8_heatmap,
            fp32_stem=not args.int8_stem,
            exclude=args.keep_fp32,
            calibration_source=str(args.calib) + (f" ({args.count} drawn, seed {args.seed})" if args.count else ""),
            validation=args.validate,
            noise_draws=args.noise_draws,
            command=command_line(args),
        )
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # onnx/onnxruntime raise many kinds; keep it one line
        print(f"error: quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1
    s = result.settings
    kept = f"; {len(result.fp32_nodes)} nodes kept fp32 (listed in the file's metadata)" if result.fp32_nodes else ""
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, fp32 {result.fp32_size_bytes / 1e6:.1f} MB; "
          f"{s['format']}, {s['activations']} activations, {s['weights']} weights, "
          f"{s['calibration']} on {result.calibration_count} pictures{kept}"
          + (f"; graph rewrites {result.rewrites}" if result.rewrites else "")
          + "); "
          f"heatmap vs fp32 on {CHECK_PICTURES} of them: correlation {result.heatmap_correlation:.4f}, "
          f"max difference {result.heatmap_max_diff:.3f}")
    if result.validation:
        ap = result.validation["ap50"]
        drops = ap50_drops(result.validation)
        print(f"validation AP50 on {result.validation['n_images']} pictures of {args.validate}, fp32 -> int8: "
              + ", ".join(f"{c} {ap['fp32'][c]:.3f} -> {ap['int8'][c]:.3f} (drop {d:.2f} points)" for c, d in drops.items()))
        noisy = noisy_ap50_drops(result.validation)
        if noisy:
            print(f"on {args.noise_draws} noisy copies ({NOISE_SIGMA:g} grey level), paired drop fp32 - int8: "
                  + ", ".join(f"{c} {m:.2f} points (sd {sd:.2f})" for c, (m, sd, _) in noisy.items()))
        print(int8_rule(result.validation)[1])
    return 0
