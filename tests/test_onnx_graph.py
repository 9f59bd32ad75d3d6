"""The exact graph rewrites of `detector.onnx_graph`: same outputs, the intended operators."""

from __future__ import annotations

import numpy as np
import pytest

from detector.onnx_graph import deconvs_to_phase_convs, fold_batchnorm_into_deconvs, optimize_for_cpu

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(nodes, inputs, outputs, arrays: dict[str, np.ndarray]):
    inits = [numpy_helper.from_array(a.astype(np.float32) if a.dtype.kind == "f" else a, name) for name, a in arrays.items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _deconv_model(rng, cin, cout, h, w, *, bn: bool, relu: bool):
    arrays = {"w": rng.standard_normal((cin, cout, 4, 4)), "b": rng.standard_normal(cout)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["up"], name="up",
                              kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1])]
    last = "up"
    if bn:
        arrays |= {"g": rng.uniform(0.5, 2, cout), "beta": rng.standard_normal(cout),
                   "mean": rng.standard_normal(cout), "var": rng.uniform(0.1, 3, cout)}
        nodes.append(helper.make_node("BatchNormalization", ["up", "g", "beta", "mean", "var"], ["bn"], name="bn",
                                      epsilon=1e-3))
        last = "bn"
    nodes.append(helper.make_node("Relu" if relu else "Identity", [last], ["y"], name="act"))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, cin, h, w])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, cout, 2 * h, 2 * w])], arrays)


@pytest.mark.parametrize(("bn", "relu"), [(True, True), (False, True), (False, False)])
def test_deconv_as_phase_convs_is_exact(bn, relu):
    """ConvTranspose(4x4, stride 2, pad 1) [+ BatchNorm] [+ Relu] == four 2x2 Convs + Concat + DepthToSpace."""
    rng = np.random.default_rng(0)
    model = _deconv_model(rng, cin=5, cout=3, h=6, w=9, bn=bn, relu=relu)  # not square, odd sizes
    x = rng.standard_normal((2, 5, 6, 9)).astype(np.float32)
    (expected,) = _run(model, x)

    assert fold_batchnorm_into_deconvs(model) == int(bn)
    assert deconvs_to_phase_convs(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 4 and "ConvTranspose" not in ops and "BatchNormalization" not in ops
    assert ops[-2:] == (["Concat", "DepthToSpace"] if relu else ["DepthToSpace", "Identity"])
    if relu:  # moved onto each phase conv, where ONNX Runtime fuses it
        assert ops.count("Relu") == 4
    (got,) = _run(model, x)
    assert got.shape == expected.shape and np.max(np.abs(got - expected)) < 1e-5
    assert not {"w", "b", "g", "beta", "mean", "var"} & {t.name for t in model.graph.initializer}, "old weights removed"


def test_other_deconvs_are_left_alone():
    rng = np.random.default_rng(1)
    arrays = {"w": rng.standard_normal((4, 4, 3, 3))}
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", kernel_shape=[3, 3], strides=[2, 2])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 11, 11])], arrays)
    assert deconvs_to_phase_convs(model) == 0
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"]


def test_optimize_for_cpu_counts_what_it_did():
    rng = np.random.default_rng(4)
    model = _deconv_model(rng, cin=4, cout=4, h=5, w=5, bn=True, relu=True)
    assert optimize_for_cpu(model) == {"batchnorms_folded": 1, "deconvs_as_phase_convs": 1}
    assert optimize_for_cpu(model) == {"batchnorms_folded": 0, "deconvs_as_phase_convs": 0}
