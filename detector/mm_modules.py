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
