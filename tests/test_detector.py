"""The `detect()` interface with the shipped model: real pictures, real weights."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detector import Detection, Detector, detect
from detector.api import DEFAULT_MODEL, DEFAULT_TORCH_MODEL


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(device="cpu")


def test_default_model_loads_with_metadata(detector):
    meta = detector.metadata
    assert detector.model_path == DEFAULT_MODEL
    assert meta.class_names == ("scratch", "pit")
    assert set(meta.colours) == {"scratch", "pit"} and meta.colours["scratch"] != meta.colours["pit"]
    assert meta.input_size % 32 == 0
    assert 0 < meta.default_threshold < 1
    assert meta.training["dataset"]["sources"], "training data summary travels with the model"
    assert detector.model_id.startswith(meta.name + "@")


def test_detections_are_sorted_typed_and_inside_the_image(detector, scratch_image):
    image, _ = scratch_image
    dets = detector.detect(image, threshold=0.01)
    assert dets, "a low threshold must return the model's strongest peaks"
    assert all(isinstance(d, Detection) and d.label in ("scratch", "pit") for d in dets)
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    for d in dets:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 200


def test_threshold_filters(detector, scratch_image):
    image, _ = scratch_image
    low = detector.detect(image, threshold=0.01)
    cut = low[len(low) // 2].score
    high = detector.detect(image, threshold=cut)
    assert [d for d in low if d.score >= cut] == high


def test_input_forms_agree(detector, scratch_image, tmp_path):
    grey, _ = scratch_image
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    bgra = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA)
    grey16 = grey.astype(np.uint16) * 257  # full-scale 16-bit of the same picture
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), grey)
    reference = detector.detect(grey, threshold=0.05)
    for variant in (bgr, bgra, grey[:, :, None], grey16, str(path), path):
        assert detector.detect(variant, threshold=0.05) == reference


def test_batch_equals_single(detector, scratch_image):
    image, _ = scratch_image
    other = np.ascontiguousarray(np.flipud(image))
    batch = detector.detect_batch([image, other], threshold=0.05)
    assert batch == [detector.detect(image, threshold=0.05), detector.detect(other, threshold=0.05)]
    assert detector.detect_batch([]) == []


def test_network_maps_then_decode_is_detect(detector, scratch_image):
    """The two halves a settings sweep uses give exactly what `detect` gives."""
    image, _ = scratch_image
    maps = detector.network_maps([image])
    assert maps[0].heat.shape == (2, 64, 64) and maps[0].image_size == (200, 200)
    assert detector.decode_maps(maps, 0.05, detector.nms_iou) == [detector.detect(image, threshold=0.05)]
    unmerged = detector.decode_maps(maps, 0.01, None)
    assert len(unmerged) == 1 and len(unmerged[0]) >= len(detector.detect(image, threshold=0.01))


def test_network_maps_at_another_size_and_without_flips():
    torch_detector = Detector(DEFAULT_TORCH_MODEL, device="cpu", threads=2)
    grey = np.full((200, 200), 128, np.uint8)
    small = torch_detector.network_maps([grey], input_size=224, flip_test=False)[0]
    assert small.heat.shape == (2, 56, 56) and small.input_size == 224 and small.scale == (1.12, 1.12)
    own, plain = torch_detector.network_maps([grey])[0], torch_detector.network_maps([grey], flip_test=False)[0]
    assert own.heat.shape == (2, 64, 64) and not np.allclose(own.heat, plain.heat)  # the flip test averages


def test_boxes_map_back_through_the_resize(detector, scratch_image):
    """The same picture at twice the size gives the same boxes, twice as large."""
    image, _ = scratch_image
    big = cv2.resize(image, (400, 400), interpolation=cv2.INTER_LINEAR)
    # The strongest scratch box in each (the texture also yields weak pit guesses).
    small_top = next(d for d in detector.detect(image, threshold=0.01) if d.label == "scratch")
    big_top = next(d for d in detector.detect(big, threshold=0.01) if d.label == "scratch")
    assert np.allclose(np.array(big_top.box) / 2, small_top.box, atol=4)


def test_non_square_picture_boxes_stay_inside(detector, scratch_image):
    image, _ = scratch_image
    wide = np.hstack([image, image, image])  # 600x200
    for d in detector.detect(wide, threshold=0.01):
        assert 0 <= d.box[0] < d.box[2] <= 600 and 0 <= d.box[1] < d.box[3] <= 200


def test_module_level_detect_uses_default_model(scratch_image):
    image, _ = scratch_image
    assert detect(image, threshold=0.05) == Detector(device="cpu").detect(image, threshold=0.05)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((10, 10, 2), np.uint8), "channels"),
        (np.zeros((10, 10), np.int32), "dtype"),
        (np.full((10, 10), np.nan, np.float32), "NaN"),
        (np.zeros((2, 2, 2, 2), np.uint8), "shape"),
        ("not-an-array", "not found"),
    ],
)
def test_bad_arrays_raise_clear_errors(detector, bad, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        detector.detect(bad)


def test_bad_files_raise_clear_errors(detector, tmp_path, scratch_image):
    image, _ = scratch_image
    with pytest.raises(FileNotFoundError, match="not found"):
        detector.detect(tmp_path / "missing.png")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a picture")
    with pytest.raises(ValueError, match="cannot decode"):
        detector.detect(junk)
    ok, jpg = cv2.imencode(".jpg", image)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg.tobytes()[: len(jpg) // 2])
    with pytest.raises(ValueError, match="truncated|cannot decode"):
        detector.detect(cut)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        detector.detect(empty)
    with pytest.raises(ValueError, match="threshold"):
        detector.detect(image, threshold=1.5)


def test_bad_model_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Detector(tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(DEFAULT_TORCH_MODEL.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read model file"):
        Detector(corrupt)
    unknown = tmp_path / "model.tflite"
    unknown.write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="unknown model format"):
        Detector(unknown)
    import torch

    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ValueError, match="not a metal-inspection-centernet model file"):
        Detector(foreign)


def test_numpy_decoding_matches_mmdetection(scratch_image):
    """Our shared numpy decoder gives MMDetection's own CenterNet predictions."""
    import torch
    from mmdet.structures import DetDataSample

    detector = Detector(DEFAULT_TORCH_MODEL, device="cpu", flip_test=False)  # predict() runs one pass
    detector.nms_iou = None  # predict() keeps every peak; NMS is checked against mmcv's below
    image, _ = scratch_image
    size = detector.metadata.input_size
    ours = detector.detect(image, threshold=0.05)

    from detector.images import letterbox

    canvas, sx, sy = letterbox(image, size)
    x = np.repeat(canvas[None, None].astype(np.float32), 3, axis=1)
    x = (x - np.array(detector.metadata.mean, np.float32).reshape(1, 3, 1, 1)) / np.array(
        detector.metadata.std, np.float32
    ).reshape(1, 3, 1, 1)
    sample = DetDataSample(metainfo=dict(
        batch_input_shape=(size, size), img_shape=(size, size), border=(0, 0, 0, 0), scale_factor=(sx, sy),
    ))
    model = detector._backend.model
    with torch.inference_mode():
        (result,) = model.predict(torch.from_numpy(x), [sample], rescale=True)
    pred = result.pred_instances
    keep = pred.scores >= 0.05
    theirs = [
        (model.bbox_head.num_classes and detector.metadata.class_names[int(lbl)], float(s), np.clip(b.numpy(), 0, 200))
        for b, s, lbl in zip(pred.bboxes[keep], pred.scores[keep], pred.labels[keep])
    ]
    assert len(theirs) == len(ours)
    for d, (label, score, box) in zip(ours, theirs):
        assert d.label == label
        assert abs(d.score - score) < 1e-5
        assert np.allclose(d.box, box, atol=1e-3)


def test_nms_matches_mmcv_batched_nms(scratch_image):
    """The decoder's class-wise NMS keeps exactly what mmcv's batched_nms keeps."""
    import torch
    from mmcv.ops import batched_nms

    detector = Detector(DEFAULT_TORCH_MODEL, device="cpu", flip_test=False)
    image, _ = scratch_image
    detector.nms_iou = None
    every_peak = detector.detect(image, threshold=0.01)
    detector.nms_iou = 0.5
    kept = detector.detect(image, threshold=0.01)
    assert 0 < len(kept) < len(every_peak), "the picture has overlapping peaks to suppress"

    boxes = torch.tensor([d.box for d in every_peak])
    scores = torch.tensor([d.score for d in every_peak])
    labels = torch.tensor([detector.metadata.class_names.index(d.label) for d in every_peak])
    _, keep = batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=0.5))
    assert [every_peak[i] for i in sorted(keep.tolist())] == kept


def _peaks_maps(centres, size=32):
    """Head maps with a peak of `score` and box `w`x`h` (feature cells) at each (class, x, y, score, w, h)."""
    heat = np.zeros((2, size, size), np.float32)
    wh = np.zeros((2, size, size), np.float32)
    for cls, x, y, score, w, h in centres:
        heat[cls, y, x] = score
        wh[:, y, x] = (w, h)
    return heat, wh, np.zeros((2, size, size), np.float32)


def _decode(maps, **kw):
    from detector.centernet_decode import decode

    return decode(*maps, input_size=128, scale=(1.0, 1.0), image_size=(128, 128), class_names=("scratch", "pit"), **kw)


def test_nms_drops_duplicate_boxes_of_one_class_only():
    # Two pit peaks 2 cells apart with big boxes (IoU 0.82), a third far away, a scratch on the first.
    maps = _peaks_maps([(1, 10, 10, 0.9, 20, 20), (1, 12, 10, 0.6, 20, 20), (1, 25, 25, 0.5, 4, 4), (0, 10, 10, 0.7, 20, 20)])
    every = _decode(maps, threshold=0.1)
    assert [(d.label, round(d.score, 2)) for d in every] == [("pit", 0.9), ("scratch", 0.7), ("pit", 0.6), ("pit", 0.5)]
    kept = _decode(maps, threshold=0.1, nms_iou=0.5)
    assert [(d.label, round(d.score, 2)) for d in kept] == [("pit", 0.9), ("scratch", 0.7), ("pit", 0.5)]
    assert _decode(maps, threshold=0.1, nms_iou=0.85) == every, "IoU 0.82 is kept under a looser limit"


def test_nms_then_threshold_equals_threshold_then_nms():
    """The station's slider filters stored detections; that must equal decoding at the new threshold."""
    rng = np.random.default_rng(0)
    centres = [(int(rng.integers(2)), int(rng.integers(32)), int(rng.integers(32)), float(rng.uniform(0.05, 1)),
                float(rng.uniform(2, 12)), float(rng.uniform(2, 12))) for _ in range(60)]
    maps = _peaks_maps(centres)
    low = _decode(maps, threshold=0.05, nms_iou=0.5)
    assert len(low) < len(_decode(maps, threshold=0.05)), "the random boxes overlap: NMS has work to do"
    for t in (0.1, 0.3, 0.5, 0.8):
        assert _decode(maps, threshold=t, nms_iou=0.5) == [d for d in low if d.score >= t]
