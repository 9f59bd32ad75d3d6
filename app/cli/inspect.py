"""`python -m app inspect`: inspect a folder or a video without a window.

Judges and logs every picture (or every n-th video frame) exactly as the
station does, then prints a summary. A picture that cannot be judged (corrupt,
too large, too small...) is named, skipped and counted; the run goes on.

Exit code: 0 every picture judged and logged; 1 some were skipped (not judged)
or a log write failed; 2 nothing was inspected because of the command or the
set-up (bad option, model, source, database, or a region outside the first frame).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from app.recipes import Region
from app.settings import load_settings_for_command
from app.sources import FeedFrame, SourceError, open_source
from detector.regions import Roi


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="inspect a folder of pictures or a video headless and log every inspection",
        description="Inspect every picture of a folder (or frame of a video) without a window, logging each "
        "inspection to the database exactly as the station would, then print a summary. A picture that cannot be "
        "judged is named, skipped and counted. Exit code: 0 all judged, 1 some skipped or a log write failed, "
        "2 nothing inspected (bad option, model, source, database, or a region outside the first frame).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--source", required=True, help="image file, folder of images, video file, camera index or stream URL")
    p.add_argument("--db", type=Path, help="inspection database (default: the station's, from the settings)")
    p.add_argument("--recipe", help="recipe to judge by, by name or line id (default: the station's active recipe)")
    p.add_argument("--roi", type=_roi, help="one inspection region x,y,w,h in frame pixels instead of the recipe's "
                   "(logged as the recipe's version 0: adjusted, not saved)")
    p.add_argument("--threshold", type=float, help="decision threshold instead of the recipe's (logged as version 0)")
    p.add_argument("--model", help="model file (.onnx or .pth; default: the recipe's, else the shipped model)")
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--station", help="station name to log (default: the settings')")
    p.add_argument("--operator", default="", help="operator to log")
    p.add_argument("--part-id", default="", help="part/serial ID to log with every inspection")
    p.add_argument("--every", type=int, default=1, help="inspect every n-th frame of a video")
    p.add_argument("--max-frames", type=int, help="stop after this many inspections (cameras and streams never end)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=run)


def _roi(text: str) -> Roi:
    """argparse type of --roi: the region's own message on a bad value (argparse hides a ValueError's)."""
    try:
        return Roi.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from app.station import Job, Station, StationError  # here: `python -m app --help` must not load a model

    settings = load_settings_for_command(args.config)
    if args.every < 1:
        print("error: --every must be >= 1", file=sys.stderr)
        return 2
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"error: --threshold must be within 0..1, got {args.threshold}", file=sys.stderr)
        return 2
    if args.station:
        settings = replace(settings, station_name=args.station)
    station = Station(settings, config_path=args.config, overrides={"model_path": args.model}, db_path=args.db,
                      recipe=args.recipe)
    try:
        station.start(open_configured_source=False)
    except StationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        for problem in station.problems:
            print(f"warning: {problem}", file=sys.stderr)
        if station.store is None or station.detector is None:
            print(f"error: {station.detail or 'cannot inspect'}", file=sys.stderr)
            return 2
        try:
            source = open_source(args.source, max_megapixels=settings.max_megapixels, bit_depth=settings.bit_depth,
                                 cameras=settings.camera_settings)
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        # --roi / --threshold judge this run by an adjusted copy of the recipe: logged as version 0 (never saved),
        # with the regions and threshold actually used on each row.
        recipe = station.recipe
        if args.roi is not None:
            recipe = replace(recipe, regions=(Region("region", args.roi),), version=0)
        if args.threshold is not None:
            recipe = replace(recipe, threshold=args.threshold, version=0)
        return _inspect_all(args, station, source, recipe, Job)
    finally:
        station.stop(drain=True, timeout=30.0)


def _inspect_all(args, station, source, recipe, job_class) -> int:
    verdicts: Counter[str] = Counter()
    defects: Counter[str] = Counter()
    times: list[float] = []
    not_inspected = 0
    log_failed = False
    skipped = getattr(source, "skipped", [])  # unreadable pictures, noted by the source as it goes
    reported = 0

    def report_skipped() -> None:
        nonlocal reported
        for note in skipped[reported:]:
            print(f"skipped {note}", file=sys.stderr)
        reported = len(skipped)

    frames = source.frames()
    job = job_class("continuous", part_id=args.part_id, operator=args.operator)
    try:
        first = next(frames, None)
        if first is not None and args.roi is not None and args.roi.clipped(first[1].shape[1], first[1].shape[0]) is None:
            h, w = first[1].shape[:2]
            print(f"error: inspection region {args.roi} lies outside the first frame ({w}x{h}, {first[0]}); "
                  "nothing inspected", file=sys.stderr)
            return 2
        for n, (label, frame) in enumerate(itertools.chain([first] if first else [], frames)):
            report_skipped()
            if n % args.every:
                continue
            warnings = tuple(getattr(source, "frame_warnings", ()))
            try:
                result = station.inspect_frame(FeedFrame(frame, n + 1, time.monotonic(), label, warnings), job, recipe)
            except Exception as exc:  # one picture that cannot be judged must not stop the run
                not_inspected += 1
                reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                print(f"{label}: not inspected: {reason}", file=sys.stderr)
                continue
            if result.error:
                print(f"error: {result.error}", file=sys.stderr)
                log_failed = True
                break
            for w in result.warnings:
                print(f"{label}: warning: {w}", file=sys.stderr)
            verdicts[result.verdict.verdict] += 1
            for i in result.verdict.failing:
                defects[result.detections[i].label] += 1
            times.append(result.inference_ms)
            if not args.quiet:
                found = ", ".join(f"{result.detections[i].label} {result.detections[i].score:.2f}"
                                  for i in result.verdict.shown) or "no defects"
                regions = "" if len(result.regions) < 2 else " [" + ", ".join(
                    f"{r.name} {r.verdict.verdict}" for r in result.regions) + "]"
                print(f"#{result.inspection_id} {result.verdict.verdict} {label}{regions}: {found}")
            if args.max_frames and sum(verdicts.values()) >= args.max_frames:
                break
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if verdicts or not_inspected else 2
    finally:
        frames.close()
    report_skipped()
    not_inspected += len(skipped)

    total = sum(verdicts.values())
    print(f"inspected {total}: {verdicts['PASS']} PASS, {verdicts['FAIL']} FAIL"
          + (f", {not_inspected} not inspected (skipped: see the messages above)" if not_inspected else ""))
    if defects:
        print("failing defects: " + ", ".join(f"{k} {v}" for k, v in sorted(defects.items())))
    if times:
        threshold = recipe.threshold if recipe.threshold is not None else station.detector.metadata.default_threshold
        print(f"recipe {recipe.name} v{recipe.version}, model {station.detector.model_id}, threshold {threshold:.2f},"
              f" median detect {statistics.median(times):.1f} ms")
    print(f"logged to {station.db_path}")
    return 1 if not_inspected or log_failed else 0
