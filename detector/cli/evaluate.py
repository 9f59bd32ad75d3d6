"""`python -m detector evaluate`: mAP of a model on an annotated data set (`detector.evaluate`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from detector.data.annotations import AnnotatedImage
from detector.data.pipeline import FORMATS, load_source
from detector.evaluate import evaluate_model, plot_pr_curves
from detector.model_file import threshold_argument

if TYPE_CHECKING:
    from detector import Detector


class _CliError(Exception):
    """Bad command-line input (paths, options): one line, exit status 2."""


class _LoadError(Exception):
    """The model could not be loaded: one line, exit status 1."""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `evaluate` sub-command; sets `func=run` on the parsed args."""
    p = subparsers.add_parser(
        "evaluate",
        help="measure mAP of a model on an annotated data set",
        description=(
            "Run the model on every annotated image and report per-class AP at the "
            "IoU threshold (all-point interpolation) and COCO AP@[.5:.95], then what the "
            "station would say about each picture: defect pictures that PASS (escapes) "
            "and clean pictures that FAIL (false rejects)."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data", type=Path, metavar="DIR",
        help="folder of labelled pictures in any layout `detector dataset --source` reads: VOC (images/ + "
        "annotations/), COCO (one .json) or LabelMe; so also a split folder that `detector dataset` made (OUT/val)",
    )
    src.add_argument("--coco", type=Path, metavar="FILE", help="COCO json with the ground truth")
    p.add_argument("--images", type=Path, metavar="DIR", help="image folder for --coco")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help="annotation format of --data (default: told from the files)")
    p.add_argument("--model", type=Path, metavar="PATH", help="model file (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument(
        "--class-map", metavar="MAP",
        help="rename ground-truth labels to the model's, e.g. 'scratches=scratch,pitted_surface=pit' "
        "(unlisted labels are dropped); or a file holding that text",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="write metrics as JSON here")
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="write precision-recall curves here")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold for AP (default: 0.5)")
    p.add_argument(
        "--verdict-threshold", type=_thresholds, metavar="T[,T...]",
        help="detection thresholds for the PASS/FAIL per picture, comma-separated "
        "(default: the model's own default threshold)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Entry point of `evaluate`; returns the process exit status."""
    try:
        _check_args(args)
        images = _load_ground_truth(args)
        try:
            detector = _load_detector(args)
        except Exception as exc:  # torch/mmdet raise many kinds; keep it one line
            raise _LoadError(f"could not load the model: {type(exc).__name__}: {exc}") from exc
        known = set(detector.metadata.class_names)
        unknown = Counter(b.label for img in images for b in img.boxes if b.label not in known)
        if unknown:
            listed = ", ".join(f"{k} ({v})" for k, v in unknown.most_common())
            print(
                f"warning: ground-truth labels unknown to the model are ignored: {listed}. "
                "Use --class-map to rename them.",
                file=sys.stderr,
            )
        tty = sys.stderr.isatty()
        lead = "\r" if tty else ""
        step = max(1, len(images) // (100 if tty else 10))

        def progress(done: int, total: int) -> None:
            # Redraw one line on a terminal; ~10 plain lines in a log file.
            if done == total or done % step == 0:
                end = "\n" if done == total or not tty else ""
                print(f"{lead}detecting {done}/{total}", end=end, file=sys.stderr, flush=True)

        thresholds = args.verdict_threshold or [detector.metadata.default_threshold]
        result = evaluate_model(detector, images, iou_threshold=args.iou, progress=progress,
                                verdict_thresholds=thresholds)
        print(result.format_table())
        for verdicts in result.verdicts:
            print("\n".join(verdicts.format_lines()))
        if args.json is not None:
            import json

            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
            print(f"wrote {args.json}")
        if args.plot is not None:
            plot_pr_curves(result, args.plot)
            print(f"wrote {args.plot}")
    except _CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (_LoadError, OSError, ValueError, RuntimeError) as exc:
        # Loader / model / write failures: one readable line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _thresholds(text: str) -> list[float]:
    """argparse type of --verdict-threshold: scores within 0..1, comma-separated."""
    return [threshold_argument(v) for v in text.split(",")]


def _check_args(args: argparse.Namespace) -> None:
    if not 0.0 < args.iou <= 1.0:
        raise _CliError(f"--iou must be in (0, 1], got {args.iou}")
    if getattr(args, "data", None) is not None:
        if not args.data.is_dir():
            raise _CliError(f"data folder not found: {args.data}")
        if args.images is not None:
            raise _CliError("--images only applies to --coco")
    elif getattr(args, "coco", None) is not None:
        if not args.coco.is_file():
            raise _CliError(f"COCO annotation file not found: {args.coco}")
        if args.format != "auto":
            raise _CliError("--format only applies to --data")
        if args.images is not None and not args.images.is_dir():
            raise _CliError(f"image folder not found: {args.images}")
    else:
        raise _CliError("give --data DIR or --coco FILE")
    if args.model is not None and not args.model.exists():
        raise _CliError(f"model not found: {args.model}")
    for out in (args.json, args.plot):
        if out is not None and out.is_dir():
            raise _CliError(f"output path is a folder: {out}")


def _load_ground_truth(args: argparse.Namespace) -> list[AnnotatedImage]:
    from detector.data.classmap import parse_class_map

    text = args.class_map
    if text:
        with contextlib.suppress(OSError):  # e.g. a mapping too long for a file name
            if Path(text).is_file():
                text = Path(text).read_text(encoding="utf-8")
    class_map = parse_class_map(text)  # ValueError on bad syntax -> one-line error

    try:
        if args.coco is not None:
            from detector.data.coco import load_coco

            images = load_coco(args.coco, images_dir=args.images, class_map=class_map)
        else:
            images = load_source(args.data, args.format, class_map).images
    except (OSError, ValueError) as exc:
        raise _CliError(str(exc)) from exc
    except (KeyError, TypeError, AttributeError) as exc:  # malformed files
        src = args.coco if args.coco is not None else args.data
        raise _CliError(f"could not read annotations from {src}: {type(exc).__name__}: {exc}") from exc

    images = list(images)
    if not images:
        raise _CliError("no annotated images found")
    missing = [img.image_path for img in images if not Path(img.image_path).is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise _CliError(f"{len(missing)} image file(s) missing: {shown}{more}")
    return images


def _load_detector(args: argparse.Namespace) -> Detector:
    from detector import Detector

    return Detector(args.model, device=args.device)
