"""CenterNet output decoding in numpy, shared by every backend.

The network gives, at 1/4 of the input resolution, a per-class centre
heatmap (already sigmoid), box width/height and a sub-pixel centre offset.
A detection is a heatmap peak (a local 3x3 maximum) among the top-k scores.
Large objects can hold several such peaks (one pit cluster, two boxes), so a
model may ask for class-wise non-maximum suppression of the decoded boxes.
"""

from __future__ import annotations

import cv2
import numpy as np

from detector.detection import Detection


def local_maxima(heatmap: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Zero every heatmap value that is not the maximum of its kxk window.

    Same as MMDetection's `get_local_maximum` (max-pool with -inf padding):
    cv2.dilate pads with -inf for dilation by default.
    """
    element = np.ones((kernel, kernel), np.uint8)
    peaks = np.empty_like(heatmap)
    for c in range(heatmap.shape[0]):
        peaks[c] = cv2.dilate(heatmap[c], element)
    return np.where(peaks == heatmap, heatmap, 0.0).astype(heatmap.dtype, copy=False)


def decode(
    heatmap: np.ndarray,
    wh: np.ndarray,
    offset: np.ndarray,
    *,
    input_size: int,
    scale: tuple[float, float],
    image_size: tuple[int, int],
    class_names: tuple[str, ...] | list[str],
    threshold: float,
    topk: int = 100,
    kernel: int = 3,
    nms_iou: float | None = None,
) -> list[Detection]:
    """Turn one image's head outputs (C,H,W), (2,H,W), (2,H,W) into detections.

    `scale` is the letterbox (x, y) factor, `image_size` the (width, height)
    of the picture the boxes are returned in; boxes are clipped to it.
    `nms_iou`: drop a box that overlaps a higher-scoring box of its class by
    more than this IoU (None: keep every peak). Greedy suppression only looks
    at higher scores, so the boxes above any threshold are the same whether the
    threshold is applied before or after it (the station's slider relies on that).
    """
    num_classes, height, width = heatmap.shape
    peaks = local_maxima(heatmap.astype(np.float32, copy=False), kernel).reshape(-1)
    k = min(topk, peaks.size)
    top = np.argpartition(-peaks, k - 1)[:k]
    top = top[np.argsort(-peaks[top], kind="stable")]
    scores = peaks[top]
    top = top[scores >= threshold]
    scores = scores[scores >= threshold]
    if top.size == 0:
        return []
    labels = top // (height * width)
    spatial = top % (height * width)
    ys = (spatial // width).astype(np.float32)
    xs = (spatial % width).astype(np.float32)
    w = wh[0].reshape(-1)[spatial]
    h = wh[1].reshape(-1)[spatial]
    cx = xs + offset[0].reshape(-1)[spatial]
    cy = ys + offset[1].reshape(-1)[spatial]
    stride_x, stride_y = input_size / width, input_size / height
    img_w, img_h = image_size
    x1 = np.clip((cx - w / 2) * stride_x / scale[0], 0, img_w)
    y1 = np.clip((cy - h / 2) * stride_y / scale[1], 0, img_h)
    x2 = np.clip((cx + w / 2) * stride_x / scale[0], 0, img_w)
    y2 = np.clip((cy + h / 2) * stride_y / scale[1], 0, img_h)
    keep = (x2 > x1) & (y2 > y1)
    if nms_iou is not None:
        keep &= _not_suppressed(np.stack([x1, y1, x2, y2], axis=1), labels, keep, nms_iou)
    return [
        Detection(
            label=class_names[int(labels[i])],
            score=float(scores[i]),
            box=(float(x1[i]), float(y1[i]), float(x2[i]), float(y2[i])),
        )
        for i in np.flatnonzero(keep)
    ]


def classwise_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes (N,4) that survive greedy class-wise NMS at `iou`, highest score first.

    The suppression `decode` applies, for boxes from elsewhere (the training-time metric).
    """
    order = np.argsort(-scores, kind="stable")
    keep = _not_suppressed(boxes[order], labels[order], np.ones(len(order), bool), iou)
    return order[keep]


def _not_suppressed(boxes: np.ndarray, labels: np.ndarray, candidates: np.ndarray, iou: float) -> np.ndarray:
    """Greedy class-wise NMS over boxes sorted by descending score: which ones survive."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    inter_w = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    inter_h = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    inter = inter_w * inter_h
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = inter / (area[:, None] + area[None] - inter)
    suppresses = (overlap > iou) & (labels[:, None] == labels[None])
    keep = candidates.copy()
    for i in range(len(keep)):
        if keep[i]:
            keep[i + 1:] &= ~suppresses[i, i + 1:]
    return keep
