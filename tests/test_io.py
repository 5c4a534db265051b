"""Tests for lowrank_blocks.io: round trips of every format, then bad inputs."""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowrank_blocks.io import SUPPORTED_SUFFIXES, read_matrices, read_matrix

IO_PY = Path(__file__).resolve().parents[1] / "lowrank_blocks" / "io.py"


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]],
                      *, header_extra: dict | None = None) -> None:
    """Write a .safetensors file by hand: {name: (dtype, shape, raw bytes)}."""
    header: dict = dict(header_extra or {})
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def to_bf16_bytes(values: np.ndarray) -> bytes:
    """bfloat16 bytes of float32 values whose low 16 bits are zero."""
    bits = np.asarray(values, dtype="<f4").view("<u4")
    assert not np.any(bits & 0xFFFF), "values must be exactly representable in bf16"
    return (bits >> 16).astype("<u2").tobytes()


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------


def test_npy_round_trip(tmp_path):
    a = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "weights.npy", a)
    out = read_matrices(tmp_path / "weights.npy")
    assert list(out) == ["weights"]
    np.testing.assert_array_equal(out["weights"], a)
    np.testing.assert_array_equal(read_matrix(str(tmp_path / "weights.npy")), a)


def test_npy_suffix_case_insensitive_and_key_is_stem(tmp_path):
    a = np.eye(3, dtype=np.float32)
    np.save(tmp_path / "W.npy", a)
    (tmp_path / "W.npy").rename(tmp_path / "W.NPY")
    out = read_matrix(tmp_path / "W.NPY", key="W")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, a)


def test_npy_integer_dtype_kept_and_fortran_order(tmp_path):
    a = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    np.save(tmp_path / "i.npy", a)
    out = read_matrix(tmp_path / "i.npy")
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, a)


def test_npy_big_endian_converted_to_native(tmp_path):
    a = np.arange(6.0).reshape(2, 3).astype(">f8")
    np.save(tmp_path / "be.npy", a)
    out = read_matrix(tmp_path / "be.npy")
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_npz_round_trip_skips_non_2d_in_file_order(tmp_path):
    arrays = {"z": np.ones((2, 2)), "bias": np.zeros(3), "a": np.arange(6).reshape(2, 3),
              "cube": np.zeros((2, 2, 2))}
    np.savez(tmp_path / "m.npz", **arrays)
    out = read_matrices(tmp_path / "m.npz")
    assert list(out) == ["z", "a"]
    np.testing.assert_array_equal(out["z"], arrays["z"])
    np.testing.assert_array_equal(out["a"], arrays["a"])
    assert out["a"].dtype == arrays["a"].dtype


def test_npz_compressed_key_and_pattern(tmp_path):
    np.savez_compressed(tmp_path / "m.npz", **{"l1.weight": np.eye(2), "l1.bias": np.ones((1, 2)),
                                               "l2.weight": np.eye(3)})
    weights = read_matrices(tmp_path / "m.npz", pattern="*.weight")
    assert list(weights) == ["l1.weight", "l2.weight"]
    only = read_matrices(tmp_path / "m.npz", key="l1.bias")
    assert list(only) == ["l1.bias"]
    np.testing.assert_array_equal(read_matrix(tmp_path / "m.npz", key="l2.weight"), np.eye(3))
    assert read_matrices(tmp_path / "m.npz", pattern="nothing*") == {}


def test_safetensors_round_trip_pattern_and_3d_skip(tmp_path):
    from safetensors.numpy import save_file

    tensors = {
        "encoder.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "encoder.bias": np.ones(3, dtype=np.float32),
        "conv.weight": np.zeros((2, 2, 2), dtype=np.float32),
        "head.weight": np.arange(4, dtype=np.float64).reshape(2, 2),
        "emb": np.arange(8, dtype=np.int64).reshape(4, 2),
        "half": np.linspace(0, 1, 6, dtype=np.float16).reshape(3, 2),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))

    out = read_matrices(path)
    assert set(out) == {"encoder.weight", "head.weight", "emb", "half"}
    for name, value in out.items():
        np.testing.assert_array_equal(value, tensors[name])
        assert value.dtype == tensors[name].dtype
        assert value.flags.writeable

    weights = read_matrices(path, pattern="*.weight")
    assert set(weights) == {"encoder.weight", "head.weight"}  # 3-D conv.weight skipped
    np.testing.assert_array_equal(read_matrix(path, key="emb"), tensors["emb"])


def test_safetensors_file_order_is_data_order(tmp_path):
    path = tmp_path / "o.safetensors"
    write_safetensors(path, {
        "b": ("F32", [1, 1], np.float32([[1]]).tobytes()),
        "a": ("F32", [1, 1], np.float32([[2]]).tobytes()),
    })
    assert list(read_matrices(path)) == ["b", "a"]


def test_safetensors_bf16_written_by_hand(tmp_path):
    values = np.array([[1.0, -2.5, 0.15625], [3.0e38, -0.0, 2.0**-130]], dtype=np.float32)
    values = (values.view("<u4") & 0xFFFF0000).view("<f4")  # make exactly bf16
    path = tmp_path / "bf.safetensors"
    write_safetensors(path, {
        "w.weight": ("BF16", [2, 3], to_bf16_bytes(values)),
        "w.bias": ("BF16", [3], to_bf16_bytes(values[0])),
        "f.weight": ("F32", [1, 2], np.float32([[7, 8]]).tobytes()),
    }, header_extra={"__metadata__": {"format": "pt"}})

    out = read_matrices(path)
    assert list(out) == ["w.weight", "f.weight"]
    assert out["w.weight"].dtype == np.float32
    np.testing.assert_array_equal(out["w.weight"], values)
    assert np.signbit(out["w.weight"][1, 1])  # -0.0 survives
    np.testing.assert_array_equal(out["f.weight"], [[7, 8]])


def test_safetensors_bf16_special_values(tmp_path):
    values = np.array([[np.inf, -np.inf, np.nan, 1.0]], dtype=np.float32)
    path = tmp_path / "special.safetensors"
    write_safetensors(path, {"x": ("BF16", [1, 4], to_bf16_bytes(values))})
    np.testing.assert_array_equal(read_matrix(path), values)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=24), st.integers(1, 4))
def test_safetensors_bf16_matches_bit_definition(tmp_path_factory, bits, rows):
    bits = bits[: len(bits) // rows * rows] or bits[:1]
    rows = rows if len(bits) % rows == 0 else 1
    raw = np.array(bits, dtype="<u2")
    path = tmp_path_factory.mktemp("bf") / "h.safetensors"
    write_safetensors(path, {"t": ("BF16", [rows, len(bits) // rows], raw.tobytes())})
    expected = (raw.astype("<u4") << 16).view("<f4").reshape(rows, -1)
    got = read_matrix(path)
    np.testing.assert_array_equal(got.view("<u4"), expected.view("<u4"))  # bit exact


def test_image_png_grayscale_float(tmp_path):
    from PIL import Image

    gray = (np.arange(12).reshape(3, 4) * 20).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "pic.png")
    out = read_matrices(tmp_path / "pic.png")
    assert list(out) == ["pic"]
    assert out["pic"].dtype == np.float64 and out["pic"].shape == (3, 4)
    np.testing.assert_array_equal(out["pic"], gray.astype(np.float64))


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".gif", ".tif", ".TIFF", ".jpg", ".jpeg"])
def test_image_formats_rgb_to_gray(tmp_path, suffix):
    from PIL import Image

    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[2:, :, 1] = 100
    path = tmp_path / f"img{suffix}"
    Image.fromarray(rgb).save(path, format=Image.registered_extensions()[suffix.lower()])
    out = read_matrix(path)
    assert out.shape == (5, 7) and out.dtype == np.float64
    assert 0 <= out.min() and out.max() <= 255
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)
    tolerance = 3 if suffix in (".jpg", ".jpeg") else 0  # JPEG is lossy
    np.testing.assert_allclose(out, expected, atol=tolerance)


def test_mat_round_trip(tmp_path):
    import scipy.io
    import scipy.sparse

    path = tmp_path / "data.mat"
    scipy.io.savemat(path, {
        "A": np.arange(6.0).reshape(2, 3),
        "ints": np.arange(4, dtype=np.int32).reshape(2, 2),
        "label": "hello",
        "cell": np.array([[1, "a"]], dtype=object),
        "st": {"field": 1},
        "S": scipy.sparse.eye(3, format="csc"),
    })
    out = read_matrices(path)
    assert list(out) == ["A", "ints", "S"]
    np.testing.assert_array_equal(out["A"], np.arange(6.0).reshape(2, 3))
    assert out["ints"].dtype == np.int32
    np.testing.assert_array_equal(out["S"], np.eye(3))
    np.testing.assert_array_equal(read_matrix(path, key="A"), out["A"])
    assert list(read_matrices(path, pattern="[AS]")) == ["A", "S"]
    with pytest.raises(TypeError, match="'cell'.*not a numeric matrix"):
        read_matrices(path, key="cell")


def test_mat_vectors_are_2d(tmp_path):
    import scipy.io

    scipy.io.savemat(tmp_path / "v.mat", {"v": np.arange(3.0)})
    assert read_matrix(tmp_path / "v.mat").shape == (1, 3)


@pytest.mark.parametrize("suffix,delimiter", [(".csv", ","), (".txt", " ")])
def test_text_round_trip(tmp_path, suffix, delimiter):
    a = np.array([[1.5, -2.0, 3.0], [4.0, 5.25, 6.0]])
    path = tmp_path / f"table{suffix}"
    np.savetxt(path, a, delimiter=delimiter)
    out = read_matrices(path)
    assert list(out) == ["table"]
    np.testing.assert_array_equal(out["table"], a)
    assert out["table"].dtype == np.float64


def test_text_single_row_and_column(tmp_path):
    (tmp_path / "row.csv").write_text("1,2,3\n")
    (tmp_path / "col.txt").write_text("# comment\n1\n2\n3\n")
    assert read_matrix(tmp_path / "row.csv").shape == (1, 3)
    assert read_matrix(tmp_path / "col.txt").shape == (3, 1)


# ---------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npy"
    with pytest.raises(FileNotFoundError, match="nope.npy") as info:
        read_matrices(path)
    assert info.value.filename == str(path)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        read_matrix(path)


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(IsADirectoryError):
        read_matrices(tmp_path / "d.npy")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"unsupported file suffix '\.h5'.*\.npy.*\.safetensors"):
        read_matrices(path)
    assert ".png" in SUPPORTED_SUFFIXES and ".tiff" in SUPPORTED_SUFFIXES


def test_key_and_pattern_are_exclusive(tmp_path):
    np.savez(tmp_path / "m.npz", a=np.eye(2))
    with pytest.raises(ValueError, match="mutually exclusive"):
        read_matrices(tmp_path / "m.npz", key="a", pattern="*")


class _Payload:
    """Unpickling this object creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_npy_refused_and_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    np.save(path, np.array([_Payload(marker), 1], dtype=object), allow_pickle=True)

    with pytest.raises(ValueError, match="pickled/object arrays are refused"):
        read_matrices(path)
    with pytest.raises(ValueError, match="pickled"):
        read_matrix(path)
    assert not marker.exists()

    # the payload is live: numpy with allow_pickle=True would have run it
    np.load(path, allow_pickle=True)
    assert marker.exists()


def test_object_npz_refused_and_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    evil = np.empty((1, 1), dtype=object)
    evil[0, 0] = _Payload(marker)
    np.savez(path, good=np.eye(2), evil=evil)
    with pytest.raises(ValueError, match="'evil'.*pickled/object arrays are refused"):
        read_matrices(path)
    with pytest.raises(ValueError, match="pickled"):
        read_matrix(path, key="evil")
    assert not marker.exists()
    np.testing.assert_array_equal(read_matrix(path, key="good"), np.eye(2))  # not touched
    assert not marker.exists()


def test_raw_pickle_named_npy_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="is a pickle.*refused"):
        read_matrices(path)
    assert not marker.exists()


def test_truncated_npy(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.arange(100.0).reshape(10, 10))
    data = path.read_bytes()
    path.write_bytes(data[:-50])
    with pytest.raises(ValueError, match="t.npy.*truncated"):
        read_matrices(path)
    path.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(ValueError, match="t.npy"):
        read_matrices(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="t.npy.*not an .npy array"):
        read_matrices(path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_npz(tmp_path, keep):
    path = tmp_path / "t.npz"
    np.savez(path, a=np.arange(200.0).reshape(10, 20), b=np.eye(4))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="t.npz"):
        read_matrices(path)


def test_npz_that_is_not_a_zip(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="x.npz.*not an .npz"):
        read_matrices(path)


def test_truncated_safetensors(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "t.safetensors"
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"t.safetensors.*\[0, 64\).*only 54 bytes"):
        read_matrices(path)
    path.write_bytes(data[:20])  # inside the JSON header
    with pytest.raises(ValueError, match="t.safetensors.*header length"):
        read_matrices(path)
    path.write_bytes(data[:5])
    with pytest.raises(ValueError, match="t.safetensors.*8-byte"):
        read_matrices(path)


def test_safetensors_header_claims_more_bytes_than_file(tmp_path):
    path = tmp_path / "liar.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000],
                               "data_offsets": [0, 4_000_000]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 16)
    with pytest.raises(ValueError, match=r"liar.safetensors.*'w'.*only 16 bytes"):
        read_matrices(path)


def test_safetensors_header_length_beyond_file(tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(ValueError, match="big.safetensors.*header length 10000 exceeds"):
        read_matrices(path)


@pytest.mark.parametrize("header,match", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"w": {"dtype": "F32"}}', "lacks dtype/shape/data_offsets"),
    (b'{"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 0]}}', "invalid shape"),
    (b'{"w": {"dtype": "F32", "shape": [1, 1], "data_offsets": [4, 0]}}', "invalid data_offsets"),
    (b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 4]}}', "needs 16 bytes"),
    (b'{"w": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},'
     b' "w": {"dtype": "F32", "shape": [1, 1], "data_offsets": [4, 8]}}', "duplicate"),
    (b'{"a": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},'
     b' "b": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}', "gap or overlap"),
    (b'{"a": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}', "cover 4 bytes"),
])
def test_safetensors_corrupt_header(tmp_path, header, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)
    with pytest.raises(ValueError, match=match):
        read_matrices(path)


def test_safetensors_unsupported_dtypes(tmp_path):
    path = tmp_path / "d.safetensors"
    write_safetensors(path, {
        "mask": ("BOOL", [2, 2], b"\x01\x00\x00\x01"),
        "w": ("F32", [1, 1], np.float32([[1]]).tobytes()),
        "fp8": ("F8_E4M3", [1, 2], b"\x00\x01"),
    })
    with pytest.raises(TypeError, match="'mask'.*BOOL.*boolean"):
        read_matrices(path)
    with pytest.raises(TypeError, match="'fp8'.*8-bit float"):
        read_matrices(path, key="fp8")
    np.testing.assert_array_equal(read_matrices(path, pattern="w")["w"], [[1]])


def test_truncated_png(tmp_path):
    from PIL import Image

    path = tmp_path / "t.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 40, 3):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="t.png"):
            read_matrices(path)


def test_image_decoded_only_by_suffix_format(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "x.bmp")
    (tmp_path / "x.bmp").rename(tmp_path / "x.png")  # a BMP disguised as PNG
    with pytest.raises(ValueError, match="PNG image.*x.png"):
        read_matrix(tmp_path / "x.png")


def test_corrupt_mat(tmp_path):
    import scipy.io

    path = tmp_path / "c.mat"
    scipy.io.savemat(path, {"A": np.arange(100.0).reshape(10, 10)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="c.mat"):
        read_matrices(path)
    path.write_bytes(b"garbage" * 3)
    with pytest.raises(ValueError, match="c.mat"):
        read_matrices(path)


@pytest.mark.parametrize("content", ["1,2\n3\n", "a,b\n1,2\n", ""])
def test_bad_text(tmp_path, content):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad.csv"):
        read_matrices(path)


@pytest.mark.parametrize("shape", [(2, 3, 4), (5,), ()])
def test_wrong_dimensions_npy(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape))
    pattern = rf"'x'.*{shape!r}.*".replace("(", r"\(").replace(")", r"\)") + "2-D"
    with pytest.raises(ValueError, match=pattern):
        read_matrices(tmp_path / "x.npy")
    with pytest.raises(ValueError, match="2-D matrix is required"):
        read_matrix(tmp_path / "x.npy")


def test_explicit_key_naming_3d_array_is_error(tmp_path):
    np.savez(tmp_path / "m.npz", cube=np.zeros((2, 2, 2)), w=np.eye(2))
    assert list(read_matrices(tmp_path / "m.npz")) == ["w"]
    with pytest.raises(ValueError, match=r"'cube'.*\(2, 2, 2\).*2-D"):
        read_matrices(tmp_path / "m.npz", key="cube")


def test_missing_key_lists_available(tmp_path):
    np.savez(tmp_path / "m.npz", alpha=np.eye(2), beta=np.eye(3))
    with pytest.raises(KeyError, match="'gamma'.*available: 'alpha', 'beta'"):
        read_matrices(tmp_path / "m.npz", key="gamma")
    with pytest.raises(ValueError, match="'gamma'.*'alpha', 'beta'"):  # also a ValueError
        read_matrix(tmp_path / "m.npz", key="gamma")


def test_missing_key_safetensors_and_mat(tmp_path):
    import scipy.io
    from safetensors.numpy import save_file

    save_file({"x.weight": np.eye(2, dtype=np.float32)}, str(tmp_path / "s.safetensors"))
    with pytest.raises(KeyError, match="available: 'x.weight'"):
        read_matrix(tmp_path / "s.safetensors", key="y")
    scipy.io.savemat(tmp_path / "m.mat", {"M": np.eye(2), "N": np.eye(3)})
    with pytest.raises(KeyError, match="available: 'M', 'N'"):
        read_matrix(tmp_path / "m.mat", key="Q")


def test_read_matrix_several_or_none(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.eye(2), b=np.eye(2))
    with pytest.raises(ValueError, match="2 matrices.*'a', 'b'.*key"):
        read_matrix(tmp_path / "two.npz")
    np.savez(tmp_path / "none.npz", v=np.ones(3))
    assert read_matrices(tmp_path / "none.npz") == {}
    with pytest.raises(ValueError, match="no 2-D matrix"):
        read_matrix(tmp_path / "none.npz")


@pytest.mark.parametrize("value,match", [
    (np.ones((2, 2), dtype=complex), "complex"),
    (np.ones((2, 2), dtype=bool), "boolean"),
    (np.array([["a", "b"]]), "string"),
    (np.zeros((2, 2), dtype="datetime64[s]"), "datetime"),
    (np.zeros((2, 2), dtype=[("x", "f8")]), "structured"),
])
def test_unsupported_dtypes_npy(tmp_path, value, match):
    np.save(tmp_path / "x.npy", value)
    with pytest.raises(TypeError, match=match):
        read_matrices(tmp_path / "x.npy")


def test_complex_in_npz_and_mat(tmp_path):
    import scipy.io

    np.savez(tmp_path / "c.npz", w=np.ones((2, 2)), z=np.ones((2, 2), dtype=np.complex64))
    with pytest.raises(TypeError, match="'z'.*complex"):
        read_matrices(tmp_path / "c.npz")
    assert list(read_matrices(tmp_path / "c.npz", pattern="w")) == ["w"]
    scipy.io.savemat(tmp_path / "c.mat", {"z": np.ones((2, 2)) * 1j})
    with pytest.raises(TypeError, match="complex"):
        read_matrices(tmp_path / "c.mat")


def test_missing_optional_dependency_message(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    save_file({"w": np.eye(2, dtype=np.float32)}, str(tmp_path / "s.safetensors"))
    (tmp_path / "pic.png").write_bytes(b"")  # content irrelevant: the import fails first
    import scipy.io

    scipy.io.savemat(tmp_path / "m.mat", {"M": np.eye(2)})
    for module, file, pip_name in [
        ("safetensors", "s.safetensors", "safetensors"),
        ("PIL", "pic.png", "pillow"),
        ("scipy.io", "m.mat", "scipy"),
    ]:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # makes `import module` fail
            if module == "PIL":
                patch.setitem(sys.modules, "PIL.Image", None)
            with pytest.raises(ImportError, match=f"pip install {pip_name}"):
                read_matrices(tmp_path / file)


def test_module_imports_only_numpy_and_stdlib():
    # The package's __init__ is bypassed (an empty stand-in): only io and what it imports
    # (_limits, _validate: numpy and the standard library) are loaded.
    code = (
        "import importlib, sys, types\n"
        "package = types.ModuleType('lowrank_blocks')\n"
        f"package.__path__ = [{str(IO_PY.parent)!r}]\n"
        "sys.modules['lowrank_blocks'] = package\n"
        "importlib.import_module('lowrank_blocks.io')\n"
        "print(sorted(m for m in ('scipy', 'PIL', 'safetensors', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_corrupted_npz_member(tmp_path, save):
    path = tmp_path / "f.npz"
    save(path, a=np.random.default_rng(0).random((50, 50)))
    data = bytearray(path.read_bytes())
    for i in range(200, 400):  # flip bytes inside the member's data
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="f.npz.*corrupt"):
        read_matrices(path)


def test_mat_logical_is_refused_as_boolean(tmp_path):
    import scipy.io

    scipy.io.savemat(tmp_path / "l.mat", {"mask": np.eye(2, dtype=bool), "w": np.eye(2)})
    with pytest.raises(TypeError, match="'mask'.*boolean"):
        read_matrices(tmp_path / "l.mat")
    assert list(read_matrices(tmp_path / "l.mat", key="w")) == ["w"]


# -- issue 12: bounded memory, regular files only, nothing read wrong silently ----------------


def npy_bytes(array: np.ndarray) -> bytes:
    import io as stdio

    buffer = stdio.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def peak_allocated(call) -> tuple[BaseException | None, int]:
    """Run ``call``; return the exception it raised and the peak of traced allocations."""
    import tracemalloc

    tracemalloc.start()
    try:
        call()
        error = None
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


def test_zip_bomb_npz_refused_from_the_declared_size(tmp_path):
    from lowrank_blocks._limits import MemoryLimitError

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, W=np.zeros((4096, 4096)))  # 128 MiB of zeros in ~130 KB
    assert path.stat().st_size < 1 << 20
    error, peak = peak_allocated(lambda: read_matrix(path, max_bytes=16 * 1024**2))
    assert isinstance(error, MemoryLimitError) and isinstance(error, ValueError)
    message = str(error)
    assert "reading array 'W' from" in message and "bomb.npz" in message
    assert "128.0 MiB" in message and "LOWRANK_BLOCKS_MAX_BYTES" in message
    assert "max_bytes=" in message
    assert peak < 8 * 1024**2  # refused before decompressing
    # within the limit it reads, and the values are the true ones
    assert not read_matrix(path, max_bytes=256 * 1024**2).any()


def test_environment_variable_sets_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "w.npy"
    np.save(path, np.ones((256, 256)))  # 512 KiB
    monkeypatch.setenv("LOWRANK_BLOCKS_MAX_BYTES", "100K")
    with pytest.raises(ValueError, match=r"w.npy.* would need 512.0 KiB, more than the limit of "
                                         r"100.0 KiB \(LOWRANK_BLOCKS_MAX_BYTES\)"):
        read_matrix(path)
    monkeypatch.setenv("LOWRANK_BLOCKS_MAX_BYTES", "1M")
    assert read_matrix(path).sum() == 256 * 256
    monkeypatch.setenv("LOWRANK_BLOCKS_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match=r"LOWRANK_BLOCKS_MAX_BYTES='lots' is not a size"):
        read_matrix(path)


@pytest.mark.parametrize("claimed", [(2, 2), (10_000, 10_000)], ids=["smaller", "larger"])
def test_npz_member_whose_header_disagrees_with_its_size(tmp_path, claimed):
    import zipfile

    data = npy_bytes(np.ones((64, 64)))
    fake = npy_bytes(np.ones(claimed))[: len(npy_bytes(np.ones(claimed))) - 8 * math_prod(claimed)]
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("W.npy", fake + data[len(npy_bytes(np.ones((64, 64)))) - 64 * 64 * 8:])
    with pytest.raises(ValueError, match=r"'W' in .*lie.npz.* header describing .* bytes of data "
                                         r".* declares"):
        read_matrices(path)


def math_prod(shape):
    out = 1
    for n in shape:
        out *= n
    return out


def test_npz_with_100000_entries_gives_a_short_error(tmp_path):
    import zipfile

    member = npy_bytes(np.ones((2, 2)))
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for k in range(100_000):
            zf.writestr(f"w{k}.npy", member)
    with pytest.raises(KeyError) as info:
        read_matrix(path, key="nope")
    message = str(info.value)
    assert len(message) < 300
    assert "'w0', 'w1', 'w2', 'w3', 'w4' and 99,995 more" in message
    assert read_matrix(path, key="w99999").tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_several_matrices_error_names_a_few(tmp_path):
    path = tmp_path / "some.npz"
    np.savez(path, **{f"m{k}": np.eye(2) for k in range(40)})
    with pytest.raises(ValueError) as info:
        read_matrix(path)
    assert str(info.value).endswith("contains 40 matrices ('m0', 'm1', 'm2', 'm3', 'm4' and 35 "
                                    "more); pass key=... to choose one")


def test_sparse_mat_checked_at_its_dense_size(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    import scipy.sparse

    big = scipy.sparse.coo_matrix(([1.0], ([0], [0])), shape=(100_000, 100_000))
    path = tmp_path / "sparse.mat"
    scipy_io.savemat(path, {"S": big, "small": np.arange(6.0).reshape(2, 3)}, do_compression=True)
    assert path.stat().st_size < 2048
    error, peak = peak_allocated(lambda: read_matrices(path, max_bytes=2**30))
    assert isinstance(error, ValueError)
    assert "reading 2 arrays from" in str(error) and "74.5 GiB" in str(error)
    assert peak < 8 * 1024**2
    with pytest.raises(ValueError, match=r"reading array 'S' from .*sparse.mat.* 74.5 GiB"):
        read_matrix(path, key="S", max_bytes=2**30)
    np.testing.assert_array_equal(read_matrix(path, key="small"), np.arange(6.0).reshape(2, 3))


def test_symbolic_link_to_a_device_is_refused(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    link = tmp_path / "zero.npy"
    link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"zero.npy' is a character device \(it resolves to "
                                         r"'/dev/zero'\), not a regular file"):
        read_matrix(link)


def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe.csv' is a FIFO \(named pipe\), not a regular file"):
        read_matrix(fifo)  # opening it for reading would block forever


def test_bad_path_and_key_types(tmp_path):
    with pytest.raises(TypeError, match=r"path=5 must be a str or os.PathLike, got int"):
        read_matrix(5)
    with pytest.raises(ValueError, match=r"is not a valid path"):
        read_matrix("a\0b.npy")
    np.save(tmp_path / "w.npy", np.eye(2))
    with pytest.raises(TypeError, match=r"key=3 must be a string, got int"):
        read_matrix(tmp_path / "w.npy", key=3)
    with pytest.raises(TypeError, match=r"max_bytes=1.5 must be an integer"):
        read_matrix(tmp_path / "w.npy", max_bytes=1.5)


def test_float32_tiff_in_unit_interval_read_exactly(tmp_path):
    from PIL import Image

    values = np.random.default_rng(0).random((6, 9)).astype(np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    out = read_matrix(tmp_path / "f.tif")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, values.astype(np.float64))  # not zeros, not 0..255


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_not_clipped(tmp_path, suffix):
    from PIL import Image

    values = (np.arange(35).reshape(5, 7) * 1900).astype(np.uint16)  # up to 64600
    Image.fromarray(values).save(tmp_path / f"deep{suffix}")
    out = read_matrix(tmp_path / f"deep{suffix}")
    np.testing.assert_array_equal(out, values.astype(np.float64))
    assert out.max() == 64600


def test_32_bit_integer_tiff_read_exactly(tmp_path):
    from PIL import Image

    values = (np.arange(12).reshape(3, 4) * 123_457 - 5).astype(np.int32)
    Image.fromarray(values).save(tmp_path / "i.tif")
    np.testing.assert_array_equal(read_matrix(tmp_path / "i.tif"), values.astype(np.float64))


def test_image_size_checked_before_decoding(tmp_path):
    from PIL import Image

    Image.new("L", (4000, 3000)).save(tmp_path / "big.png")
    error, peak = peak_allocated(lambda: read_matrix(tmp_path / "big.png", max_bytes=2**20))
    assert isinstance(error, ValueError) and "big.png" in str(error)
    assert peak < 4 * 1024**2


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_csv_with_byte_order_mark(tmp_path, encoding):
    path = tmp_path / "bom.csv"
    path.write_text("1.5,2,3\n4,5,-6e-3\n", encoding=encoding)
    assert path.read_bytes()[:2] in (b"\xef\xbb", b"\xff\xfe", b"\xfe\xff")
    np.testing.assert_array_equal(read_matrix(path), [[1.5, 2, 3], [4, 5, -6e-3]])


def test_deeply_nested_safetensors_header(tmp_path):
    pytest.importorskip("safetensors")
    nested = "[" * 100_000 + "]" * 100_000
    blob = ('{"__metadata__": ' + nested + ', "W": {"dtype": "F32", "shape": [1, 1], '
            '"data_offsets": [0, 4]}}').encode()
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0\0\0\0")
    with pytest.raises(ValueError, match=r"deep.safetensors' is not a valid .safetensors file "
                                         r"\(header JSON is nested too deeply\)"):
        read_matrices(path)
