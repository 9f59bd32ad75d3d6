"""`python -m detector model`: show a model file's metadata, change how it runs, re-validate.

    python -m detector model MODEL.pth                       # print metadata and validation
    python -m detector model MODEL.pth --flip-test on --nms-iou 0.5 --validate runs/data/val

Changing how a model runs (flip test, NMS, default threshold) changes its accuracy,
so the card's validation figures are re-measured (`--validate`) or dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detector.cli import command_line
from detector.model_file import nms_iou_argument, threshold_argument
from detector.model_tool import ACCURACY_SETTINGS, change_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "model",
        help="show a model file's metadata; change its flip test / NMS / threshold and re-validate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="station model file (.pth)")
    p.add_argument("--flip-test", choices=["on", "off"],
                   help="average over mirror images at inference (more accurate, 3x the compute)")
    p.add_argument("--nms-iou", type=nms_iou_argument, default=argparse.SUPPRESS, metavar="IOU|off",
                   help="class-wise NMS of the decoded boxes at this IoU, or 'off' (every heatmap peak is a box)")
    p.add_argument("--threshold", type=threshold_argument, help="default confidence threshold (0..1)")
    p.add_argument("--name", help="model name")
    p.add_argument("--validate", type=Path, metavar="SPLIT_DIR",
                   help="re-measure validation AP on a split folder of `detector dataset` (annotations.json + images/)")
    p.add_argument("--write-card", action="store_true",
                   help="re-write the model card (MODEL.md) from the file, e.g. after making its int8 variant")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detector.model_card import write_model_card
    from detector.model_file import load_model_file

    try:
        model = load_model_file(args.model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    changes = {}
    if args.flip_test is not None:
        changes["flip_test"] = args.flip_test == "on"
    if hasattr(args, "nms_iou"):  # given (SUPPRESS: absent otherwise); None means off
        changes["nms_iou"] = args.nms_iou
    if args.threshold is not None:
        changes["default_threshold"] = args.threshold
    if args.name:
        changes["name"] = args.name
    if changes or args.validate:
        if any(k in changes for k in ACCURACY_SETTINGS) and not args.validate:
            print("note: validation figures dropped (they were measured with other settings); use --validate",
                  file=sys.stderr)
        change_settings(args.model, model, changes, validate=args.validate, command=command_line(args))
    elif args.write_card:
        write_model_card(args.model)
    meta = model.metadata
    print(f"{args.model}: {meta.name}, classes {', '.join(meta.class_names)}, input {meta.input_size}, "
          f"threshold {meta.default_threshold}, flip test {'on' if meta.flip_test else 'off'}, "
          f"NMS {meta.nms_iou if meta.nms_iou is not None else 'off'}, created {meta.created}")
    val = meta.training.get("validation")
    if val:
        print(validation_summary(val))
    return 0


def validation_summary(val: dict) -> str:
    """One line of a model file's validation record: AP50 per class, mAP50, mAP and the settings measured with,
    and the escapes and false rejects per picture where they were measured."""
    from detector.evaluate import verdict_counts_text

    verdicts = "".join(f"; {verdict_counts_text(v)}" for v in val.get("verdicts", []))
    return ("validation: " + json.dumps({k: round(v["ap50"], 3) for k, v in val["classes"].items()})
            + f", mAP50 {val['map50']:.3f}, mAP {val['map']:.3f}, flip test {'on' if val.get('flip_test') else 'off'}, "
            f"NMS {val.get('nms_iou') or 'off'}" + verdicts)
