"""`python -m detector dataset`: turn labelled pictures into a training data set (`detector.data.pipeline`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from detector.data.classmap import parse_class_map
from detector.data.expand import ROTATED_BOXES, ExpandParams
from detector.data.pipeline import build_dataset, summary_table
from detector.regions import Roi

DESCRIPTION = """\
Build a training data set from labelled pictures.

Reads boxes drawn with a labelling tool (Pascal VOC XML, COCO JSON or LabelMe
JSON), optionally renames classes and crops every picture to the part's region,
splits the pictures into a training part and a validation part, optionally adds
varied copies of the training pictures, and writes:

  OUT/train/images/  + OUT/train/annotations.json   (COCO, for training)
  OUT/val/images/    + OUT/val/annotations.json     (COCO, for checking)
  OUT/dataset.json   (what went in and how many boxes of each class: for the model card)

All pictures are written in grey, as the detector works on grey pictures.
"""

EPILOG = """\
example (NEU-DET steel pictures, keeping only scratches and pits):
  python -m detector dataset --source ../shared/datasets/neu-det --out data/neu \\
      --class-map scratches=scratch,pitted_surface=pit --expand 2
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout; shows defaults only where there is one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def parse_roi(text: str) -> Roi:
    try:
        return Roi.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (e.g. 100,50,800,600)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ExpandParams()
    parser.add_argument(
        "--source", action="append", required=True, type=Path, metavar="PATH",
        help="folder (or COCO .json file) holding the labelled pictures; give it several "
             "times to combine sources. A VOC folder holds images/ + annotations/ "
             "(or JPEGImages/ + Annotations/)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder to write the data set into")
    parser.add_argument("--format", default="auto", choices=("auto", "voc", "coco", "labelme"),
                        help="how the boxes are stored; 'auto' looks at the files")
    parser.add_argument("--class-map", metavar="SRC=DST,...",
                        help="rename classes, e.g. 'scratches=scratch,pitted_surface=pit'. Boxes of "
                             "classes not named here are left out (pictures are kept as defect-free examples)")
    parser.add_argument("--keep-unmapped", action="store_true",
                        help="with --class-map: keep boxes of classes not named in the map, under their own name")
    parser.add_argument("--roi", type=parse_roi, metavar="x,y,w,h",
                        help="crop every picture to this rectangle (pixels: left, top, width, height) "
                             "before anything else; boxes mostly outside it are left out")
    parser.add_argument("--min-visible", type=float, default=0.3, metavar="F",
                        help="after cropping or rotating, keep a box only if at least this share "
                             "of its area is still in the picture")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="share of pictures set aside for checking the model (never trained on). "
                             "Identical pictures always land on the same side")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed: the same seed gives exactly the same split and copies")
    parser.add_argument("--negatives-fraction", type=float, default=1.0, metavar="F",
                        help="keep only this share of the training pictures that have no boxes (after --class-map "
                             "and --roi); validation keeps all of them; 1 keeps them all")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a data set already in --out")
    parser.add_argument("--image-format", default=defaults.image_format, choices=("png", "jpg"),
                        help="file type of the written pictures (jpg uses quality 95)")
    group = parser.add_argument_group("expansion (varied copies of the training pictures)")
    group.add_argument("--expand", type=int, default=0, metavar="N",
                       help="number of varied copies to add per training picture (0: none); "
                            "each copy is randomly cropped, scaled, rotated and made lighter/darker")
    group.add_argument("--expand-val", action="store_true",
                       help="also add copies to the validation part (normally it keeps only originals)")
    group.add_argument("--max-rotation", type=float, default=defaults.max_rotation, metavar="DEG",
                       help="largest random turn, in degrees either way")
    group.add_argument("--rotate90", action="store_true",
                       help="also turn copies by a random multiple of 90 degrees")
    group.add_argument("--rotated-box", default=defaults.rotated_box, choices=ROTATED_BOXES,
                       help="a turned copy's box is the box of the turned box's corners, or of the ellipse "
                            "inscribed in it (tighter on long thin defects turned by a few degrees)")
    group.add_argument("--min-scale", type=float, default=defaults.min_scale, metavar="S",
                       help="smallest random size factor (0.8 = 20%% smaller)")
    group.add_argument("--max-scale", type=float, default=defaults.max_scale, metavar="S",
                       help="largest random size factor (1.2 = 20%% larger)")
    group.add_argument("--min-crop", type=float, default=defaults.min_crop, metavar="F",
                       help="a random crop keeps at least this share of each side of the picture")
    group.add_argument("--brightness", type=float, default=defaults.brightness, metavar="LEVELS",
                       help="largest random brightness change, in grey levels (0-255 scale) either way")
    group.add_argument("--paste", type=int, default=defaults.paste, metavar="N",
                       help="on each copy that holds a defect, paste up to N more of its classes, cut (box plus a "
                            "blended margin) from the other training pictures, only where they cover no box (0: none)")
    group.add_argument("--contrast", type=float, default=defaults.contrast, metavar="F",
                       help="largest random contrast change as a share (0.2 = from 80%% to 120%%)")


def register(subparsers) -> argparse.ArgumentParser:
    """Add `dataset` to an argparse sub-parsers object."""
    parser = subparsers.add_parser(
        "dataset", help="build a training data set from labelled pictures",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        class_map = parse_class_map(args.class_map, keep_unmapped=args.keep_unmapped)
        params = ExpandParams(
            min_crop=args.min_crop, min_scale=args.min_scale, max_scale=args.max_scale,
            max_rotation=args.max_rotation, rotate90=args.rotate90, brightness=args.brightness,
            contrast=args.contrast, min_visible=args.min_visible, image_format=args.image_format,
            rotated_box=args.rotated_box, paste=args.paste,
        ).validate()
        if args.expand < 0:
            raise ValueError("--expand must be 0 or more")
        summary = build_dataset(
            args.source, args.out, fmt=args.format, class_map=class_map, roi=args.roi,
            val_fraction=args.val_fraction, seed=args.seed, expand_variants=args.expand,
            expand_params=params, negatives_fraction=args.negatives_fraction,
            expand_val=args.expand_val, min_visible=args.min_visible, overwrite=args.overwrite,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"data set written to {args.out}")
    print(summary_table(summary))
    if summary["duplicate_groups"]:
        print(f"identical pictures kept together: {summary['duplicate_groups']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: `python -m detector.cli.dataset --source ... --out ...`."""
    parser = argparse.ArgumentParser(
        prog="detector dataset", description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
