"""ONNX export and the ONNX Runtime backend: metadata, parity with MMDetection, no torch needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector import Detection, Detector
from detector.api import DEFAULT_MODEL, DEFAULT_TORCH_MODEL
from detector.model_file import ONNX_FORMAT_NAME, ModelMetadata, file_sha256
from detector.model_file import file_sha256 as sha256_of
from synthetic import add_pits, add_scratch, steel_texture

REPO = Path(__file__).resolve().parents[1]
TINY_SIZE = 128  # small input keeps the export and both forwards fast
HEAT_STRETCH = 10.0  # see make_tiny_model_file
HEAT_QUANTILE = 0.999
PARITY_MIN_SCORE = 0.05
# Same tolerances the issue sets for "the same detections".
BOX_TOL_PX, SCORE_TOL = 1.0, 1e-3


def _pictures(seed: int, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Steel-like grey pictures with a scratch or pits, of the given (height, width)."""
    rng = np.random.default_rng(seed)
    pictures = []
    for i, (h, w) in enumerate(shapes):
        square = steel_texture(max(h, w), rng)
        (add_scratch if i % 2 == 0 else add_pits)(square, rng)
        pictures.append(np.ascontiguousarray(square[:h, :w]))
    return pictures


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def make_tiny_model_file(path: Path, size: int = TINY_SIZE, seed: int = 0) -> Path:
    """A randomly initialised station model file whose heatmap has a few clear peaks.

    PyTorch's default init makes the MobileNetV2 activations vanish (all-constant
    heatmap); recomputing every BatchNorm's statistics on a few pictures restores
    a signal, and the head biases are then set so that some peaks exceed 0.05 and
    box sizes are positive.
    """
    import torch
    from mmengine.config import Config

    from detector.backends import build_mmdet_model
    from detector.configs import config_path
    from detector.model_file import DEFAULT_COLOURS, ModelFile, save_model_file

    cfg = Config.fromfile(config_path("centernet_mobilenetv2"))
    model_cfg = cfg.model.to_dict()
    pre = model_cfg.pop("data_preprocessor")
    torch.manual_seed(seed)
    model = build_mmdet_model(model_cfg)
    mean = np.asarray(pre["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre["std"], np.float32).reshape(1, 3, 1, 1)
    calib = np.stack(_pictures(seed + 100, [(size, size)] * 6))[:, None].astype(np.float32)
    x = torch.from_numpy((np.repeat(calib, 3, axis=1) - mean) / std)
    with torch.no_grad():
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # running stats = this batch's statistics
        model.extract_feat(x)
        model.eval()
        feat = model.extract_feat(x)[0]
        head = model.bbox_head
        heat = head.heatmap_head(feat).transpose(0, 1).reshape(2, -1)
        # Stretch the logits so the top 0.1% of positions lie above 0.1 and most
        # others far below 0.05: tens of peaks per picture, fewer than top-k (100),
        # so no detection depends on where the top-k cut falls.
        q = torch.quantile(heat, HEAT_QUANTILE, dim=1)
        last = head.heatmap_head[2]
        last.weight *= HEAT_STRETCH
        last.bias.copy_(HEAT_STRETCH * (last.bias - q) + _logit(0.1))
        wh = head.wh_head(feat).transpose(0, 1).reshape(2, -1)
        head.wh_head[2].weight *= (1.5 / wh.std(dim=1)).reshape(2, 1, 1, 1)
        head.wh_head[2].bias += 6.0 - head.wh_head(feat).mean(dim=(0, 2, 3))  # ~6 feature px = 24 input px
    state = {k: v for k, v in model.state_dict().items()}
    classes = ("scratch", "pit")
    meta = ModelMetadata(
        name="tiny-random",
        class_names=classes,
        colours={c: DEFAULT_COLOURS[c] for c in classes},
        input_size=size,
        default_threshold=0.3,
        mean=tuple(float(v) for v in pre["mean"]),
        std=tuple(float(v) for v in pre["std"]),
        created="2024-01-01T00:00:00+00:00",
        training={"note": "random weights for tests", "epochs": 0, "ap50": {"scratch": None, "pit": 0.5}},
    )
    return save_model_file(path, ModelFile(metadata=meta, model_cfg=model_cfg, state_dict=state))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    from detector.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    pth = make_tiny_model_file(folder / "tiny.pth")
    result = export_onnx(pth, folder / "tiny.onnx")
    return pth, result.path


@pytest.fixture(scope="module")
def tiny_detectors(tiny_models) -> tuple[Detector, Detector]:
    pth, onnx_path = tiny_models
    return Detector(pth, device="cpu"), Detector(onnx_path, device="cpu")


def assert_same_detections(a: list[Detection], b: list[Detection], min_score: float = PARITY_MIN_SCORE) -> None:
    """Every detection >= min_score in one list has a twin in the other (label, box, score)."""
    for first, second, names in ((a, b, "MMDetection -> ONNX"), (b, a, "ONNX -> MMDetection")):
        unmatched = list(second)
        for det in (d for d in first if d.score >= min_score):
            twins = [
                o for o in unmatched
                if o.label == det.label
                and abs(o.score - det.score) <= SCORE_TOL
                and max(abs(p - q) for p, q in zip(o.box, det.box)) <= BOX_TOL_PX
            ]
            assert twins, f"{names}: no counterpart for {det}"
            best = min(twins, key=lambda o: max(abs(p - q) for p, q in zip(o.box, det.box)))
            unmatched.remove(best)


def detect_pair(dets: tuple[Detector, Detector], image) -> tuple[list[Detection], list[Detection]]:
    # A lower threshold than the parity cut, so detections right at 0.05 on one
    # side still find their twin just below it on the other.
    low = PARITY_MIN_SCORE - 2 * SCORE_TOL
    return dets[0].detect(image, threshold=low), dets[1].detect(image, threshold=low)


# --- export ---------------------------------------------------------------


def test_export_writes_checked_onnx_with_metadata(tiny_models):
    import onnx

    pth, onnx_path = tiny_models
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["format"] == ONNX_FORMAT_NAME and props["format_version"] == "1"
    assert props["source_sha256"] == file_sha256(pth)
    assert props["source_file"] == "tiny.pth"
    meta = ModelMetadata.from_dict(json.loads(props["metadata"]))
    assert meta == Detector(pth, device="cpu").metadata, "all metadata travels in the ONNX file"
    assert meta.training["ap50"] == {"scratch": None, "pit": 0.5}
    # Dynamic batch, fixed input size.
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [3, TINY_SIZE, TINY_SIZE]
    assert [o.name for o in proto.graph.output] == ["heatmap", "wh", "offset"]
    assert not list(onnx_path.parent.glob("*.tmp")), "no temporary file is left behind"
    # The exact CPU rewrites were applied (and checked against PyTorch by the export).
    assert json.loads(props["graph_rewrites"]) == {"batchnorms_folded": 3, "deconvs_as_phase_convs": 3}
    ops = {n.op_type for n in proto.graph.node}
    assert "ConvTranspose" not in ops and "BatchNormalization" not in ops and "DepthToSpace" in ops


def test_onnx_detector_reports_its_model(tiny_models, tiny_detectors):
    pth, onnx_path = tiny_models
    torch_det, onnx_det = tiny_detectors
    assert onnx_det.metadata == torch_det.metadata
    assert onnx_det.device == "cpu"
    assert onnx_det._backend.source_sha256 == file_sha256(pth)
    assert onnx_det.model_id == f"tiny-random@{file_sha256(onnx_path)[:12]}"


def test_export_cli(tiny_models, tmp_path, capsys):
    from detector.cli import main

    pth, _ = tiny_models
    out = tmp_path / "sub" / "cli.onnx"
    assert main(["export", "--model", str(pth), "--out", str(out), "--opset", "13"]) == 0
    assert out.is_file() and "opset 13" in capsys.readouterr().out
    image = _pictures(5, [(TINY_SIZE, TINY_SIZE)])[0]
    assert_same_detections(Detector(out, device="cpu").detect(image, 0.03), Detector(tiny_models[1], device="cpu").detect(image, 0.03))


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--model", "{tmp}/missing.pth", "--out", "{tmp}/x.onnx"], 1, "model file not found"),
        (["--model", "{tmp}/foreign.pth", "--out", "{tmp}/x.onnx"], 1, "not a metal-inspection-centernet model file"),
        (["--model", "{tmp}/foreign.pth", "--out", "{tmp}/x.txt"], 2, "--out must end in .onnx"),
        (["--model", "{tmp}/foreign.pth", "--out", "{tmp}/x.onnx", "--opset", "99"], 2, "--opset"),
    ],
)
def test_export_cli_errors(tmp_path, capsys, argv, status, message):
    import torch

    from detector.cli import main

    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    assert main(["export", *(a.format(tmp=tmp_path) for a in argv)]) == status
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


# --- parity ---------------------------------------------------------------


def test_raw_head_maps_agree(tiny_detectors):
    from detector.export import check_batch

    torch_det, onnx_det = tiny_detectors
    batch = check_batch(torch_det.metadata, n=3, seed=7)
    for name, a, b in zip(("heatmap", "wh", "offset"), torch_det._backend.forward(batch), onnx_det._backend.forward(batch)):
        assert a.shape == b.shape and a.shape[0] == 3
        # Random weights are less well conditioned than trained ones (~1e-4 here, ~1e-7 trained).
        assert np.max(np.abs(a - b)) < SCORE_TOL * max(1.0, float(np.max(np.abs(a)))), name


def test_parity_on_generated_pictures(tiny_detectors):
    # Exact input size, downscaled (square and not), upscaled: the letterbox
    # mapping is exercised in every direction.
    shapes = [(TINY_SIZE, TINY_SIZE), (200, 200), (300, 180), (150, 260), (96, 96), (128, 64)]
    counted = 0
    for image in _pictures(11, shapes):
        a, b = detect_pair(tiny_detectors, image)
        assert len(a) < 100 and len(b) < 100, "top-k is full: the parity of its last entries is down to ties"
        assert_same_detections(a, b)
        counted += sum(d.score >= PARITY_MIN_SCORE for d in a)
        x1, y1, x2, y2 = zip(*(d.box for d in a)) if a else ((), (), (), ())
        assert all(0 <= v <= image.shape[1] for v in x1 + x2) and all(0 <= v <= image.shape[0] for v in y1 + y2)
    assert counted >= 2 * len(shapes), f"only {counted} detections >= {PARITY_MIN_SCORE}: the parity test would prove nothing"


def test_parity_in_batches(tiny_detectors):
    images = _pictures(12, [(TINY_SIZE, TINY_SIZE), (180, 240), (64, 64)])
    torch_det, onnx_det = tiny_detectors
    batched = onnx_det.detect_batch(images, threshold=0.03)
    assert batched == [onnx_det.detect(img, threshold=0.03) for img in images]
    for a, b in zip(torch_det.detect_batch(images, threshold=0.03), batched):
        assert_same_detections(a, b)


def test_parity_helper_catches_disagreement():
    det = Detection("scratch", 0.5, (10.0, 10.0, 50.0, 60.0))
    assert_same_detections([det], [Detection("scratch", 0.5004, (10.5, 9.5, 50.0, 60.9))])
    for other in (
        Detection("pit", 0.5, det.box),
        Detection("scratch", 0.502, det.box),
        Detection("scratch", 0.5, (10.0, 10.0, 51.5, 60.0)),
    ):
        with pytest.raises(AssertionError):
            assert_same_detections([det], [other])
    with pytest.raises(AssertionError):
        assert_same_detections([], [det])


@pytest.mark.neu
def test_parity_on_neu_det_with_shipped_model(neu_det):
    """The shipped .onnx (the station's default) agrees with the shipped .pth it came from."""
    if not (DEFAULT_MODEL.is_file() and DEFAULT_TORCH_MODEL.is_file()):
        pytest.skip(f"shipped models not found beside {DEFAULT_MODEL}")
    dets = (Detector(DEFAULT_TORCH_MODEL, device="cpu"), Detector(DEFAULT_MODEL, device="cpu"))
    assert dets[1]._backend.source_sha256 == sha256_of(DEFAULT_TORCH_MODEL), "the .onnx was exported from this .pth"
    files = sorted((neu_det / "images").glob("*.jpg"))
    counted = 0
    for path in files[:: max(1, len(files) // 30)]:  # ~30 pictures over all six NEU classes
        a, b = detect_pair(dets, path)
        assert_same_detections(a, b)
        counted += sum(d.score >= PARITY_MIN_SCORE for d in a)
    assert counted > 0, "the shipped model found nothing >= 0.05 on NEU-DET: parity untested"


# --- station runtime without the training stack ---------------------------

_GUARD = r"""
import importlib.abc
import sys

BLOCKED = {"torch", "torchvision", "mmdet", "mmcv", "mmengine"}


class BlockTrainingStack(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"import of {name} blocked by the test")
        return None


sys.meta_path.insert(0, BlockTrainingStack())

import cv2
import numpy as np

import detector
from detector import Detector

det = Detector(sys.argv[1], device="cpu")
image = cv2.imread(sys.argv[2], cv2.IMREAD_GRAYSCALE)
found = det.detect(image, threshold=0.05)
assert found, "the picture has peaks above 0.05"
loaded = BLOCKED & {m.partition(".")[0] for m in sys.modules}
assert not loaded, loaded
print("ok", len(found), det.model_id)
"""


def test_onnx_detect_runs_without_torch_or_mmdet(tiny_models, tiny_detectors, tmp_path):
    _, onnx_path = tiny_models
    image = _pictures(11, [(200, 200)])[0]
    picture = tmp_path / "part.png"
    cv2.imwrite(str(picture), image)
    assert tiny_detectors[1].detect(image, 0.05), "precondition: the picture gives detections"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _GUARD, str(onnx_path), str(picture)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")


def test_the_guard_would_catch_torch(tiny_models, tmp_path):
    """The guard test is not vacuous: a .pth model needs torch and fails under it."""
    pth, _ = tiny_models
    picture = tmp_path / "part.png"
    cv2.imwrite(str(picture), _pictures(11, [(200, 200)])[0])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _GUARD, str(pth), str(picture)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


# --- bad ONNX files -------------------------------------------------------


def _with_props(src: Path, dst: Path, **changes: str | None) -> Path:
    import onnx

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(dst))
    return dst


def test_missing_onnx_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Detector(tmp_path / "missing.onnx")


def test_corrupt_and_truncated_onnx_files(tiny_models, tmp_path):
    _, onnx_path = tiny_models
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 50)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 2])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    for path in (garbage, truncated, empty):
        with pytest.raises(ValueError, match="cannot load ONNX model"):
            Detector(path, device="cpu")
    with pytest.raises(ValueError, match="not a model file"):
        Detector(folder, device="cpu")


def test_foreign_onnx_file(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])], "foreign",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="not a metal-inspection-centernet-onnx model"):
        Detector(path, device="cpu")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": None}, "not a metal-inspection-centernet-onnx model"),
        ({"format_version": "99"}, "format version 99"),
        ({"metadata": "{not json"}, "not valid JSON"),
        ({"metadata": "[1, 2]"}, "not a JSON object"),
        ({"metadata": json.dumps({"name": "x"})}, "incomplete or malformed"),
    ],
)
def test_onnx_with_bad_metadata(tiny_models, tmp_path, changes, message):
    _, onnx_path = tiny_models
    with pytest.raises(ValueError, match=message):
        Detector(_with_props(onnx_path, tmp_path / "bad.onnx", **changes), device="cpu")


def test_onnx_whose_metadata_disagrees_with_the_graph(tiny_models, tiny_detectors, tmp_path):
    _, onnx_path = tiny_models
    meta = tiny_detectors[1].metadata.to_dict()
    wrong_size = _with_props(onnx_path, tmp_path / "size.onnx", metadata=json.dumps({**meta, "input_size": 256}))
    with pytest.raises(ValueError, match="does not match the metadata's input size 256"):
        Detector(wrong_size, device="cpu")
    wrong_classes = _with_props(onnx_path, tmp_path / "classes.onnx",
                                metadata=json.dumps({**meta, "class_names": ["a", "b", "c"]}))
    with pytest.raises(ValueError, match="heatmap has 2 channels for 3 class names"):
        Detector(wrong_classes, device="cpu")


def test_onnx_device_words(tiny_models):
    import onnxruntime as ort

    _, onnx_path = tiny_models
    with pytest.raises(ValueError, match="unknown device"):
        Detector(onnx_path, device="tpu")
    with pytest.raises(ValueError, match="unknown device"):
        Detector(onnx_path, device="cuda:x")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="CUDA"):
            Detector(onnx_path, device="cuda")
        assert Detector(onnx_path, device="auto").device == "cpu"


def test_threads_setting(tiny_models):
    _, onnx_path = tiny_models
    det = Detector(onnx_path, device="cpu", threads=1)
    assert det._backend.session.get_session_options().intra_op_num_threads == 1


def test_flip_test_parity_and_it_changes_the_maps(tiny_models):
    pth, onnx_path = tiny_models
    plain = Detector(onnx_path, device="cpu")
    flipped = (Detector(pth, device="cpu", flip_test=True), Detector(onnx_path, device="cpu", flip_test=True))
    assert not plain.flip_test and all(d.flip_test for d in flipped)
    changed = 0
    for image in _pictures(13, [(TINY_SIZE, TINY_SIZE), (300, 180)]):
        a, b = detect_pair(flipped, image)
        assert_same_detections(a, b)  # both backends average the same mirrored maps
        changed += a != plain.detect(image, threshold=PARITY_MIN_SCORE - 2 * SCORE_TOL)
    assert changed  # averaging over mirrors is not a no-op


def test_model_command_sets_flip_test_and_drops_stale_validation(tiny_models, tmp_path, capsys):
    import shutil

    from detector.cli import main
    from detector.model_file import load_model_file, save_model_file

    pth = shutil.copy(tiny_models[0], tmp_path / "m.pth")
    model = load_model_file(pth)
    model.metadata.training["validation"] = {"classes": {}, "map50": 0.5, "map": 0.2}
    save_model_file(pth, model)
    assert main(["model", str(pth), "--flip-test", "on", "--threshold", "0.4"]) == 0
    meta = load_model_file(pth).metadata
    assert meta.flip_test and meta.default_threshold == 0.4 and "validation" not in meta.training
    assert Detector(pth, device="cpu").flip_test
    assert "flip test on" in capsys.readouterr().out and (tmp_path / "m.md").is_file()
    with pytest.raises(SystemExit):  # refused by the argument parser, with the reason
        main(["model", str(pth), "--threshold", "2"])
    assert "a threshold must be within 0..1, got 2.0" in capsys.readouterr().err


def test_model_command_sets_nms_and_it_travels_into_the_onnx_file(tiny_models, tmp_path, capsys):
    import shutil

    from detector.cli import main
    from detector.model_file import load_model_file

    pth = shutil.copy(tiny_models[0], tmp_path / "m.pth")
    assert load_model_file(pth).metadata.nms_iou is None, "made without the setting: every peak is a box"
    assert main(["model", str(pth), "--nms-iou", "0.5"]) == 0
    assert Detector(pth, device="cpu").nms_iou == 0.5
    assert main(["model", str(pth), "--nms-iou", "off"]) == 0
    assert load_model_file(pth).metadata.nms_iou is None and Detector(pth, device="cpu").nms_iou is None
    assert main(["model", str(pth), "--nms-iou", "0.6", "--name", "renamed"]) == 0
    assert "NMS 0.6" in capsys.readouterr().out
    assert main(["model", str(pth), "--name", "again"]) == 0, "other changes leave NMS alone"
    meta = load_model_file(pth).metadata
    assert meta.nms_iou == 0.6
    history = meta.training["settings_changes"]
    assert [c["changes"] for c in history] == [{"nms_iou": 0.5}, {"nms_iou": None}, {"nms_iou": 0.6, "name": "renamed"},
                                              {"name": "again"}]
    assert history[2]["command"] == f"python -m detector model {pth} --nms-iou 0.6 --name renamed"
    assert "Changed after training" in (tmp_path / "m.md").read_text() and "--nms-iou 0.6" in (tmp_path / "m.md").read_text()
    assert main(["export", "--model", str(pth), "--out", str(tmp_path / "m.onnx")]) == 0
    assert Detector(tmp_path / "m.onnx", device="cpu").nms_iou == 0.6
    for bad in ("0", "1.5", "lots"):
        with pytest.raises(SystemExit):
            main(["model", str(pth), "--nms-iou", bad])
        assert "--nms-iou" in capsys.readouterr().err


def test_model_tool_write_card_leaves_the_model_file_alone(tiny_models, tmp_path):
    import shutil

    from detector.cli import main
    from detector.model_file import file_sha256

    pth = shutil.copy(tiny_models[0], tmp_path / "m.pth")
    before = file_sha256(pth)
    assert main(["model", str(pth)]) == 0 and not (tmp_path / "m.md").exists()  # showing writes nothing
    assert main(["model", str(pth), "--write-card"]) == 0
    assert file_sha256(pth) == before and "# Model card: tiny-random" in (tmp_path / "m.md").read_text()
