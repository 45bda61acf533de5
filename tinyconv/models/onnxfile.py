"""ONNX files -> tinyconv networks, without PyTorch or onnxruntime.

``load_onnx(path)`` reads the protobuf with the ``onnx`` package (the extra
``tinyconv[onnx]``) and imports a graph that is a *chain* of what tinyconv
computes:

    Conv                  group 1, dilation 1; explicit (symmetric or not) pads, auto_pad
    Relu, MaxPool         MaxPool with pads, strides, ceil_mode
    AveragePool           count_include_pad 0 (ONNX's default) or 1 (PyTorch's)
    GlobalAveragePool
    Flatten, Reshape      to (N, -1) only
    Gemm, MatMul + Add    dense layers (transA = 0)
    BatchNormalization,   per-channel affine maps: folded into the conv or dense
    Mul/Add/Sub/Div       layer next to them where that is exact, else a
      by constants        ``ChannelAffine`` layer
    Dropout, Identity     dropped
    Transpose             at the input (NHWC -> NCHW: the network takes NCHW and
                          ``meta["input_layout"]`` records "NHWC") and before a
                          flatten (absorbed by permuting the next dense layer's
                          input columns)
    Softmax, LogSoftmax   as the last node only: stripped, recorded in
                          ``meta["output_activation"]``; ``forward`` returns the
                          scores S_c before it, as the paper's methods need

Subgraphs of constants (e.g. tf2onnx's flatten, Shape -> Gather -> Cast ->
Slice -> Concat -> Cast -> Reshape) are evaluated here, the batch size kept
symbolic. Anything else (an unknown op, an attribute value tinyconv does not
implement, a branch or skip connection, a second graph input) raises one
``WeightsError`` that lists every offending node, never a network that
computes something else.

Layer names come from the node names: PyTorch's ``/features/features.0/Conv``
gives ``features.0``; tf2onnx's ``functional_1/block1_conv1_1/BiasAdd`` gives
``block1_conv1`` (the model scope and Keras's ``_1`` scope suffix dropped);
a ReLU or padding that shares its scope gets ``_relu`` / ``_pad`` appended.

External-data tensors are read only from files inside the model's folder
(no absolute paths, no ``..``), their sizes checked before reading.
Padding that depends on the input size (``auto_pad`` SAME with stride > 1)
is computed for the graph's static input size.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..engine.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    AvgPool2dExcludePad,
    ChannelAffine,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    Pad2d,
    ReLU,
    ceil_extra,
)
from ..engine.network import Sequential
from ..errors import WeightsError

__all__ = ["load_onnx", "loads_onnx"]

#: The largest ONNX file ``load_onnx`` reads into memory (protobuf's own limit is 2 GiB).
MAX_BYTES = 2**31 - 1

# ops that only move constants around: evaluated here, never layers
CONST_OPS = {
    "Constant",
    "Identity",
    "Cast",
    "Shape",
    "Gather",
    "Slice",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Neg",
    "Sqrt",
    "Reciprocal",
    "Transpose",
}
# ops that become (part of) a layer when they act on the image's data path
DATA_OPS = {
    "Conv",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
    "Dropout",
    "Identity",
    "Transpose",
    "Softmax",
    "LogSoftmax",
    "Squeeze",
}
# the attributes each data op may carry (anything else is refused by name)
ATTRIBUTES = {
    "Conv": {"dilations", "group", "kernel_shape", "pads", "strides", "auto_pad"},
    "MaxPool": {"kernel_shape", "strides", "pads", "ceil_mode", "dilations", "storage_order", "auto_pad"},
    "AveragePool": {
        "kernel_shape",
        "strides",
        "pads",
        "ceil_mode",
        "count_include_pad",
        "auto_pad",
        "dilations",
    },
    "Gemm": {"alpha", "beta", "transA", "transB"},
    "BatchNormalization": {"epsilon", "momentum", "training_mode", "spatial"},
    "Dropout": {"ratio", "seed", "is_test"},
    "Flatten": {"axis"},
    "Reshape": {"allowzero"},
    "Transpose": {"perm"},
    "Softmax": {"axis"},
    "LogSoftmax": {"axis"},
    "Squeeze": {"axes"},
}


class _Symbol:
    """A dimension not known when importing: the batch size, or a free size."""

    def __init__(self, label):
        self.label = label

    def __repr__(self):
        return self.label


BATCH = _Symbol("N")


class _Problems(list):
    def node(self, node, why):
        self.append(f"node {node.name or '(unnamed)'!r} ({node.op_type}): {why}")


class _Affine:
    """A per-channel map y = scale·x + shift waiting to be folded (float64)."""

    def __init__(self, name, scale, shift):
        self.name, self.scale, self.shift = name, scale, shift


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError:
        raise WeightsError(
            "reading ONNX files needs the 'onnx' package: pip install 'tinyconv[onnx]' (or onnx==1.23.2)"
        ) from None
    return onnx


# ----------------------------------------------------------------------------
# the file and its tensors


def _parse(data: bytes, where: str):
    onnx = _onnx()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # google.protobuf DecodeError and friends: a damaged file
        raise WeightsError(f"{where} is not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    if not model.HasField("graph") or not len(model.graph.node):
        raise WeightsError(f"{where} is not an ONNX model: it holds no graph nodes")
    return model


def _np_dtype(data_type: int, what: str):
    onnx = _onnx()
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except Exception:
        raise WeightsError(f"{what} has an unknown element type {data_type}") from None
    if dtype.kind not in "fiub":
        raise WeightsError(f"{what} has element type {dtype}, not a number")
    return dtype


def _external_bytes(tensor, folder: Path | None, where: str, nbytes: int) -> bytes:
    """The bytes of an external-data tensor, read only from inside ``folder``."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    name = f"{where}: tensor {tensor.name!r}"
    location = info.get("location", "")
    if folder is None:
        raise WeightsError(f"{name} keeps its data in an external file, which needs a model file path")
    rel = Path(location)
    if not location or rel.is_absolute() or os.path.isabs(location) or ".." in rel.parts or "\\" in location:
        raise WeightsError(
            f"{name}: external data location {location!r} must be a plain path inside the model's folder"
        )
    root = folder.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        raise WeightsError(f"{name}: external data location {location!r} leads outside the model's folder")
    if not target.is_file():
        raise WeightsError(f"{name}: external data file {location!r} not found next to the model")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else nbytes
    except ValueError:
        raise WeightsError(f"{name}: external data offset/length are not integers") from None
    if offset < 0 or length != nbytes:
        raise WeightsError(
            f"{name}: external data offset {offset} / length {length} do not fit its {nbytes} bytes"
        )
    size = target.stat().st_size
    if offset + nbytes > size:
        raise WeightsError(
            f"{name}: external data needs bytes {offset}..{offset + nbytes} of {location!r}, "
            f"which holds {size}"
        )
    with open(target, "rb") as f:
        f.seek(offset)
        return f.read(nbytes)


def _tensor(tensor, folder, where: str) -> np.ndarray:
    """A TensorProto as a NumPy array, with every size checked first."""
    onnx = _onnx()
    from onnx import numpy_helper

    what = f"{where}: tensor {tensor.name!r}"
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise WeightsError(f"{what} has negative dimensions {dims}")
    dtype = _np_dtype(tensor.data_type, what)
    count = int(np.prod(dims, dtype=object)) if dims else 1
    nbytes = count * dtype.itemsize
    if nbytes > MAX_BYTES:
        raise WeightsError(f"{what} claims {nbytes} bytes, more than an ONNX file can hold")
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raw = _external_bytes(tensor, folder, where, nbytes)
        inline = onnx.TensorProto()
        inline.CopyFrom(tensor)
        del inline.external_data[:]
        inline.data_location = onnx.TensorProto.DEFAULT
        inline.raw_data = raw
        tensor = inline
    elif tensor.HasField("raw_data") and len(tensor.raw_data) != nbytes:
        raise WeightsError(f"{what} holds {len(tensor.raw_data)} bytes, its shape {dims} needs {nbytes}")
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as exc:
        raise WeightsError(f"{what} cannot be decoded ({type(exc).__name__}: {exc})") from None
    if array.shape != tuple(dims):
        raise WeightsError(f"{what} holds {array.size} values, its shape {dims} needs {count}")
    return np.array(array)


# ----------------------------------------------------------------------------
# evaluating constant subgraphs (with a symbolic batch size)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ints(value):
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _evaluate(node, args, attrs, opset, folder, where):
    """Outputs of a node whose inputs are all known (arrays; object arrays
    may hold the symbolic batch size). Raises TypeError/ValueError when the
    values do not allow it."""
    op = node.op_type
    if op == "Constant":
        return [_constant(attrs, folder, where)]
    if op not in _CONST_EVAL:
        raise ValueError("not a constant op")
    return [_CONST_EVAL[op](op, args, attrs, opset)]


def _constant(attrs, folder, where):
    if "value" in attrs:
        return _tensor(attrs["value"], folder, where)
    for key, kind in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype=kind)
    raise ValueError(f"attributes {sorted(attrs)} are not supported")


# Each handler below: (op, args, attrs, opset) -> the node's one output.


def _const_identity(op, args, attrs, opset):
    return args[0]


def _const_cast(op, args, attrs, opset):
    target = _np_dtype(attrs["to"], "Cast")
    a = args[0]
    return a if a.dtype == object else a.astype(target)


def _const_gather(op, args, attrs, opset):
    taken = np.take(args[0], args[1].astype(np.int64), axis=int(attrs.get("axis", 0)))
    return np.asarray(taken, dtype=args[0].dtype)


def _const_slice(op, args, attrs, opset):
    data = args[0]
    if opset < 10:  # starts, ends and axes were attributes before opset 10
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        index[ax % data.ndim] = slice(s, e, st)
    return data[tuple(index)]


def _const_concat(op, args, attrs, opset):
    arrays = [np.atleast_1d(a) for a in args]
    kind = object if any(a.dtype == object for a in arrays) else None
    return np.concatenate([a.astype(kind) if kind else a for a in arrays], axis=int(attrs["axis"]))


def _const_squeeze(op, args, attrs, opset):
    """Squeeze and Unsqueeze (axes an input from opset 13 on)."""
    axes = (
        attrs.get("axes")
        if opset < 13 or "axes" in attrs
        else (_ints(args[1]) if len(args) > 1 and args[1] is not None else None)
    )
    a = args[0]
    if op == "Squeeze":
        return np.squeeze(a) if axes is None else np.squeeze(a, axis=tuple(ax % a.ndim for ax in axes))
    rank = a.ndim + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        a = np.expand_dims(a, ax)
    return a


def _const_reshape(op, args, attrs, opset):
    shape = _ints(args[1])
    keep = not attrs.get("allowzero")
    shape = [args[0].shape[i] if v == 0 and keep else v for i, v in enumerate(shape)]
    return args[0].reshape(shape)


def _const_transpose(op, args, attrs, opset):
    return np.transpose(args[0], attrs.get("perm"))


def _const_binary(op, args, attrs, opset):
    """Mul, Add, Sub, Div (floor division // on integers)."""
    if any(a.dtype == object for a in args):
        raise TypeError("arithmetic on the batch size")
    a, b = args
    out = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract}.get(op)
    if out is not None:
        return out(a, b).astype(np.result_type(a, b))
    return (a // b) if a.dtype.kind in "iu" else (a / b).astype(a.dtype)


def _const_unary(op, args, attrs, opset):
    a = args[0]
    if a.dtype == object:
        raise TypeError("arithmetic on the batch size")
    return {"Neg": np.negative, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal}[op](a)


# the constant ops _evaluate folds, besides Constant (Shape is read off the walk's shapes instead)
_CONST_EVAL = {
    "Identity": _const_identity,
    "Cast": _const_cast,
    "Gather": _const_gather,
    "Slice": _const_slice,
    "Concat": _const_concat,
    "Unsqueeze": _const_squeeze,
    "Squeeze": _const_squeeze,
    "Reshape": _const_reshape,
    "Transpose": _const_transpose,
    "Mul": _const_binary,
    "Add": _const_binary,
    "Sub": _const_binary,
    "Div": _const_binary,
    "Neg": _const_unary,
    "Sqrt": _const_unary,
    "Reciprocal": _const_unary,
}


# ----------------------------------------------------------------------------
# layer names


def _scopes(nodes) -> list[str]:
    """One short scope name per node (see the module docstring)."""
    names = [n.name or f"{n.op_type.lower()}_{i}" for i, n in enumerate(nodes)]
    torch_style = sum(name.startswith("/") for name in names) > len(names) // 2
    scopes = []
    if torch_style:
        for name, node in zip(names, nodes, strict=True):
            parts = [p for p in name.split("/") if p]
            scopes.append(parts[-2] if len(parts) >= 2 else (parts[0] if parts else node.op_type.lower()))
        return scopes
    split = [name.split("/") for name in names]
    multi = [s for s in split if len(s) > 1]
    common = multi[0][0] if multi and all(s[0] == multi[0][0] for s in multi) else None
    for parts in split:
        if common is not None and len(parts) > 1 and parts[0] == common:
            parts = parts[1:]
        scopes.append(parts[0])
    # tf2onnx of Keras 3 names each layer's scope "<layer>_1" (or "_2" when taken)
    suffixed = [s for s, p in zip(scopes, split, strict=True) if len(p) > 1]
    if suffixed and all(re.search(r"_\d+$", s) for s in suffixed):
        stripped = {s: re.sub(r"_\d+$", "", s) for s in set(suffixed)}
        if len(set(stripped.values())) == len(stripped):
            scopes = [stripped.get(s, s) for s in scopes]
    return scopes


class _Namer:
    def __init__(self):
        self.used = set()

    def __call__(self, scope, kind):
        name = scope if scope not in self.used else f"{scope}_{kind}"
        base, k = name, 2
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


# ----------------------------------------------------------------------------
# the importer


def _same_pads(size, kernel, stride, upper):
    total = max(0, (-(-size // stride) - 1) * stride + kernel - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def load_onnx(path, dtype=None) -> Sequential:
    """Import the ONNX file at ``path`` as a ``Sequential`` (see the module docstring).

    dtype: cast the parameters (default: the file's float type; float16 becomes float32).
    Raises a WeightsError naming every node that tinyconv cannot import.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such ONNX file: {path}")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise WeightsError(f"{path} is {size} bytes, larger than an ONNX protobuf can be (2 GiB)")
    net = _guarded_import(_parse(path.read_bytes(), str(path)), str(path), path.parent, dtype)
    from .native import sha256

    net.meta.update({"source": path.name, "source_sha256": sha256(path)})
    return net


def loads_onnx(data: bytes, dtype=None) -> Sequential:
    """``load_onnx`` from bytes in memory (external data is then refused)."""
    return _guarded_import(_parse(bytes(data), "ONNX bytes"), "ONNX bytes", None, dtype)


def _guarded_import(model, where, folder, dtype):
    """``_import``, with a damaged graph's odd values (an attribute of the wrong
    type, a missing input) reported as a WeightsError rather than a traceback."""
    try:
        return _import(model, where, folder, dtype)
    except WeightsError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise WeightsError(f"{where}: malformed ONNX graph ({type(exc).__name__}: {exc})") from None


def _static_problems(node, op, attrs, opset) -> list[str]:
    """What is wrong with a data-path node's op and attributes alone."""
    if op not in DATA_OPS:
        return ["operator is not supported"]
    unknown = sorted(set(attrs) - ATTRIBUTES.get(op, set()))
    if unknown:
        return [f"attribute(s) {', '.join(unknown)} not supported"]
    bad = []
    if op == "Conv" and int(attrs.get("group", 1)) != 1:
        bad.append(f"group={attrs['group']} (only 1 is supported)")
    if op in ("Conv", "MaxPool", "AveragePool") and any(int(d) != 1 for d in attrs.get("dilations", [])):
        bad.append(f"dilations={list(attrs['dilations'])} (only 1 is supported)")
    if op == "MaxPool" and int(attrs.get("storage_order", 0)) != 0:
        bad.append("storage_order=1 is not supported")
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        bad.append(f"auto_pad={auto} is not supported")
    if op == "BatchNormalization" and (attrs.get("training_mode", 0) or attrs.get("spatial", 1) != 1):
        bad.append("training_mode=1 / spatial=0 are not supported")
    if op == "Gemm" and int(attrs.get("transA", 0)):
        bad.append("transA=1 (transposes the batch) is not supported")
    if op in ("Softmax", "LogSoftmax") and int(attrs.get("axis", -1 if opset >= 13 else 1)) not in (-1, 1):
        bad.append(f"axis={attrs['axis']}: only the class axis of (N, K) scores")
    if op == "Flatten" and int(attrs.get("axis", 1)) != 1:
        bad.append(f"axis={attrs['axis']}: only a flatten to (N, -1) (axis 1) is supported")
    if op == "Reshape" and int(attrs.get("allowzero", 0)):
        bad.append("allowzero=1 is not supported")
    return bad


def _import(model, where, folder, dtype):
    """The ``Sequential`` the graph computes, or one WeightsError listing every refused part."""
    graph = model.graph
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    problems = _Problems()
    consts = _initializers(graph, folder, where, problems)
    image, outputs = _image_input(graph, consts, problems)
    nodes = list(graph.node)
    data, consumers = _image_path(nodes, image, problems)
    meta = {
        "format": "onnx",
        "onnx_producer": f"{model.producer_name} {model.producer_version}".strip(),
        "onnx_opset": opset,
        "onnx_graph": graph.name,
        "onnx_input": image[0] if image else None,
        "onnx_output": outputs[0] if outputs else None,
        "input_layout": "NCHW",
        "output_activation": None,
    }
    ctx = _Context(_start_state(image), consts, problems, _Namer(), [])
    walk = _Walk(ctx, meta, opset, folder, where, data, consumers, outputs)
    walk.run(nodes)
    walk.finish()
    if problems:
        listing = "; ".join(problems)
        raise WeightsError(f"{where}: cannot import {len(problems)} part(s) of the graph: {listing}")
    return _network(ctx.items, dtype, image, meta, where)


def _initializers(graph, folder, where, problems) -> dict[str, np.ndarray]:
    consts: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        consts[init.name] = _tensor(init, folder, where)
    for sparse in graph.sparse_initializer:
        problems.append(f"sparse initializer {sparse.values.name!r} is not supported")
    return consts


def _image_input(graph, consts, problems):
    """(name, [N, d1, d2, d3]) of the one image input (None when there is none), and the output names."""
    inputs = [i for i in graph.input if i.name not in consts]
    image = None
    for inp in inputs:
        ttype = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim] if ttype else []
        if image is None and ttype is not None and len(dims) == 4 and ttype.elem_type in (1, 10, 11):
            image = (inp.name, dims)
        else:
            problems.append(
                f"graph input {inp.name!r} is not the image (one float (N, C, H, W) or (N, H, W, C) tensor)"
            )
    if image is None and not problems:
        problems.append("the graph has no image input")
    outputs = [o.name for o in graph.output]
    if len(outputs) != 1:
        problems.append(f"the graph has {len(outputs)} outputs ({', '.join(outputs)}); tinyconv needs one")
    return image, outputs


def _image_path(nodes, image, problems):
    """The tensors that depend on the image, and the nodes consuming each;
    refuses branches, skip connections and foreign operator domains."""
    data = {image[0]} if image else set()
    consumers: dict[str, list] = {}
    for node in nodes:
        ins = [i for i in node.input if i]
        if any(i in data for i in ins) and node.op_type != "Shape":
            for i in ins:
                if i in data:
                    consumers.setdefault(i, []).append(node)
            data.update(o for o in node.output if o)
    for name, users in consumers.items():
        if len(users) > 1:
            for user in users:
                problems.node(user, f"tensor {name!r} feeds {len(users)} nodes (a branch or skip connection)")
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            problems.node(node, f"operator domain {node.domain!r} is not supported")
        if sum(i in data for i in node.input if i) > 1:
            problems.node(node, "joins two paths of the image (a skip connection)")
    return data, consumers


def _start_state(image) -> dict:
    """The data path's state at the image input (shape without the batch, in ONNX's layout)."""
    state = {
        "layout": "INPUT",
        "shape": None,
        "perm": None,
        "last": image[0] if image else None,
        "batch": image[1][0] if image else None,
    }
    if image:
        state["shape"] = tuple(v if v else _Symbol("?") for v in image[1][1:])
    return state


class _Walk:
    """One pass over the nodes in graph order: constants are evaluated, nodes on
    the image's path become layers (``_data_node``), and every refusal is
    recorded; after a problem on the data path (``dead``) it checks the rest and
    builds nothing."""

    def __init__(self, ctx, meta, opset, folder, where, data, consumers, outputs):
        self.ctx, self.meta, self.opset, self.folder, self.where = ctx, meta, opset, folder, where
        self.data, self.consumers, self.outputs = data, consumers, outputs
        self.consts, self.problems, self.state = ctx.consts, ctx.problems, ctx.state
        self.onnx_shapes: dict[str, tuple] = {}  # data tensor -> its shape in ONNX's layout, BATCH first
        if self.state["last"] is not None:
            self.onnx_shapes[self.state["last"]] = (BATCH, *self.state["shape"])
        self.dead = bool(self.problems)
        self.softmax_node = None  # a Softmax/LogSoftmax seen: no node may follow it
        self.failed: set[str] = set()  # constant outputs that could not be evaluated

    def run(self, nodes):
        for node, scope in zip(nodes, _scopes(nodes), strict=True):
            ins, attrs = list(node.input), _attrs(node)
            if node.op_type == "Shape":
                self.shape_of(node, ins, attrs)
            elif not any(i in self.data for i in ins if i):
                self.constant(node, ins, attrs)
            else:
                self.on_path(node, scope, ins, attrs)

    def shape_of(self, node, ins, attrs):
        """Shape of a data tensor (the batch size symbolic) or of a constant."""
        if ins and ins[0] in self.onnx_shapes:
            shape = np.array(self.onnx_shapes[ins[0]], dtype=object)
            self.consts[node.output[0]] = shape[attrs.get("start", 0) : attrs.get("end", None)]
        elif ins and ins[0] in self.consts:
            self.consts[node.output[0]] = np.array(self.consts[ins[0]].shape, dtype=np.int64)
        elif not self.dead:
            self.problems.node(node, "takes the shape of a tensor whose shape is unknown here")

    def constant(self, node, ins, attrs):
        """A node off the image's path: evaluated now, its outputs become constants."""
        if any(i in self.failed for i in ins):  # fed by a node already reported
            self.failed.update(node.output)
            return
        self.failed.update(node.output)  # until evaluated below
        if node.op_type not in CONST_OPS:
            self.problems.node(node, "operator is not supported on constants (only shape arithmetic folds)")
            return
        args = [self.consts.get(i) if i else None for i in ins]
        if any(a is None for a, i in zip(args, ins, strict=True) if i):
            if not self.dead:
                self.problems.node(node, "an input is neither a constant nor the image path")
            return
        try:
            outs = _evaluate(node, args, attrs, self.opset, self.folder, self.where)
        except WeightsError:
            raise
        except Exception as exc:
            self.problems.node(node, f"cannot be evaluated on its constants ({type(exc).__name__}: {exc})")
            return
        for name, value in zip(node.output, outs, strict=False):
            self.consts[name] = value
            self.failed.discard(name)

    def on_path(self, node, scope, ins, attrs):
        """A node on the image's path: checked, then built into layers."""
        op, out, state, ctx = node.op_type, node.output[0], self.state, self.ctx
        if self.softmax_node is not None:
            self.problems.node(self.softmax_node, "Softmax/LogSoftmax is supported only as the last node")
            self.softmax_node, self.dead = None, True
        static = _static_problems(node, op, attrs, self.opset)
        used = [o for o in node.output[1:] if o and (o in self.consumers or o in self.outputs)]
        if used:
            static.append(f"output(s) {', '.join(used)} are used; tinyconv keeps only the first")
        for why in static:
            self.problems.node(node, why)
        if static or self.dead:
            self.dead = True
            state["last"] = out
            return
        ctx.node, ctx.scope = node, scope
        ok = _data_node(ctx, op, ins, attrs, self.opset)
        if ok == "softmax":  # stripped: forward returns the scores before it
            self.softmax_node = node
            self.meta["output_activation"] = op
        elif ok == "input_transpose":
            self.meta["input_layout"] = "NHWC"
        elif not ok:
            self.dead = True
        state["last"] = out
        self.onnx_shapes[out] = (BATCH, *ctx.onnx_shape) if ctx.onnx_shape is not None else (BATCH,)

    def finish(self):
        """What only the whole walk shows (checked when nothing was refused on the way)."""
        if self.dead:
            return
        state, outputs = self.state, self.outputs
        if outputs and state["last"] != outputs[0]:
            self.problems.append(f"the graph output {outputs[0]!r} is not the end of the image's path")
        if not self.ctx.items:
            self.problems.append("no node of the graph acts on the image: there is nothing to import")
        if state["perm"] is not None:
            self.problems.append(
                "a Transpose before the flatten must be followed by a dense layer (Gemm/MatMul)"
            )


def _network(items, dtype, image, meta, where) -> Sequential:
    """The layers (affine maps folded) in one float dtype, as a ``Sequential``."""
    layers = _fold(items)
    float_types = [p.dtype for _, lay in layers for p in lay.params.values() if p.dtype != np.float64]
    target = (
        np.dtype(dtype)
        if dtype is not None
        else (np.result_type(*float_types) if float_types else _net_dtype(layers))
    )
    if target.itemsize < 4:
        target = np.dtype(np.float32)
    for _, layer in layers:
        layer.astype(target)
        layer.grads = {k: np.zeros(v.shape, v.dtype) for k, v in layer.params.items()}
    in_shape = None
    if image and all(isinstance(v, int) and v > 0 for v in image[1][1:]):
        dims = image[1][1:]
        in_shape = (dims[2], dims[0], dims[1]) if meta["input_layout"] == "NHWC" else tuple(dims)
    try:
        return Sequential(layers, input_shape=in_shape, meta=meta)
    except Exception as exc:
        raise WeightsError(f"{where}: the imported layers do not form a network ({exc})") from None


def _net_dtype(layers):
    """float64 when every weight of the file was float64 (folding works in float64)."""
    kinds = {p.dtype for _, lay in layers if isinstance(lay, (Conv2d, Linear)) for p in lay.params.values()}
    return np.dtype(np.float64) if kinds == {np.dtype(np.float64)} else np.dtype(np.float32)


class _Context:
    """What the per-op builders share: the walk's state and where layers go."""

    def __init__(self, state, consts, problems, namer, items):
        self.state, self.consts, self.problems, self.namer, self.items = state, consts, problems, namer, items
        self.node = self.scope = None
        self.onnx_shape = None

    def const(self, name):
        return self.consts.get(name) if name else None

    def refuse(self, why):
        self.problems.node(self.node, why)
        return False

    def known(self):
        s = self.state["shape"]
        return s is not None and all(isinstance(v, int) for v in s)

    def add(self, kind, layer):
        self.items.append((self.namer(self.scope, kind), layer))
        s = self.state["shape"]
        if s is None:
            return layer
        if self.known():
            try:
                self.state["shape"] = layer.output_shape(s)
            except Exception as exc:
                self.state["shape"] = None
                return self.refuse(f"does not fit its input of shape {s} ({exc})")
        elif len(s) == 3:
            self.state["shape"] = (getattr(layer, "out_channels", s[0]), _Symbol("?"), _Symbol("?"))
        return layer

    def affine(self, scale, shift):
        s = self.state["shape"]
        channels = s[0] if s is not None else None
        c = max(scale.size, shift.size)
        if channels is None:
            return self.refuse("per-channel constants on a tensor of unknown channel count")
        if c not in (1, channels):
            return self.refuse(f"has {c} per-channel constants for {channels} channels")
        scale = np.broadcast_to(scale.reshape(-1), (channels,)).astype(np.float64)
        shift = np.broadcast_to(shift.reshape(-1), (channels,)).astype(np.float64)
        if self.state["perm"] is not None:  # features in (h, w, c) order: bring them to (c, h, w)
            scale, shift = scale[self.state["perm"]], shift[self.state["perm"]]
        self.items.append(_Affine(self.namer(self.scope, "affine"), scale, shift))
        return True

    def per_channel(self, value):
        """A constant that broadcasts per channel on the current tensor, flat; else None."""
        v = np.asarray(value)
        if v.dtype.kind not in "fiu":
            return None
        rank = 4 if self.state["layout"] == "NCHW" else 2
        if self.state["layout"] not in ("NCHW", "2D") or v.ndim > rank:
            return None
        full = (1,) * (rank - v.ndim) + v.shape
        if full[0] != 1 or any(d != 1 for d in full[2:]):
            return None
        return v.reshape(-1)


def _data_node(ctx, op, ins, attrs, opset):
    """Turn one data-path node into layers: True, or "softmax" / "input_transpose"
    for the walk to record in meta; False after a refusal."""
    state = ctx.state
    ctx.onnx_shape = None
    if state["layout"] == "INPUT":
        if op == "Transpose" and list(attrs.get("perm", [])) == [0, 3, 1, 2]:
            return _input_transpose(ctx)
        state["layout"] = "NCHW"
    layout = state["layout"]
    if op == "Transpose":
        return _transpose(ctx, attrs)
    if op in ("Dropout", "Identity"):
        return _pass_through(ctx, op, ins)
    if op in ("Softmax", "LogSoftmax"):
        if layout != "2D":
            return ctx.refuse(f"on a {layout} tensor: only on the (N, K) class scores")
        return "softmax"
    if layout == "NHWC" and op not in ("Flatten", "Reshape"):
        return ctx.refuse("after an NCHW->NHWC Transpose only a flatten is supported")
    if op == "Relu":
        ctx.add("relu", ReLU())
        ctx.onnx_shape = _layout_shape(state)
        return True
    if op == "Conv":
        return _conv(ctx, ins, attrs)
    if op in ("MaxPool", "AveragePool"):
        return _pool(ctx, op, attrs)
    if op == "GlobalAveragePool":
        return _global_pool(ctx)
    if op in ("Flatten", "Reshape", "Squeeze"):
        return _flatten(ctx, op, ins, attrs)
    if op in ("Gemm", "MatMul"):
        return _dense(ctx, op, ins, attrs)
    if op == "BatchNormalization":
        return _batch_norm(ctx, ins, attrs)
    if op in ("Mul", "Add", "Sub", "Div"):
        return _arithmetic(ctx, op, ins)
    return ctx.refuse("operator is not supported here")


def _input_transpose(ctx):
    """NHWC -> NCHW at the input: the network takes NCHW, no layer."""
    state = ctx.state
    h, w, c = state["shape"]
    state["shape"], state["layout"] = (c, h, w), "NCHW"
    ctx.onnx_shape = state["shape"]
    return "input_transpose"


def _transpose(ctx, attrs):
    """NCHW -> NHWC before a flatten: recorded, the dense layer after it absorbs it."""
    state = ctx.state
    perm = list(attrs.get("perm", []))
    if state["layout"] == "NCHW" and perm == [0, 2, 3, 1]:
        state["layout"] = "NHWC"
        ctx.onnx_shape = _layout_shape(state)
        return True
    return ctx.refuse(
        f"perm {perm} is supported only as NHWC->NCHW at the input or NCHW->NHWC before a flatten"
    )


def _pass_through(ctx, op, ins):
    """Dropout in inference mode, Identity: dropped."""
    mode = ctx.const(ins[2]) if op == "Dropout" and len(ins) > 2 else None
    if mode is not None and bool(np.asarray(mode).reshape(-1)[0]):
        return ctx.refuse("training_mode=1 (a random network) is not supported")
    if op == "Dropout" and len(ins) > 2 and ins[2] and mode is None:
        return ctx.refuse("its training_mode input is not a constant")
    ctx.onnx_shape = _layout_shape(ctx.state)
    return True


def _global_pool(ctx):
    if ctx.state["layout"] != "NCHW":
        return ctx.refuse("needs an (N, C, H, W) input")
    ctx.add("pool", AdaptiveAvgPool2d(1))
    ctx.onnx_shape = ctx.state["shape"]
    return True


def _batch_norm(ctx, ins, attrs):
    """y = γ (x - μ) / sqrt(σ² + ε) + β: a per-channel affine map."""
    values = [ctx.const(i) for i in ins[1:5]]
    if len(values) != 4 or any(v is None for v in values):
        return ctx.refuse("scale, bias, mean and variance must be constants")
    gamma, beta, mean, var = (np.asarray(v, np.float64).reshape(-1) for v in values)
    scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    ctx.onnx_shape = _layout_shape(ctx.state)
    return ctx.affine(scale, beta - mean * scale)


def _arithmetic(ctx, op, ins):
    """Mul/Add/Sub/Div of the data path by a per-channel constant: an affine map."""
    data_first = ins[0] == ctx.state["last"]
    other = ctx.const(ins[1] if data_first else ins[0])
    vec = ctx.per_channel(other) if other is not None else None
    if vec is None:
        return ctx.refuse("only a constant that is per-channel (or a scalar) is supported")
    vec = vec.astype(np.float64)
    one, zero = np.ones(1), np.zeros(1)
    if op == "Mul":
        scale, shift = vec, zero
    elif op == "Add":
        scale, shift = one, vec
    elif op == "Sub":
        scale, shift = (one, -vec) if data_first else (-one, vec)
    elif data_first:
        scale, shift = 1.0 / vec, zero
    else:
        return ctx.refuse("a constant divided by the image path is not affine")
    ctx.onnx_shape = _layout_shape(ctx.state)
    return ctx.affine(scale, shift)


def _layout_shape(state):
    s = state["shape"]
    if s is None:
        return None
    if state["layout"] == "NHWC" and len(s) == 3:
        return (s[1], s[2], s[0])
    return s


def _pads_of(ctx, attrs, kernel, stride):
    """(top, bottom, left, right) from pads or auto_pad; None after a refusal."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("NOTSET", ""):
        pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4 or min(pads) < 0:
            ctx.refuse(f"pads {pads}: only four non-negative values (2-D) are supported")
            return None
        top, left, bottom, right = pads  # ONNX: begins of each axis, then ends
        return top, bottom, left, right
    if auto == "VALID":
        return 0, 0, 0, 0
    upper = auto == "SAME_UPPER"
    if stride == (1, 1):
        return (*_same_pads(kernel[0], kernel[0], 1, upper), *_same_pads(kernel[1], kernel[1], 1, upper))
    if not ctx.known():
        ctx.refuse(f"auto_pad={auto} with stride {stride} needs a static input size")
        return None
    _, h, w = ctx.state["shape"]
    return (*_same_pads(h, kernel[0], stride[0], upper), *_same_pads(w, kernel[1], stride[1], upper))


def _conv(ctx, ins, attrs):
    weight = ctx.const(ins[1]) if len(ins) > 1 else None
    bias = ctx.const(ins[2]) if len(ins) > 2 and ins[2] else None
    if ctx.state["layout"] != "NCHW":
        return ctx.refuse("needs an (N, C, H, W) input")
    if weight is None or weight.ndim != 4:
        return ctx.refuse("its weight must be a constant (F, C, kh, kw) array (2-D convolution)")
    if len(ins) > 2 and ins[2] and bias is None:
        return ctx.refuse("its bias is not a constant")
    f, c, kh, kw = weight.shape
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != [kh, kw]:
        return ctx.refuse(f"kernel_shape {list(attrs['kernel_shape'])} differs from weight {weight.shape}")
    stride = tuple(int(s) for s in attrs.get("strides", [1, 1]))
    pads = _pads_of(ctx, attrs, (kh, kw), stride)
    if pads is None:
        return False
    top, bottom, left, right = pads
    padding = (top, left)
    if (top, left) != (bottom, right):  # asymmetric: an explicit zero padding first
        ctx.add("pad", Pad2d(pads, 0.0))
        padding = (0, 0)
    conv = Conv2d(c, f, (kh, kw), stride=stride, padding=padding, bias=bias is not None)
    conv.params["weight"] = np.array(weight)
    if bias is not None:
        if bias.size != f:
            return ctx.refuse(f"bias of {bias.size} values for {f} filters")
        conv.params["bias"] = np.array(bias).reshape(f)
    ctx.add("conv", conv)
    ctx.onnx_shape = ctx.state["shape"]
    return True


def _pool(ctx, op, attrs):
    state = ctx.state
    kernel = tuple(int(k) for k in attrs.get("kernel_shape", []))
    if len(kernel) != 2:
        return ctx.refuse(f"kernel_shape {list(kernel)}: only 2-D pooling is supported")
    if state["layout"] != "NCHW":
        return ctx.refuse("needs an (N, C, H, W) input")
    stride = tuple(int(s) for s in attrs.get("strides", [1, 1]))
    pads = _pads_of(ctx, attrs, kernel, stride)
    if pads is None:
        return False
    top, bottom, left, right = pads
    if max(top, bottom) >= kernel[0] or max(left, right) >= kernel[1]:
        return ctx.refuse(f"pads {list(pads)} must be smaller than the kernel {list(kernel)}")
    ceil = int(attrs.get("ceil_mode", 0))
    symmetric = (top, left) == (bottom, right) and 2 * top <= kernel[0] and 2 * left <= kernel[1]
    if op == "AveragePool":
        include = int(attrs.get("count_include_pad", 0))
        if ceil:
            if not ctx.known():
                return ctx.refuse("ceil_mode=1 on an input of unknown size is not supported")
            _, h, w = state["shape"]
            if ceil_extra(h, kernel[0], stride[0], top, bottom) or ceil_extra(
                w, kernel[1], stride[1], left, right
            ):
                return ctx.refuse("ceil_mode=1 that changes the output size is not supported for AveragePool")
        if not any(pads) or (include and symmetric):
            ctx.add("pool", AvgPool2d(kernel, stride, padding=(top, left)))
        elif include:
            ctx.add("pad", Pad2d(pads, 0.0))
            ctx.add("pool", AvgPool2d(kernel, stride, padding=0))
        else:
            ctx.add("pool", AvgPool2dExcludePad(kernel, stride, pads))
    elif not ceil and symmetric:
        ctx.add("pool", MaxPool2d(kernel, stride, padding=(top, left)))
    else:  # asymmetric pads or ceil mode: pad with -inf (never a maximum) first
        ctx.add("pad", Pad2d(pads, -np.inf, ceil_window=(*kernel, *stride) if ceil else None))
        ctx.add("pool", MaxPool2d(kernel, stride, padding=0))
    ctx.onnx_shape = state["shape"]
    return True


def _flatten(ctx, op, ins, attrs):
    state = ctx.state
    layout, shape = state["layout"], state["shape"]
    features = int(np.prod(shape)) if ctx.known() else None
    target = None
    if op == "Reshape":
        target = ctx.const(ins[1]) if len(ins) > 1 else None
        if target is None:
            return ctx.refuse("its target shape is not a constant")
        target = list(np.asarray(target, dtype=object).reshape(-1))
    if layout == "2D":
        ok = op == "Flatten" or (
            op == "Reshape"
            and len(target) == 2
            and (target[0] is BATCH or target[0] in (0, -1, state["batch"]))
            and (target[1] == -1 or target[1] == features)
            and not (target[0] == -1 and target[1] == -1)
        )
        if not ok:
            return ctx.refuse("reshapes (N, F) features into another shape")
        ctx.onnx_shape = shape
        return True
    if op == "Squeeze":
        axes = attrs.get("axes")
        if axes is None and len(ins) > 1:
            axes = ctx.const(ins[1])
            axes = None if axes is None else _ints(axes)
        spatial_ones = shape is not None and tuple(shape[1:]) == (1, 1)
        if axes is None or sorted(a % 4 for a in axes) != [2, 3] or not spatial_ones:
            return ctx.refuse("only squeezing the 1x1 spatial axes of (N, C, 1, 1) is supported")
    elif op == "Reshape":
        batch = state["batch"]

        def is_batch(v):
            return v is BATCH or v == 0 or (batch is not None and v == batch) or (v == -1 and features)

        def is_rest(v):
            return v is not BATCH and (v == -1 or (features is not None and v == features))

        if not (
            len(target) == 2
            and is_batch(target[0])
            and is_rest(target[1])
            and not (target[0] == -1 and target[1] == -1)
        ):
            return ctx.refuse(f"target shape {target}: only a flatten to (N, -1) is supported")
    if layout == "NHWC":
        if not ctx.known():
            return ctx.refuse("a flatten of NHWC features needs a static input size")
        c, h, w = shape
        # position k of tinyconv's (c, h, w) order holds feature perm[k] of the (h, w, c) order
        state["perm"] = np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
    ctx.add("flatten", Flatten())
    state["layout"] = "2D"
    state["shape"] = (features,) if features else None
    ctx.onnx_shape = state["shape"]
    return True


def _dense(ctx, op, ins, attrs):
    state = ctx.state
    if state["layout"] != "2D":
        return ctx.refuse("a dense layer needs (N, F) features: flatten first")
    if ins[0] != state["last"]:
        return ctx.refuse("the image path must be the first (A) input")
    b = ctx.const(ins[1]) if len(ins) > 1 else None
    c = ctx.const(ins[2]) if len(ins) > 2 and ins[2] else None
    if b is None or b.ndim != 2 or b.dtype.kind != "f":
        return ctx.refuse("its weight must be a constant float matrix")
    if len(ins) > 2 and ins[2] and c is None:
        return ctx.refuse("its bias (C) must be a constant")
    weight = np.asarray(b, np.float64)
    weight = weight if int(attrs.get("transB", 0)) else weight.T  # -> (out, in)
    weight = weight * float(attrs.get("alpha", 1.0))
    out_f, in_f = weight.shape
    bias = None
    if c is not None:
        cv = np.asarray(c, np.float64) * float(attrs.get("beta", 1.0))
        if cv.ndim > 2 or cv.size not in (1, out_f) or (cv.ndim == 2 and cv.shape[0] != 1):
            return ctx.refuse(f"bias of shape {c.shape} is not one per output ((K,) or (1, K))")
        bias = np.broadcast_to(cv.reshape(-1), (out_f,)).copy()
    shape = state["shape"]
    if shape is not None and shape != (in_f,):
        return ctx.refuse(f"its weight takes {in_f} features, its input has {shape[0]}")
    if state["perm"] is not None:
        weight = weight[:, state["perm"]]
        state["perm"] = None
    linear = Linear(in_f, out_f, bias=bias is not None)
    linear.params["weight"] = weight.astype(b.dtype)
    if bias is not None:
        linear.params["bias"] = bias.astype(b.dtype)
    state["shape"] = (in_f,)
    ctx.add("dense", linear)
    ctx.onnx_shape = state["shape"]
    return True


# ----------------------------------------------------------------------------
# folding the per-channel affine maps


def _fold(items) -> list:
    """Merge consecutive affine maps, fold each into the conv/dense layer next
    to it where that is exact, and keep the rest as ChannelAffine layers.

    Exact folds: into the layer *before* (a conv or dense layer, directly):
    W' = a·W, b' = a·b + s; into a dense layer *after*: W' = W·diag(a),
    b' = b + W s; into a conv after with no padding: the same per input
    channel (with padding the zero border would become s, so not there).
    """
    merged: list = []
    for item in items:
        if isinstance(item, _Affine) and merged and isinstance(merged[-1], _Affine):
            prev = merged[-1]  # y = a2 (a1 x + s1) + s2
            merged[-1] = _Affine(prev.name, item.scale * prev.scale, item.scale * prev.shift + item.shift)
        else:
            merged.append(item)
    out: list = []
    i = 0
    while i < len(merged):
        item = merged[i]
        if not isinstance(item, _Affine):
            out.append(item)
            i += 1
            continue
        before = out[-1][1] if out else None
        after = merged[i + 1][1] if i + 1 < len(merged) and not isinstance(merged[i + 1], _Affine) else None
        a, s = item.scale, item.shift
        if isinstance(before, (Conv2d, Linear)):
            w = before.params["weight"]
            view = (-1,) + (1,) * (w.ndim - 1)
            before.params["weight"] = (w.astype(np.float64) * a.reshape(view)).astype(w.dtype)
            b = before.params.get("bias")
            b64 = np.zeros(a.shape) if b is None else b.astype(np.float64)
            _set_bias(before, (a * b64 + s).astype(w.dtype))
        elif isinstance(after, Linear) or (isinstance(after, Conv2d) and after.padding == (0, 0)):
            w = after.params["weight"]
            w64 = w.astype(np.float64)
            b = after.params.get("bias")
            b64 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
            if isinstance(after, Linear):
                after.params["weight"] = (w64 * a[None, :]).astype(w.dtype)
                _set_bias(after, (b64 + w64 @ s).astype(w.dtype))
            else:
                after.params["weight"] = (w64 * a[None, :, None, None]).astype(w.dtype)
                _set_bias(after, (b64 + np.einsum("fcij,c->f", w64, s)).astype(w.dtype))
        else:  # the final cast gives it the network's dtype
            out.append((item.name, ChannelAffine(a.size, a.copy(), s.copy())))
        i += 1
    return out


def _set_bias(layer, bias):
    layer.params["bias"] = bias  # a conv/dense layer built without a bias gains one
