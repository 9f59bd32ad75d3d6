"""Small MMDetection registry additions the configs import (custom_imports)."""

from __future__ import annotations

from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class AddBorder(BaseTransform):
    """Record a zero border: CenterNetHead subtracts `border` from every box.

    MMDetection's own CenterNet test pipeline sets it through
    RandomCenterCropPad; our letterbox pads only bottom/right, so it is zero.
    """

    def transform(self, results: dict) -> dict:
        results["border"] = (0, 0, 0, 0)
        return results


import time  # noqa: E402

from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402


@HOOKS.register_module()
class TimeBudgetHook(Hook):
    """Stop training after the epoch in which `minutes` of wall time ran out.

    Used to compare models under the same CPU budget and to keep CI runs short.
    """

    priority = "LOW"

    def __init__(self, minutes: float):
        self.seconds = float(minutes) * 60.0
        self._start = 0.0

    def before_train(self, runner) -> None:
        self._start = time.monotonic()

    def after_train_epoch(self, runner) -> None:
        from mmengine.dist import broadcast_object_list

        # Under several processes rank 0's clock decides for all: a rank that
        # stopped alone would leave the others waiting in their next all-reduce.
        elapsed = [time.monotonic() - self._start]
        broadcast_object_list(elapsed)
        if elapsed[0] >= self.seconds:
            runner.logger.info(f"time budget of {self.seconds / 60:.1f} min used up after epoch {runner.epoch + 1}; stopping")
            runner.train_loop.stop_training = True


from mmdet.models.backbones import MobileNetV2  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402


@MODELS.register_module()
class MobileNetV2Trunk(MobileNetV2):
    """MMDetection's MobileNetV2 without the stages after its last output.

    CenterNet reads only layer7 (stride 32, 320 channels); the stock backbone
    still runs its 1280-channel conv2, whose unused weights also break
    distributed training (parameters without gradients).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        last = max(self.out_indices)
        for name in self.layers[last + 1:]:
            delattr(self, name)
        self.layers = self.layers[: last + 1]

    def _freeze_stages(self):
        super()._freeze_stages()
        # MMDetection stops the stem's gradients but leaves its BatchNorm in training
        # mode, so its running statistics would still drift under "frozen".
        if self.frozen_stages >= 0:
            self.conv1.eval()


import torch  # noqa: E402
from mmdet.models.dense_heads import CenterNetHead  # noqa: E402


@MODELS.register_module()
class CenterNetIoUHead(CenterNetHead):
    """CenterNetHead plus a size loss on the IoU of the predicted box.

    The stock L1 size loss charges a 2 px error the same on a scratch's
    length as on its width, but IoU (and so AP50) is ruled by the relative
    error, which for long thin scratches is almost all in the width. Both
    boxes share the ground-truth centre here, so their IoU depends on the
    sizes alone: min(w)·min(h) / (w·h + w'·h' − min(w)·min(h)).
    Inference and export are unchanged (same outputs as CenterNetHead).
    """

    def __init__(self, loss_wh_iou_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.loss_wh_iou_weight = loss_wh_iou_weight

    def forward_single(self, x):
        # Under bf16 autocast (Bf16OptimWrapper) the convolutions give bf16 maps; the
        # losses (log of the heatmap, IoU of sizes) are computed in fp32. No-op in fp32.
        return self.heatmap_head(x).float().sigmoid(), self.wh_head(x).float(), self.offset_head(x).float()

    def loss_by_feat(self, center_heatmap_preds, wh_preds, offset_preds, batch_gt_instances,
                     batch_img_metas, batch_gt_instances_ignore=None) -> dict:
        losses = super().loss_by_feat(center_heatmap_preds, wh_preds, offset_preds, batch_gt_instances,
                                      batch_img_metas, batch_gt_instances_ignore)
        wh_pred = wh_preds[0]
        targets, _ = self.get_targets(
            [g.bboxes for g in batch_gt_instances], [g.labels for g in batch_gt_instances],
            center_heatmap_preds[0].shape, batch_img_metas[0]["batch_input_shape"])
        # One weighted cell per box centre; both channels carry the same weight.
        at_centre = targets["wh_offset_target_weight"][:, 0] > 0
        pred = wh_pred.permute(0, 2, 3, 1)[at_centre].clamp(min=0.0)
        true = targets["wh_target"].permute(0, 2, 3, 1)[at_centre]
        if true.numel() == 0:
            losses["loss_wh_iou"] = wh_pred.sum() * 0.0
            return losses
        inter = torch.minimum(pred[:, 0], true[:, 0]) * torch.minimum(pred[:, 1], true[:, 1])
        union = pred[:, 0] * pred[:, 1] + true[:, 0] * true[:, 1] - inter
        iou = inter / union.clamp(min=1e-6)
        losses["loss_wh_iou"] = self.loss_wh_iou_weight * (1.0 - iou).mean()
        return losses


@MODELS.register_module()
class CenterNetEllipseHead(CenterNetIoUHead):
    """CenterNetIoUHead with elliptical centre targets (as in TTFNet).

    CenterNet's round Gaussian takes its radius from the box's short side, so
    a long thin scratch gets a dot-sized target and the network is punished
    for any peak a few cells along the scratch. An ellipse shaped like the box
    (sigma = alpha * side / 6 per axis) tells it where along the length a
    centre is still acceptable.
    """

    def __init__(self, ellipse_alpha: float = 0.54, **kwargs):
        super().__init__(**kwargs)
        self.ellipse_alpha = ellipse_alpha

    def get_targets(self, gt_bboxes, gt_labels, feat_shape, img_shape):
        targets, avg_factor = super().get_targets(gt_bboxes, gt_labels, feat_shape, img_shape)
        heat = targets["center_heatmap_target"]
        heat.zero_()
        img_h, img_w = img_shape[:2]
        _, _, feat_h, feat_w = feat_shape
        sx, sy = feat_w / img_w, feat_h / img_h
        ys = torch.arange(feat_h, dtype=heat.dtype, device=heat.device).view(-1, 1)
        xs = torch.arange(feat_w, dtype=heat.dtype, device=heat.device).view(1, -1)
        for b, (boxes, labels) in enumerate(zip(gt_bboxes, gt_labels)):
            for box, label in zip(boxes, labels):
                w, h = float(box[2] - box[0]) * sx, float(box[3] - box[1]) * sy
                cx, cy = int(float(box[0] + box[2]) * sx / 2), int(float(box[1] + box[3]) * sy / 2)
                rx, ry = max(0, int(self.ellipse_alpha * w / 2)), max(0, int(self.ellipse_alpha * h / 2))
                sig_x, sig_y = (2 * rx + 1) / 6, (2 * ry + 1) / 6
                g = torch.exp(-((xs - cx) ** 2 / (2 * sig_x**2) + (ys - cy) ** 2 / (2 * sig_y**2)))
                g[(xs - cx).abs().expand_as(g) > rx] = 0
                g[(ys - cy).abs().expand_as(g) > ry] = 0
                torch.maximum(heat[b, label], g, out=heat[b, label])
        return targets, max(1, int(heat.eq(1).sum()))


from contextlib import contextmanager  # noqa: E402

from mmengine.optim import OptimWrapper  # noqa: E402
from mmengine.registry import OPTIM_WRAPPERS  # noqa: E402


@OPTIM_WRAPPERS.register_module()
class Bf16OptimWrapper(OptimWrapper):
    """Forward and loss under bfloat16 autocast; weights, gradients and AdamW stay fp32.

    MMEngine's AmpOptimWrapper refuses CPUs. On CPUs with AMX/AVX-512 BF16,
    bf16 convolutions (with channels-last weights, `ChannelsLastHook`) trained
    the CenterNet 1.5-1.7x faster (benchmarks/bench_train.py --precision bf16).
    bf16 has no fp16-style underflow, so no loss scaling is needed.
    """

    @contextmanager
    def optim_context(self, model):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device, dtype=torch.bfloat16):
            yield


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Keep the model's weights channels-last (NHWC) during training.

    oneDNN's convolutions run faster on NHWC; the first layer then turns the
    NCHW input into NHWC by itself. Checkpoints and model files are unaffected
    (the model file stores contiguous tensors), and so are the head's outputs.
    """

    def before_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.to(memory_format=torch.channels_last)
        # The decoder views the head's maps as (N, C*H*W): hand them over contiguous.
        model.bbox_head.register_forward_hook(
            lambda module, inputs, outputs: tuple([t.contiguous() for t in maps] for maps in outputs))


@HOOKS.register_module()
class TrainingClockHook(Hook):
    """Append one JSON line per validated epoch to WORK_DIR/curve.jsonl: time used so far and the metrics.

    `cpu_s` is this process's CPU time (user + system, all threads) since
    training began, `wall_s` the wall time: with other work on the machine
    wall time grows but CPU time does not, so CPU time is what compares runs.
    A resumed run continues the totals of the epochs it kept.
    """

    priority = "VERY_LOW"

    def __init__(self, file_name: str = "curve.jsonl"):
        self.file_name = file_name

    @staticmethod
    def cpu_seconds() -> float:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def before_train(self, runner) -> None:
        import json
        from pathlib import Path

        self.path = Path(runner.work_dir) / self.file_name
        kept = []
        if self.path.is_file():  # resuming: keep the rows of the epochs the checkpoint holds
            kept = [row for row in map(json.loads, self.path.read_text().splitlines()) if row["epoch"] <= runner.epoch]
        if runner.rank == 0:
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        self._cpu0 = self.cpu_seconds() - (kept[-1]["cpu_s"] if kept else 0.0)
        self._wall0 = time.monotonic() - (kept[-1]["wall_s"] if kept else 0.0)

    def after_val_epoch(self, runner, metrics=None) -> None:
        import json

        if runner.rank != 0 or not hasattr(self, "path"):
            return  # validation outside training (runner.val()) has no clock
        row = {"epoch": runner.epoch, "cpu_s": round(self.cpu_seconds() - self._cpu0, 1),
               "wall_s": round(time.monotonic() - self._wall0, 1),
               **{k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


import numpy as np  # noqa: E402
from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.registry import METRICS  # noqa: E402


@METRICS.register_module()
class StationAP50Metric(BaseMetric):
    """Per-class AP50 as the station measures it, on each epoch's validation pass.

    The network's boxes go through the station's class-wise NMS
    (`detector.centernet_decode.classwise_nms`) and our own evaluator
    (all-point PR area, difficult boxes ignored): the figures of
    `python -m detector evaluate`, without flip test. MMDetection's COCO
    metric, logged beside it, has no NMS and no per-class AP50.
    """

    default_prefix = "station"

    def __init__(self, ann_file: str | None = None, nms_iou: float | None = 0.5, score_threshold: float = 0.001, **kwargs):
        super().__init__(**kwargs)
        self.ann_file = ann_file
        self.nms_iou = nms_iou
        self.score_threshold = score_threshold

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            pred = sample["pred_instances"]
            keep = pred["scores"] >= self.score_threshold
            self.results.append((sample["img_path"], pred["bboxes"][keep].cpu().numpy(),
                                 pred["scores"][keep].cpu().numpy(), pred["labels"][keep].cpu().numpy()))

    def compute_metrics(self, results: list) -> dict:
        from pathlib import Path

        from detector.centernet_decode import classwise_nms
        from detector.data.coco import load_coco
        from detector.detection import Detection
        from detector.evaluate import evaluate_detections

        classes = list(self.dataset_meta["classes"])
        ground_truth = load_coco(Path(self.ann_file))
        detections = {}
        for img_path, boxes, scores, labels in results:
            order = (classwise_nms(boxes, scores, labels, self.nms_iou) if self.nms_iou is not None
                     else np.argsort(-scores, kind="stable"))
            detections[Path(img_path).name] = [
                Detection(label=classes[int(labels[i])], score=float(scores[i]), box=tuple(float(v) for v in boxes[i]))
                for i in order]
        result = evaluate_detections(ground_truth, detections, classes, coco=False)
        metrics = {f"ap50_{name}": float(row.ap50) for name, row in result.classes.items()}
        metrics["mAP50"] = float(result.map50)
        return metrics
