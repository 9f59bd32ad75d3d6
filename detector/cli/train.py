"""`python -m detector train`: fine-tune CenterNet (`detector.train`), or run a whole recipe (`detector.recipe`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

from detector.cli import command_line
from detector.model_file import nms_iou_argument, threshold_argument
from detector.train import DEFAULT_NMS_IOU, DEFAULT_THRESHOLD, TrainOptions, build_config, train


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune CenterNet on a data set made by `detector dataset`",
        description=(
            "Fine-tune MMDetection's CenterNet on a folder written by `python -m detector dataset` "
            "(train/ and val/ with COCO annotations). Validates every epoch (COCO AP50 per class), keeps "
            "the best checkpoint, and writes the station's model file and model card from it. "
            "For several GPUs or machines, start it under torchrun with --launcher pytorch."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, help="data set folder from `detector dataset` (not with --recipe)")
    p.add_argument("--recipe", help="run a whole schedule from detector/recipes (name or .toml path): data set from "
                                    "--source, then every stage, into WORK_DIR; see `detector/recipes/README.md`")
    p.add_argument("--source", type=Path, help="with --recipe: the labelled pictures (default: the recipe's source)")
    p.add_argument("--config", default="centernet_mobilenetv2",
                   help="config name in detector/configs (centernet_mobilenetv2, centernet_r18) or a path")
    p.add_argument("--work-dir", required=True, type=Path, help="folder for logs and checkpoints")
    p.add_argument("--out", type=Path, help="model file to write from the best checkpoint (default WORK_DIR/model.pth)")
    p.add_argument("--epochs", type=int, help="number of epochs (config default if omitted)")
    p.add_argument("--batch-size", type=int, help="images per batch per process")
    p.add_argument("--lr", type=float, help="peak learning rate of AdamW")
    p.add_argument("--weight-decay", type=float,
                   help="AdamW's decoupled weight decay (default: the config's, 1e-4); larger values pull the weights "
                        "toward zero every step, against over-fitting a small data set")
    p.add_argument("--size-lr-mult", type=float, metavar="M",
                   help="the size branch's lr as a multiple of --lr (default: the config's, 10, so that a freshly "
                        "initialised branch reaches box sizes in a few epochs); 0 keeps a loaded branch as it is. 1 in the "
                        "recipe's 256-px stage did not bring seed 2's pit to 0.85 (README)")
    p.add_argument("--input-size", type=int, help="square network input size in pixels (multiple of 32)")
    p.add_argument("--multi-scale", type=_size_range, metavar="MIN,MAX",
                   help="train each step at a random square size from MIN to MAX px in steps of 32 (pictures and boxes "
                        "resized together); validation and the model file stay at --input-size")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch in which this much wall time is used")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in WORK_DIR")
    p.add_argument("--init-from", type=Path, metavar="MODEL.pth",
                   help="start from a station model file (e.g. the shipped one) instead of ImageNet weights: "
                        "fine-tuning on a plant's own pictures")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--flip-test", action="store_true",
                   help="the model file runs with flip test (mirror averaging; validated that way too)")
    p.add_argument("--nms-iou", type=nms_iou_argument, default=DEFAULT_NMS_IOU, metavar="IOU|off",
                   help="the model file suppresses a box overlapping a higher-scoring box of its class by more than "
                        "this IoU ('off' keeps every heatmap peak)")
    p.add_argument("--threshold", type=threshold_argument, default=DEFAULT_THRESHOLD, metavar="T",
                   help="the model file's default detection threshold (0..1); the final validation counts escapes "
                        "and false rejects at it. Choose it on held-out pictures (`detector evaluate "
                        "--verdict-threshold`), not on the validation split")
    p.add_argument("--keep", default="best", choices=["best", "last"],
                   help="checkpoint the model file is made from: the epoch with the best validation AP50, or the last "
                        "epoch (a fixed schedule: nothing is picked on the validation split)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: forward pass under bfloat16 autocast (weights and optimizer stay fp32); "
                        "1.5-1.7x faster on CPUs with AMX/AVX-512 BF16 (benchmarks/bench_train.py)")
    p.add_argument("--ema", action="store_true",
                   help="keep an exponential moving average of the weights; validation and the model file use it")
    p.add_argument("--ema-momentum", type=float, metavar="M",
                   help="with --ema: a constant momentum M (the average covers about the last 1/M steps) instead of "
                        "the ramp from 1 to 0.002 that forgets the untrained start; for a stage that starts from a "
                        "trained model (in the recipe's 256-px stage it did no better than the ramp: README)")
    p.add_argument("--frozen-stages", type=int, default=-1, metavar="N",
                   help="keep the backbone's stem and first N block groups at their starting weights (MMDetection's "
                        "count: -1 trains everything, 0 freezes the stem only); with 2, a MobileNetV2 epoch at 192 px "
                        "took 1.43x less time in a recipe run (benchmarks/bench_train.py --frozen-stages)")
    p.add_argument("--val-interval", type=int, default=1, metavar="N",
                   help="validate every N epochs (always after the last); validation costs about a fifth of an epoch")
    p.add_argument("--name", help="model name recorded in the model file (default: config name)")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm", "mpi"],
                   help="distributed launcher; use 'pytorch' under torchrun")
    p.set_defaults(func=run)


def _size_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in pixels (e.g. 224,288), got {text!r}") from None
    return low, high


def run(args: argparse.Namespace) -> int:
    import torch

    if args.recipe:
        return _run_recipe(args)
    if args.data is None:
        print("error: give --data (a folder from `python -m detector dataset`) or --recipe", file=sys.stderr)
        return 2
    from detector.mm_modules import TrainingClockHook

    began = (TrainingClockHook.cpu_seconds(), time.monotonic())
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    options = train_options(args)
    try:
        cfg = build_config(options)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = train(options, cfg, began=began)
    if result is None:  # not rank 0: that one reports
        return 0
    print(f"model file written: {result.model_path} (from {result.checkpoint.name}, {result.train_seconds / 60:.1f} min); "
          f"card: {result.card}")
    print("validation AP50: " + ", ".join(f"{k} {v['ap50']:.3f}" for k, v in result.validation["classes"].items())
          + f"; mAP50 {result.validation['map50']:.3f}")
    return 0


def train_options(args: argparse.Namespace) -> TrainOptions:
    """The parsed options as the library's TrainOptions (same names), with the command line for the record."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainOptions) if f.name != "command"}
    return TrainOptions(**given, command=command_line(args))


def _run_recipe(args: argparse.Namespace) -> int:
    from detector.recipe import RecipeError, load_recipe, run_recipe

    try:
        recipe = load_recipe(args.recipe)
    except (FileNotFoundError, RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.data is not None or args.launcher != "none" or args.init_from:
        print("error: --recipe makes its own data set and runs in one process: leave out --data, --launcher, --init-from",
              file=sys.stderr)
        return 2
    source = args.source or recipe.source
    if source is None or not source.exists():
        print(f"error: pictures not found: {source} (give --source)", file=sys.stderr)
        return 2
    return run_recipe(recipe, source, args.work_dir, out=args.out, resume=args.resume, seed=args.seed,
                      device=args.device, threads=args.threads, command=command_line(args))
