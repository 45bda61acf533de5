"""Native .npz weight files: round trip, validation, damaged files, fuzzing."""

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyconv as tc
from tinyconv.engine.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)
from tinyconv.errors import TinyconvError, WeightsError
from tinyconv.models import native as tio


def small_net(seed=0):
    """Every layer type, (3, 12, 12) -> 4 classes."""
    return tc.Sequential(
        [
            ("conv", Conv2d(3, 5, 3, stride=1, padding=1, seed=seed)),
            ("relu", ReLU(rule="guided")),
            ("pool", MaxPool2d(2)),
            ("avg", AvgPool2d(3, stride=1, padding=1)),
            ("conv2", Conv2d(5, 6, (3, 1), stride=(1, 2), padding=(0, 1), bias=False, seed=seed + 1)),
            ("adapt", AdaptiveAvgPool2d((2, 3))),
            ("flatten", Flatten()),
            ("drop", Dropout(0.25)),
            ("fc", Linear(36, 4, seed=seed + 2)),
        ],
        classes=["a", "b", "c", "d"],
        mean=(0.1, 0.2, 0.3),
        std=(0.5, 0.6, 0.7),
        input_shape=(3, 12, 12),
        meta={"source": "unit test", "licence": "MIT", "nested": {"epochs": 3, "loss": [1.5, 0.5]}},
    )


def npz_entries(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def write_entries(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)


def spec_bytes(spec):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8))
    return buf.getvalue()


def read_spec(path):
    with np.load(path, allow_pickle=False) as f:
        return json.loads(f[tio.SPEC_KEY].tobytes())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_keeps_everything(tmp_path, rng, dtype):
    net = small_net().astype(dtype)
    path = tmp_path / "net.npz"
    net.save(path)
    back = tc.load(path)
    assert [layer.name for layer in back] == [layer.name for layer in net]
    assert [layer.spec() for layer in back] == [layer.spec() for layer in net]
    for p, q in zip(net.parameters(), back.parameters(), strict=True):
        assert p.name == q.name and q.value.dtype == dtype
        np.testing.assert_array_equal(p.value, q.value)
        assert q.grad.shape == q.value.shape and not q.grad.any()
    assert back.classes == net.classes and back.mean == net.mean and back.std == net.std
    assert back.input_shape == net.input_shape and back.meta == net.meta
    x = rng.standard_normal((2, 3, 12, 12)).astype(dtype)
    np.testing.assert_array_equal(back.forward(x), net.forward(x))
    assert back[1].rule == "guided" and back["drop"].p == 0.25


def test_save_is_byte_reproducible(tmp_path):
    small_net().save(tmp_path / "a.npz")
    small_net().save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert not list(tmp_path.glob("*.part"))


def test_spec_records_format_and_shapes(tmp_path):
    small_net().save(tmp_path / "n.npz")
    spec = read_spec(tmp_path / "n.npz")
    assert spec["format"] == "tinyconv" and spec["format_version"] == tio.FORMAT_VERSION
    conv = spec["layers"][0]
    assert conv["name"] == "conv" and conv["params"]["weight"]["shape"] == [5, 3, 3, 3]


def test_missing_array_is_named(tmp_path):
    path = tmp_path / "n.npz"
    small_net().save(path)
    entries = npz_entries(path)
    del entries["conv2.weight.npy"]
    write_entries(path, entries)
    with pytest.raises(WeightsError, match=r"'conv2\.weight' is missing"):
        tc.load(path)


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "n.npz"
    small_net().save(path)
    spec = read_spec(path)
    spec["format_version"] = 99
    entries = npz_entries(path)
    entries[tio.SPEC_KEY + ".npy"] = spec_bytes(spec)
    write_entries(path, entries)
    with pytest.raises(WeightsError, match="format version 99"):
        tc.load(path)


@pytest.mark.parametrize(
    "array, message",
    [
        (
            np.zeros((5, 3, 2, 3), np.float32),
            r"'conv\.weight' has shape \(5, 3, 2, 3\).*needs \(5, 3, 3, 3\)",
        ),
        (np.zeros((5, 3, 3, 3), np.int32), r"'conv\.weight' has dtype int32"),
        (np.full((5, 3, 3, 3), np.nan, np.float32), r"'conv\.weight' contains NaN"),
    ],
)
def test_bad_array_is_named(tmp_path, array, message):
    path = tmp_path / "n.npz"
    small_net().save(path)
    entries = npz_entries(path)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    entries["conv.weight.npy"] = buf.getvalue()
    write_entries(path, entries)
    with pytest.raises(WeightsError, match=message):
        tc.load(path)


def test_spec_that_disagrees_with_arrays_is_refused(tmp_path):
    path = tmp_path / "n.npz"
    small_net().save(path)
    spec = read_spec(path)
    spec["layers"][-1]["spec"]["in_features"] = 10**9  # would be a 16 GB init: refused before building
    entries = npz_entries(path)
    entries[tio.SPEC_KEY + ".npy"] = spec_bytes(spec)
    write_entries(path, entries)
    with pytest.raises(WeightsError, match=r"'fc\.weight' has shape \(4, 36\).*needs \(4, 1000000000\)"):
        tc.load(path)


def test_extra_array_is_refused(tmp_path):
    path = tmp_path / "n.npz"
    small_net().save(path)
    entries = npz_entries(path)
    entries["stray.npy"] = entries["fc.bias.npy"]
    write_entries(path, entries)
    with pytest.raises(WeightsError, match="stray"):
        tc.load(path)


def test_pickled_object_array_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "n.npz"
    small_net().save(path)
    entries = npz_entries(path)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([Evil()], dtype=object), allow_pickle=True)
    entries["conv.weight.npy"] = buf.getvalue()
    write_entries(path, entries)
    with pytest.raises(WeightsError, match="conv.weight"):
        tc.load(path)
    assert not marker.exists()


def test_other_files_are_refused(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "single.npy", np.zeros(3))
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    small_net().save(tmp_path / "ok.npz")
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    cases = {
        "empty.npz": "cannot be read",
        "text.npz": "cannot be read",
        "single.npy": "single array",
        "foreign.npz": "not a tinyconv weights file",
        "cut.npz": "cannot be read",
    }
    for name, message in cases.items():
        with pytest.raises(WeightsError, match=message):
            tc.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        tc.load(tmp_path / "absent.npz")


def test_bundled_finds_the_mnist_network(tmp_path, monkeypatch):
    path = tio.bundled("mnist_cnn.npz")
    net = tc.load(path)
    assert net.input_shape == (1, 28, 28) and net.classes == [str(d) for d in range(10)]
    assert net.meta["licence"] == "MIT" and len(net.meta["source_sha256"]) == 64
    with pytest.raises(WeightsError, match="no_such.npz"):
        tio.bundled("no_such.npz")
    small_net().save(tmp_path / "mine.npz")
    monkeypatch.setenv(tio.WEIGHTS_ENV, str(tmp_path))
    assert tio.bundled("mine.npz") == tmp_path / "mine.npz"


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "n.npz"
    small_net().save(path)
    return path.read_bytes()


#: a byte edit: (region, position within it, new value); the JSON spec sits at the
#: start of the file and the zip directory at the end, so both get most edits
EDITS = st.tuples(
    st.sampled_from(["head", "tail", "any"]), st.floats(0, 1, exclude_max=True), st.integers(0, 255)
)


def mutate(valid: bytes, edits, cut) -> bytes:
    """``valid`` with single-byte edits applied, then cut to a fraction of its length."""
    data = bytearray(valid)
    for region, where, value in edits:
        span = {"head": (0, min(3000, len(data))), "tail": (max(0, len(data) - 1500), len(data))}.get(
            region, (0, len(data))
        )
        data[span[0] + int(where * (span[1] - span[0]))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    return bytes(data)


@given(edits=st.lists(EDITS, min_size=1, max_size=6), cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzzed_native_files_load_or_fail_cleanly(valid_bytes, tmp_path_factory, edits, cut):
    path = tmp_path_factory.mktemp("fz") / "m.npz"
    path.write_bytes(mutate(valid_bytes, edits, cut))
    try:
        net = tc.load(path)
    except TinyconvError:
        return
    assert isinstance(net, tc.Sequential)


JSON_CHARS = st.sampled_from(list('0123456789-.,:[]{}"ae '))


@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), JSON_CHARS), min_size=1, max_size=4))
def test_fuzzed_descriptions_load_or_fail_cleanly(valid_bytes, tmp_path_factory, edits):
    """Edits inside the JSON description, re-packed into a valid zip (so no CRC catches them)."""
    folder = tmp_path_factory.mktemp("fj")
    (folder / "ok.npz").write_bytes(valid_bytes)
    entries = npz_entries(folder / "ok.npz")
    with np.load(folder / "ok.npz") as f:
        text = bytearray(f[tio.SPEC_KEY].tobytes())
    for where, char in edits:
        text[int(where * len(text))] = ord(char)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(bytes(text), dtype=np.uint8))
    entries[tio.SPEC_KEY + ".npy"] = buf.getvalue()
    write_entries(folder / "m.npz", entries)
    try:
        net = tc.load(folder / "m.npz")
    except TinyconvError:
        return
    assert isinstance(net, tc.Sequential)


# ----------------------------------------------------------------------------
# the reader reads the archive itself (issue 13): deflated and Fortran-order arrays still load,
# headers are compared before data, saves are atomic


def test_deflated_and_fortran_order_arrays_load_exactly(tmp_path):
    net = small_net()
    net.save(tmp_path / "n.npz")
    entries = npz_entries(tmp_path / "n.npz")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asfortranarray(net["conv"].params["weight"]))
    entries["conv.weight.npy"] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "d.npz", "w", zipfile.ZIP_DEFLATED) as z:  # as np.savez_compressed
        for name, data in entries.items():
            z.writestr(name, data)
    back = tc.load(tmp_path / "d.npz")
    for p, q in zip(net.parameters(), back.parameters(), strict=True):
        np.testing.assert_array_equal(p.value, q.value)
        assert q.value.flags.c_contiguous
    assert tc.load(tmp_path / "d.npz")["fc"].params["bias"].shape == (4,)


def test_header_is_compared_before_the_data_is_read(tmp_path, monkeypatch):
    """A header that disagrees with the description is refused without reading its data."""
    path = tmp_path / "n.npz"
    small_net().save(path)
    entries = npz_entries(path)
    entries["fc.bias.npy"] = np.lib.format.magic(1, 0) + entries["fc.bias.npy"][8:].replace(b"(4,)", b"(9,)")
    write_entries(path, entries)
    reads = []
    original = tio._NpzArchive.read

    def spy(self, key, check=None):
        reads.append(key)
        return original(self, key, check)

    monkeypatch.setattr(tio._NpzArchive, "read", spy)
    with pytest.raises(WeightsError, match=r"'fc\.bias' has shape \(9,\).*needs \(4,\)"):
        tc.load(path)
    assert reads[-1] == "fc.bias"


def test_foreign_files_never_suggest_allow_pickle(tmp_path):
    import pickle

    (tmp_path / "p.npz").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "i.npz").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (tmp_path / "s.npz").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)
    for name in ("p.npz", "i.npz", "s.npz"):
        with pytest.raises(WeightsError) as info:
            tc.load(tmp_path / name)
        assert "allow_pickle" not in str(info.value) and name in str(info.value)


def test_save_writes_a_fresh_temporary_and_leaves_none(tmp_path):
    (tmp_path / "n.npz.part").write_text("a stale temporary of an old version")
    small_net().save(tmp_path / "n.npz")
    small_net(seed=1).save(tmp_path / "n.npz")  # replaces the first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.npz", "n.npz.part"]
    assert (tmp_path / "n.npz.part").read_text().startswith("a stale")
    back = tc.load(tmp_path / "n.npz")
    np.testing.assert_array_equal(back["fc"].params["weight"], small_net(seed=1)["fc"].params["weight"])
