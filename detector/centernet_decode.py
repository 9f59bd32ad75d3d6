"""CenterNet output decoding in numpy, shared by every backend.

The network gives, at 1/4 of the input resolution, a per-class centre
heatmap (already sigmoid), box width/height and a sub-pixel centre offset.
A detection is a heatmap peak (a local 3x3 maximum) among the top-k scores.
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
) -> list[Detection]:
    """Turn one image's head outputs (C,H,W), (2,H,W), (2,H,W) into detections.

    `scale` is the letterbox (x, y) factor, `image_size` the (width, height)
    of the picture the boxes are returned in; boxes are clipped to it.
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
    return [
        Detection(
            label=class_names[int(labels[i])],
            score=float(scores[i]),
            box=(float(x1[i]), float(y1[i]), float(x2[i]), float(y2[i])),
        )
        for i in range(top.size)
        if x2[i] > x1[i] and y2[i] > y1[i]
    ]
