"""`python -m detector train`: fine-tune CenterNet with MMDetection's Runner.

The run leaves MMEngine's usual work dir (logs, checkpoints, best by
validation AP50) and, at the end, the station's model file plus its model
card, made from the best checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from detector.configs import config_path

# Big pit clusters give CenterNet several heatmap peaks, i.e. duplicate boxes.
# Class-wise NMS at the textbook 0.5, measured on the NEU validation split:
# pit AP50 0.799 -> 0.871 and scratch 0.920 -> 0.910 (the first shipped 256-px model),
# pit 0.827 -> 0.841 and scratch 0.861 -> 0.865 (the 192-px model before it).
DEFAULT_NMS_IOU = 0.5
# A new model's default detection threshold, unless --threshold says otherwise: the
# level the first models were set at. Each model's own is best chosen on held-out
# pictures (`evaluate --verdict-threshold`), as the shipped model's was (README).
DEFAULT_THRESHOLD = 0.3


@dataclass(frozen=True)
class TrainOptions:
    """One training run; each field is the `python -m detector train` option of the same name."""

    data: Path  # data set folder from `detector dataset`
    work_dir: Path
    config: str = "centernet_mobilenetv2"
    out: Path | None = None  # default WORK_DIR/model.pth
    epochs: int | None = None  # None: the config's
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None  # None: the config's (1e-4)
    size_lr_mult: float | None = None  # the size branch's lr multiplier (None: the config's, 10)
    input_size: int | None = None
    multi_scale: tuple[int, int] | None = None  # each training step at a random square size in [MIN, MAX]
    max_minutes: float | None = None
    device: str = "auto"
    resume: bool = False
    init_from: Path | None = None
    seed: int = 0
    flip_test: bool = False
    nms_iou: float | None = DEFAULT_NMS_IOU
    threshold: float = DEFAULT_THRESHOLD  # the model file's default detection threshold (its final validation counts at it)
    keep: str = "best"  # or "last"
    precision: str = "fp32"  # or "bf16"
    ema: bool = False  # validate and keep an exponential moving average of the weights
    ema_momentum: float | None = None  # with ema: a constant momentum, no ramp (None: the ramp)
    frozen_stages: int = -1  # backbone stages kept at their starting weights (MMDetection's count: -1 none, 0 the stem)
    val_interval: int = 1  # validate every N epochs (and always after the last)
    name: str | None = None  # default: the config's name
    launcher: str = "none"
    command: str = ""  # recorded in the model file


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    checkpoint: Path  # the one the model file was made from
    train_seconds: float
    card: Path
    validation: dict


SIZE_BRANCH = "bbox_head.wh_head"  # CenterNet's width/height regression


def _set_input_size(cfg, size: int) -> None:
    if size % 32:
        raise ValueError(f"--input-size must be a multiple of 32, got {size}")
    cfg.input_size = size
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        for step in loader.dataset.pipeline:
            if step.type == "Resize":
                step.scale = (size, size)
            elif step.type == "Pad":
                step.size = (size, size)


def _set_multi_scale(cfg, sizes: tuple[int, int]) -> None:
    """Each training step resizes its batch (pictures and boxes) to a random square size from MIN to MAX in steps of
    32 (MMDetection's BatchSyncRandomResize, as in YOLOX); validation and the model file stay at the input size."""
    low, high = sizes
    if low % 32 or high % 32 or not 32 <= low <= high:
        raise ValueError(f"--multi-scale needs MIN,MAX: multiples of 32 with MIN <= MAX, got {low},{high}")
    cfg.model.data_preprocessor.batch_augments = [
        dict(type="BatchSyncRandomResize", random_size_range=(low, high), size_divisor=32, interval=1)]


def _freeze_backbone(cfg, stages: int) -> None:
    """MMDetection's `frozen_stages`: -1 none, 0 the stem, N the stem and the first N block groups."""
    import inspect

    from mmdet.registry import MODELS

    if stages < -1:
        raise ValueError(f"--frozen-stages must be -1 or more, got {stages}")
    backbone = cfg.model.backbone
    cls = MODELS.get(backbone.get("type"))
    # Subclasses (MobileNetV2Trunk) pass it on through **kwargs: look along the MRO.
    if cls is None or not any("frozen_stages" in inspect.signature(c.__init__).parameters for c in cls.__mro__[:-1]):
        raise ValueError(f"--frozen-stages: backbone {backbone.get('type')} cannot freeze stages")
    backbone.frozen_stages = stages


def _lr_custom_keys(cfg) -> dict:
    """The config's per-parameter optimizer settings (MMEngine's paramwise custom_keys), by name prefix."""
    return cfg.optim_wrapper.get("paramwise_cfg", {}).get("custom_keys", {})


def _set_size_lr_mult(cfg, mult: float) -> None:
    """The size branch's lr multiplier. The configs' 10x lets a freshly initialised branch reach
    box sizes in a few epochs; a stage that loads a trained branch may want less."""
    if mult < 0:
        raise ValueError(f"--size-lr-mult must be 0 or more, got {mult}")
    keys = _lr_custom_keys(cfg)
    if SIZE_BRANCH not in keys:
        raise ValueError(f"--size-lr-mult: the config sets no lr for the size branch ({SIZE_BRANCH})")
    keys[SIZE_BRANCH]["lr_mult"] = mult


def size_lr_mult(cfg) -> float:
    """The size branch's lr multiplier in this config (1 when it sets none)."""
    return float(_lr_custom_keys(cfg).get(SIZE_BRANCH, {}).get("lr_mult", 1.0))


def build_config(options: TrainOptions):
    """The MMEngine config for this run: repo config + the options' overrides."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config_path(options.config)))
    data_root = options.data.resolve()
    for split in ("train", "val"):
        if not (data_root / split / "annotations.json").is_file():
            raise FileNotFoundError(
                f"{data_root / split / 'annotations.json'} missing; make the data set with `python -m detector dataset`"
            )
    classes = data_classes(data_root)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(data_root)
        loader.dataset.metainfo = dict(classes=classes)
    # The model learns the data set's classes (e.g. all six NEU-DET ones), whatever the config names.
    cfg.classes = classes
    cfg.model.bbox_head.num_classes = len(classes)
    val_ann = str(data_root / "val" / "annotations.json")
    cfg.val_evaluator.ann_file = val_ann
    # Beside MMDetection's COCO metric: per-class AP50 with the station's NMS, every epoch.
    cfg.val_evaluator = [cfg.val_evaluator, dict(type="StationAP50Metric", ann_file=val_ann, nms_iou=options.nms_iou)]
    cfg.test_evaluator = cfg.val_evaluator
    # The config's fixed visualizer name would make a second run in the same process
    # write its scalars into the first run's folder (MMEngine reuses named instances).
    cfg.visualizer.name = f"visualizer:{cfg_work_dir(options)}:{time.time_ns()}"
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="TrainingClockHook"), dict(type="ChannelsLastHook")]
    if options.precision == "bf16":
        cfg.optim_wrapper.type = "Bf16OptimWrapper"
    cfg.work_dir = cfg_work_dir(options)
    if options.input_size:
        _set_input_size(cfg, options.input_size)
    if options.multi_scale:
        _set_multi_scale(cfg, options.multi_scale)
    if options.epochs:
        cfg.train_cfg.max_epochs = options.epochs
        for sched in cfg.param_scheduler:
            if sched.type == "CosineAnnealingLR":
                sched.end = options.epochs
    if options.batch_size:
        cfg.train_dataloader.batch_size = options.batch_size
    if options.lr:
        cfg.optim_wrapper.optimizer.lr = options.lr
    if options.weight_decay is not None:
        if options.weight_decay < 0:
            raise ValueError(f"--weight-decay must be 0 or more, got {options.weight_decay}")
        cfg.optim_wrapper.optimizer.weight_decay = options.weight_decay
    if options.size_lr_mult is not None:
        _set_size_lr_mult(cfg, options.size_lr_mult)
    if options.ema_momentum is not None and not options.ema:
        raise ValueError("--ema-momentum needs --ema")
    if options.ema:
        if options.ema_momentum is None:
            # A short CPU schedule ends with noisy weights (scratch AP50 swung 0.62-0.73
            # between neighbouring epochs); their average is steadier. The momentum ramps
            # from 1 down to 0.002 (an average over the last ~500 steps, ~7 epochs of NEU),
            # so that the average forgets the untrained start.
            average = dict(ema_type="ExpMomentumEMA", momentum=0.002, gamma=300)
        elif not 0 < options.ema_momentum < 1:
            raise ValueError(f"--ema-momentum must be between 0 and 1, got {options.ema_momentum}")
        else:
            # A stage that starts from a trained model has no untrained start to forget, and
            # the ramp is too slow for a short one: 12 epochs (864 steps) ended at momentum
            # 0.058, an "average" of the last ~17 steps. A constant momentum m averages the
            # last ~1/m steps from the start on; the average begins at the weights after the
            # first step, taken at 1% of the lr (warm-up): nearly the loaded ones. In the
            # recipe's 256-px stage, 0.005 scored no better than the ramp (README, runs/ema2*).
            average = dict(ema_type="ExponentialMovingAverage", momentum=options.ema_momentum)
        cfg.custom_hooks = [*cfg.get("custom_hooks", []),
                            dict(type="EMAHook", **average, update_buffers=True, priority=49)]
    if options.frozen_stages != -1:
        _freeze_backbone(cfg, options.frozen_stages)
    if options.val_interval > 1:
        cfg.train_cfg.val_interval = options.val_interval
    if options.max_minutes:
        cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="TimeBudgetHook", minutes=options.max_minutes)]
    cfg.randomness = dict(seed=options.seed)
    cfg.launcher = options.launcher
    if options.launcher != "none" and not _uses_cuda(options.device):
        # CPU processes talk over gloo (NCCL is GPU-only), and DDP must not be
        # given a device id on CPU.
        cfg.env_cfg.dist_cfg = dict(backend="gloo")
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=False)
    cfg.resume = bool(options.resume)
    if options.init_from and not options.resume:
        cfg.load_from = str(_model_file_as_checkpoint(options.init_from, options.work_dir.resolve() / "init_weights.pth"))
        cfg.pretrained = f"model file {options.init_from.name}"
    elif cfg.get("pretrained") and not options.resume:
        from detector.pretrained import write_mmdet_checkpoint

        cfg.load_from = str(write_mmdet_checkpoint(cfg.pretrained, options.work_dir.resolve() / "pretrained_backbone.pth"))
    return cfg


def data_classes(data_root: Path) -> tuple[str, ...]:
    """The classes of a data set from `detector dataset`, in its order (= heatmap channels)."""
    data = json.loads((data_root / "train" / "annotations.json").read_text(encoding="utf-8"))
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    if not categories:
        raise ValueError(f"{data_root / 'train' / 'annotations.json'} names no classes (COCO 'categories')")
    return tuple(c["name"] for c in categories)


def cfg_work_dir(options: TrainOptions) -> str:
    return str(options.work_dir.resolve())


def _uses_cuda(device: str) -> bool:
    import torch

    return device != "cpu" and torch.cuda.is_available()


def _init_cpu_process_group(options: TrainOptions) -> None:
    """Join torchrun's process group over gloo for CPU training.

    MMEngine's own pytorch launcher calls torch.cuda.set_device, which a
    CPU-only torch does not have; once the group exists MMEngine uses it.
    """
    import torch.distributed as dist

    if options.launcher == "pytorch" and not _uses_cuda(options.device) and not dist.is_initialized():
        dist.init_process_group(backend="gloo")


def _model_file_as_checkpoint(model_path: Path, out: Path) -> Path:
    """A station model file's weights in the form MMEngine's `load_from` reads."""
    import torch

    from detector.model_file import load_model_file

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": load_model_file(model_path).state_dict}, out)
    return out


def _history_buffer_method(obj, name: str):
    """Stand-in for `getattr` while unpickling MMEngine checkpoints.

    MMEngine pickles each HistoryBuffer's statistics methods as
    getattr(buffer, "mean") etc.; allowing the real getattr would let a
    crafted file reach anything, so only those bound methods are served.
    """
    from mmengine.logging import HistoryBuffer

    if (obj is HistoryBuffer or isinstance(obj, HistoryBuffer)) and name in ("min", "max", "mean", "current", "sum", "latest"):
        return getattr(obj, name)
    raise ValueError(f"checkpoint asks for attribute {name!r} of {type(obj).__name__}; refusing")


def allow_mmengine_checkpoints() -> None:
    """Let torch's weights_only loader read MMEngine's own training checkpoints.

    They pickle a few MMEngine/numpy objects (message hub history, RNG state);
    this allow-list names exactly those, instead of turning weights_only off.
    """
    import codecs
    from collections import OrderedDict

    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    torch.serialization.add_safe_globals([
        HistoryBuffer, OrderedDict, codecs.encode, np.ndarray, np.dtype,
        multiarray._reconstruct, multiarray.scalar,
        *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.uint32, np.bool_)},
        (_history_buffer_method, "__builtin__.getattr"),
        (_history_buffer_method, "builtins.getattr"),
    ])


def _leave_process_group() -> None:
    """Every process of a distributed run, once training is done: wait for the others, then close the group.
    A rank that exits with its gloo group still open can abort in the C++ teardown ("terminate called without
    an active exception", seen once in tests/test_distributed.py), and rank 0 needs nothing from it after this."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def best_checkpoint(work_dir: Path) -> Path:
    best = sorted(work_dir.glob("best_coco_bbox_mAP_50*.pth"), key=os.path.getmtime)
    if best:
        return best[-1]
    last = work_dir / "last_checkpoint"
    if last.is_file():
        return Path(last.read_text().strip())
    raise FileNotFoundError(f"no checkpoint in {work_dir}")


def last_checkpoint(work_dir: Path) -> Path:
    last = work_dir / "last_checkpoint"
    if not last.is_file():
        raise FileNotFoundError(f"no checkpoint in {work_dir}")
    return Path(last.read_text().strip())


def checkpoint_to_model_file(checkpoint: Path, cfg, out: Path, name: str, training: dict, flip_test: bool = False,
                             nms_iou: float | None = DEFAULT_NMS_IOU, threshold: float = DEFAULT_THRESHOLD) -> Path:
    """Convert an MMEngine checkpoint into the station's plain model file."""
    import torch

    from detector.model_file import ModelFile, ModelMetadata, class_colours, save_model_file

    allow_mmengine_checkpoints()
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    classes = tuple(cfg.train_dataloader.dataset.metainfo.classes)
    pre = cfg.model.data_preprocessor
    meta = ModelMetadata(
        name=name,
        class_names=classes,
        colours=class_colours(classes),
        input_size=int(cfg.input_size),
        default_threshold=float(threshold),
        # The station feeds grey replicated to three channels, already in RGB order.
        mean=tuple(float(v) for v in pre.mean),
        std=tuple(float(v) for v in pre.std),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        training=training,
        flip_test=flip_test,
        nms_iou=nms_iou,
    )
    model_cfg = cfg.model.to_dict()
    model_cfg.pop("data_preprocessor", None)  # the station does its own preprocessing
    if model_cfg.get("backbone", {}).get("init_cfg"):
        model_cfg["backbone"]["init_cfg"] = None
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("data_preprocessor.")}
    return save_model_file(out, ModelFile(metadata=meta, model_cfg=model_cfg, state_dict=state))


def _read_val_history(work_dir: Path) -> list[dict]:
    """Per-epoch validation scalars from MMEngine's newest run log."""
    runs = sorted(work_dir.glob("*/vis_data/scalars.json"), key=os.path.getmtime)
    history = []
    for scalars in runs:
        for line in scalars.read_text().splitlines():
            row = json.loads(line)
            if "coco/bbox_mAP_50" in row:
                history.append(row)
    return history


def read_curve(work_dir: Path) -> list[dict]:
    """WORK_DIR/curve.jsonl (TrainingClockHook): per validated epoch, CPU and wall seconds and the metrics."""
    path = Path(work_dir) / "curve.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def train(options: TrainOptions, cfg=None, *, began: tuple[float, float] | None = None) -> TrainResult | None:
    """Train with MMEngine's Runner, then write the model file and its card from the kept checkpoint.

    `cfg`: `build_config(options)` when not given. `began`: (CPU seconds of the
    process, time.monotonic()) when the command began, so the file's cost
    totals include the set-up (default: now). Returns None in processes other
    than rank 0 of a distributed run.
    """
    import torch

    from detector.mm_modules import TrainingClockHook

    cpu_at_start, wall_at_start = began or (TrainingClockHook.cpu_seconds(), time.monotonic())
    if cfg is None:
        cfg = build_config(options)
    if options.resume:
        allow_mmengine_checkpoints()
    _init_cpu_process_group(options)

    from mmengine.runner import Runner

    out = options.out or Path(cfg.work_dir) / "model.pth"
    earlier_seconds = _earlier_training_seconds(out) if options.resume else 0.0
    runner = Runner.from_cfg(cfg)
    started, cpu_started = time.monotonic(), TrainingClockHook.cpu_seconds()
    runner.train()
    train_seconds = time.monotonic() - started + earlier_seconds
    train_cpu, train_wall = TrainingClockHook.cpu_seconds() - cpu_started, time.monotonic() - started
    _leave_process_group()
    if runner.rank != 0:
        return None

    work_dir = Path(cfg.work_dir)
    ckpt = last_checkpoint(work_dir) if options.keep == "last" else best_checkpoint(work_dir)
    curve = read_curve(work_dir)
    summary_path = options.data / "dataset.json"
    training = {
        "config": Path(config_path(options.config)).stem,
        "pretrained": cfg.get("pretrained") or "none (random init)",
        "epochs_run": int(runner.epoch),
        "epochs_planned": int(cfg.train_cfg.max_epochs),
        "time_budget_minutes": options.max_minutes,
        "best_checkpoint": ckpt.name,
        "kept": options.keep,
        "train_seconds": round(train_seconds, 1),
        # CPU time of this process (rank 0) while training and validating; `curve` has it per epoch.
        "cpu_seconds": curve[-1]["cpu_s"] if curve else None,
        "precision": options.precision,
        "ema": options.ema,
        "ema_momentum": options.ema_momentum,  # None: the ramp from 1 to 0.002
        "frozen_stages": options.frozen_stages,
        "curve": curve,
        "threads": torch.get_num_threads(),
        "processes": int(runner.world_size),
        "device": "cuda" if torch.cuda.is_available() and options.device != "cpu" else "cpu",
        "batch_size": int(cfg.train_dataloader.batch_size),
        "lr": float(cfg.optim_wrapper.optimizer.lr),
        "weight_decay": float(cfg.optim_wrapper.optimizer.weight_decay),
        "size_lr_mult": size_lr_mult(cfg),
        "multi_scale": list(options.multi_scale) if options.multi_scale else None,
        "val_history": _read_val_history(work_dir),
        "dataset": json.loads(summary_path.read_text()) if summary_path.is_file() else {},
    }
    training["command"] = options.command
    if options.init_from:
        training["lineage"] = model_lineage(options.init_from)
    training["hardware"] = _hardware()
    # Written twice on purpose: validation runs the finished model file through
    # `Detector` (the station's own path), then its results go into the file.
    checkpoint_to_model_file(ckpt, cfg, out, options.name or training["config"], training, options.flip_test,
                             options.nms_iou, options.threshold)
    validation = validate_model_file(out, options.data / "val")
    training["validation"] = validation
    # Everything this command cost: the epochs (with their validation, resumed ones
    # included through the curve) plus set-up, the final validation and the card.
    outside = (TrainingClockHook.cpu_seconds() - cpu_at_start - train_cpu, time.monotonic() - wall_at_start - train_wall)
    training["cpu_seconds_total"] = round((curve[-1]["cpu_s"] if curve else train_cpu) + outside[0], 1)
    training["wall_seconds_total"] = round((curve[-1]["wall_s"] if curve else train_wall) + outside[1], 1)
    checkpoint_to_model_file(ckpt, cfg, out, options.name or training["config"], training, options.flip_test,
                             options.nms_iou, options.threshold)

    from detector.model_card import write_model_card

    card = write_model_card(out)
    return TrainResult(model_path=out, checkpoint=ckpt, train_seconds=train_seconds, card=card, validation=validation)


def model_lineage(parent_path: Path) -> list[dict]:
    """The training stages a fine-tune builds on, oldest first (for the model card)."""
    from detector.model_file import load_model_file

    parent = load_model_file(parent_path)
    t = parent.metadata.training
    stage = {
        "name": parent.metadata.name, "sha256": parent.sha256[:16], "config": t.get("config"),
        "pretrained": t.get("pretrained"), "epochs_run": t.get("epochs_run"), "train_seconds": t.get("train_seconds"),
        "command": t.get("command"), "created": parent.metadata.created,
    }
    return [*t.get("lineage", []), stage]


def _earlier_training_seconds(model_path: Path) -> float:
    """Training time already spent, as recorded by the run being resumed."""
    from detector.model_file import load_model_file

    try:
        return float(load_model_file(model_path).metadata.training.get("train_seconds", 0.0))
    except (FileNotFoundError, ValueError):
        return 0.0


def validate_model_file(model_path: Path, val_dir: Path) -> dict:
    """Our own AP evaluation (all-point PR area) of a model file on a COCO split, and the
    PASS/FAIL per picture at the model's default threshold (escapes, false rejects)."""
    from detector import Detector
    from detector.data.coco import load_coco
    from detector.evaluate import evaluate_model

    detector = Detector(model_path, device="cpu")
    images = load_coco(val_dir / "annotations.json", val_dir / "images")
    result = evaluate_model(detector, images, iou_threshold=0.5,
                            verdict_thresholds=(detector.metadata.default_threshold,)).to_json()
    result["iou_threshold"] = 0.5
    result["n_images"] = len(images)
    result["flip_test"] = detector.flip_test
    result["nms_iou"] = detector.nms_iou
    return result


def _hardware() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (CPU only)"
