"""Adapters PEFT loads: extraction, PiSSA, LoraConfig and GraLoRA, on a tiny BERT (CPU).

References: PEFT's own ``get_delta_weight`` and ``merge_and_unload``, the model's outputs before
and after, ``numpy.linalg.svd`` of the known perturbation, and PEFT's ``convert_to_lora``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowrank_blocks import BlockGrid, Global, approximate
from lowrank_blocks.model_budget import allocate_model
from lowrank_blocks.peft import (
    UnsupportedStructureError,
    extract_adapter,
    gralora_choice,
    lora_config,
    peft_layout,
    pissa_adapter,
)
from lowrank_blocks.structures import DiagonalBlocks

pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Converting a PEFT adapter to LoRA:UserWarning"),
]

PERTURBED = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.0.intermediate.dense.weight",
             "encoder.layer.1.attention.self.value.weight", "encoder.layer.1.output.dense.weight",
             "embeddings.word_embeddings.weight"]


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    pytest.importorskip("safetensors")
    return torch, transformers, peft


def tiny_bert(hf, seed=0):
    torch, transformers, _ = hf
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)
    return transformers.BertModel(config).eval()


@pytest.fixture(scope="module")
def checkpoints(hf, tmp_path_factory):
    """A base model and a 'fine-tuned' one: known perturbations of decaying spectrum."""
    torch, _, _ = hf
    root = tmp_path_factory.mktemp("ckpt")
    model = tiny_bert(hf)
    model.save_pretrained(root / "base")
    base = {k: v.detach().double().numpy().copy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    delta = {}
    with torch.no_grad():
        state = model.state_dict()
        for k, name in enumerate(PERTURBED):
            m, n = state[name].shape
            U = np.linalg.qr(rng.standard_normal((m, min(m, n))))[0]
            V = np.linalg.qr(rng.standard_normal((n, min(m, n))))[0]
            S = (0.05 * (k + 1)) * (0.3 + 0.15 * k) ** np.arange(min(m, n))
            d = ((U * S) @ V.T).astype(np.float32)
            state[name] += torch.from_numpy(d)
            delta[name] = state[name].double().numpy() - base[name]
    model.save_pretrained(root / "tuned")
    return root, base, delta


def inputs(hf):
    torch, _, _ = hf
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 100, (3, 7), generator=g),
            "attention_mask": torch.ones(3, 7, dtype=torch.long)}


def load(hf, base_dir, adapter_dir):
    _, transformers, peft = hf
    model = transformers.BertModel.from_pretrained(base_dir).eval()
    return peft.PeftModel.from_pretrained(model, adapter_dir).eval()


def test_extract_lora_merges_to_base_plus_reconstruction(hf, checkpoints, tmp_path):
    torch, _, peft = hf
    root, base, delta = checkpoints
    budget = sum(sum(delta[n].shape) for n in PERTURBED) * 3
    adapter = extract_adapter(root / "tuned", root / "base", tmp_path / "a", budget,
                              progress=False)
    ranks = adapter.allocation.ranks
    assert set(ranks) == set(PERTURBED)  # unchanged matrices are not adapted
    assert adapter.allocation.n_params <= budget
    assert adapter.allocation.total_error <= adapter.allocation.uniform_error + 1e-12
    peft_model = load(hf, root / "base", tmp_path / "a")
    modules = dict(peft_model.base_model.model.named_modules())
    for name in PERTURBED:
        module = modules[name[: -len(".weight")]]
        r = ranks[name]
        recon = np.asarray(approximate(delta[name], Global(r)).reconstruct()) if r else 0 * delta[name]
        if r:
            assert module.r["default"] == r
            got = module.get_delta_weight("default").detach().double().numpy()
            if "embeddings" in name:
                assert got.shape == delta[name].shape
            np.testing.assert_allclose(got, recon, atol=1e-5, rtol=0)
            # the optimal error of that rank, from the SVD of the known update
            s2 = np.linalg.svd(delta[name], compute_uv=False) ** 2
            assert np.sum((delta[name] - recon) ** 2) == pytest.approx(s2[r:].sum(), rel=1e-6, abs=1e-12)
    merged = peft_model.merge_and_unload().state_dict()
    for name, W in base.items():
        if merged[name].dtype.is_floating_point and name in delta:
            r = ranks[name]
            recon = np.asarray(approximate(delta[name], Global(r)).reconstruct()) if r else 0.0
            np.testing.assert_allclose(merged[name].double().numpy(), W + recon, atol=1e-5, rtol=0)


def test_extract_gralora_merges_to_base_plus_block_reconstruction(hf, checkpoints, tmp_path):
    root, base, delta = checkpoints
    names = [n for n in PERTURBED if n.startswith("encoder")]
    unit = sum(sum(delta[n].shape) for n in names)
    adapter = extract_adapter(root / "tuned", root / "base", tmp_path / "g", 4 * unit,
                              structure="grid:2", pattern="encoder.*.weight", progress=False)
    assert adapter.config["peft_type"] == "GRALORA"
    assert (adapter.config["r"], adapter.config["gralora_k"]) == (4, 2)
    peft_model = load(hf, root / "base", tmp_path / "g")
    modules = dict(peft_model.base_model.model.named_modules())
    for name in names:
        recon = np.asarray(approximate(delta[name], BlockGrid(2, rank=2)).reconstruct())
        got = modules[name[: -len(".weight")]].get_delta_weight("default").detach().double().numpy()
        np.testing.assert_allclose(got, recon, atol=1e-5, rtol=0)
    merged = peft_model.merge_and_unload().state_dict()
    for name in names:
        recon = np.asarray(approximate(delta[name], BlockGrid(2, rank=2)).reconstruct())
        np.testing.assert_allclose(merged[name].double().numpy(), base[name] + recon, atol=1e-5)


@pytest.mark.parametrize("structure, pattern", [("global", None), ("grid:2", "encoder.*.weight")])
def test_pissa_adapter_leaves_outputs_unchanged(hf, checkpoints, tmp_path, structure, pattern):
    torch, transformers, _ = hf
    root, _, _ = checkpoints
    original = transformers.BertModel.from_pretrained(root / "tuned").eval()
    adapter = pissa_adapter(root / "tuned", tmp_path / "p", lora_rank=4, structure=structure,
                            pattern=pattern, progress=False)
    peft_model = load(hf, adapter.base_path, tmp_path / "p")
    # the adapter is not empty: without it, the outputs change
    x = inputs(hf)
    with torch.no_grad():
        want = original(**x).last_hidden_state
        got = peft_model(**x).last_hidden_state
        with peft_model.disable_adapter():
            residual_only = peft_model(**x).last_hidden_state
    assert torch.max(torch.abs(got - want)) <= 1e-5
    assert torch.max(torch.abs(residual_only - want)) > 1e-2


def test_lora_config_is_accepted_and_builds_the_allocated_ranks(hf, checkpoints):
    _, _, peft = hf
    root, _, _ = checkpoints
    alloc = allocate_model(root / "tuned", budget=4000, pattern="encoder.*.weight", progress=False)
    cfg = lora_config(alloc)
    assert len(set(alloc.ranks.values())) > 1  # a real rank pattern
    config = peft.LoraConfig(**cfg)
    model = peft.get_peft_model(tiny_bert(hf), config)
    modules = dict(model.base_model.model.named_modules())
    for name, r in alloc.ranks.items():
        module = modules[name[: -len(".weight")]]
        if r == 0:
            assert not hasattr(module, "lora_A")
        else:
            assert module.r["default"] == r and module.lora_A["default"].weight.shape[0] == r
            assert module.scaling["default"] == 1.0


def test_gralora_choice_is_the_best_k_and_peft_builds_it(hf, checkpoints):
    _, _, peft = hf
    root, _, delta = checkpoints
    choice = gralora_choice(root / "tuned", lora_rank=4, base=root / "base",
                            pattern="encoder.*.weight", ks=(1, 2, 4, 3), progress=False)
    table = choice.table.set_index("k")
    assert math.isnan(table.loc[3, "total_error"]) and "not divisible by 3" in table.loc[3, "note"]
    assert choice.allocation.total_error == table["total_error"].min()
    # each k's error from first principles (relative objective)
    for k in (1, 2, 4):
        r = table.loc[k, "r"]
        total = 0.0
        for m in choice.allocation.spectra:
            d = delta[m.name] if m.name in delta else None
            if d is None or not np.any(d):
                continue
            s = int(r) // k
            err = np.linalg.norm(d - np.asarray(approximate(d, BlockGrid(k, rank=s)).reconstruct()))
            total += err ** 2 / np.sum(d ** 2)
        assert table.loc[k, "total_error"] == pytest.approx(total, rel=1e-6)
    model = peft.get_peft_model(tiny_bert(hf), peft.GraloraConfig(**choice.config()))
    assert any("gralora" in n for n, _ in model.named_parameters())


def test_structures_peft_cannot_hold_are_named_with_the_nearest(hf, checkpoints, tmp_path):
    root, _, _ = checkpoints
    with pytest.raises(UnsupportedStructureError, match="ragged blocks.*nearest.*gralora_k=2"):
        extract_adapter(root / "tuned", root / "base", tmp_path / "x", lora_rank=3,
                        structure="grid:3", pattern="encoder.*.weight", progress=False)
    with pytest.raises(UnsupportedStructureError, match="embedding.*nearest"):
        extract_adapter(root / "tuned", root / "base", tmp_path / "y", lora_rank=2,
                        structure="grid:2", progress=False)
    with pytest.raises(UnsupportedStructureError, match="diagonal.*nearest.*Global"):
        extract_adapter(root / "tuned", root / "base", tmp_path / "z", lora_rank=2,
                        structure="diagonal:2", progress=False)
    with pytest.raises(UnsupportedStructureError, match="per-block ranks.*nearest") as info:
        peft_layout(BlockGrid(2, rank=[1, 2, 0, 1]), (32, 32))
    assert "BlockGrid(2, rank=1)" in info.value.nearest
    with pytest.raises(UnsupportedStructureError, match="nearest.*Global"):
        peft_layout(DiagonalBlocks(2, rank=2), (8, 8))
    mixed = allocate_model({"a.weight": np.kron(np.eye(2), np.ones((4, 4))),
                            "b.weight": np.random.default_rng(0).standard_normal((8, 8))},
                           budget=32, structures="global,grid:2", objective="absolute",
                           progress=False)
    if any(label != "global" for label, s in mixed.choices if s):
        with pytest.raises(UnsupportedStructureError, match="global factorizations only"):
            lora_config(mixed)


def test_allocate_beats_uniform_and_convert_to_lora_energy_threshold(hf, checkpoints, capsys):
    """At the total that PEFT's convert_to_lora(rank=threshold) uses, the allocation's total
    error is no larger than the threshold's, and no larger than the uniform rank's."""
    torch, _, peft = hf
    from peft.tuners.lora.conversion import convert_to_lora

    root, _, delta = checkpoints
    names = [n for n in PERTURBED if n.startswith("encoder")]
    # a PEFT model holding every update exactly (full-rank LoRA, factors from numpy's SVD)
    full = {n[: -len(".weight")]: min(delta[n].shape) for n in names}
    config = peft.LoraConfig(r=1, lora_alpha=1, target_modules=sorted(full), rank_pattern=full,
                             alpha_pattern=full)
    model = peft.get_peft_model(tiny_bert(hf), config)
    modules = dict(model.base_model.model.named_modules())
    with torch.no_grad():
        for n in names:
            U, S, Vt = np.linalg.svd(delta[n], full_matrices=False)
            layer = modules[n[: -len(".weight")]]
            layer.lora_B["default"].weight.copy_(torch.from_numpy(U * S).float())
            layer.lora_A["default"].weight.copy_(torch.from_numpy(Vt).float())
    mats = {n: delta[n] for n in names}
    for threshold in (0.5, 0.8, 0.9):
        lcfg, state = convert_to_lora(model, rank=threshold)
        used, total = 0, 0.0
        for n in names:
            module = n[: -len(".weight")]
            A = state[f"base_model.model.{module}.lora_A.weight"].double().numpy()
            B = state[f"base_model.model.{module}.lora_B.weight"].double().numpy()
            used += A.shape[0] * sum(delta[n].shape)
            total += np.sum((delta[n] - B @ A) ** 2) / np.sum(delta[n] ** 2)
        alloc = allocate_model(mats, used, progress=False)
        assert alloc.n_params <= used
        assert alloc.total_error <= total + 1e-6
        assert alloc.total_error <= alloc.uniform_error + 1e-12
        print(f"threshold {threshold}: {used} parameters, total relative error: allocated "
              f"{alloc.total_error:.4f}, uniform rank {alloc.uniform_rank} "
              f"{alloc.uniform_error:.4f}, convert_to_lora {total:.4f}")


# -- GPT-2: Conv1D layers, weights stored (in, out) --------------------------------------------

GPT2_PERTURBED = ["h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.1.mlp.c_fc.weight",
                  "h.1.mlp.c_proj.weight"]


def tiny_gpt2(hf, seed=0):
    torch, transformers, _ = hf
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                                     n_positions=16)
    return transformers.GPT2Model(config).eval()


@pytest.fixture(scope="module")
def gpt2_checkpoints(hf, tmp_path_factory):
    """GPT-2 base and 'fine-tuned' checkpoints; the updates are not symmetric, so a transposed
    factorisation would be caught on the square c_proj layers too."""
    torch, _, _ = hf
    root = tmp_path_factory.mktemp("gpt2")
    model = tiny_gpt2(hf)
    model.save_pretrained(root / "base")
    base = {k: v.detach().double().numpy().copy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(1)
    delta = {}
    with torch.no_grad():
        state = model.state_dict()
        for name in GPT2_PERTURBED:
            m, n = state[name].shape
            d = (rng.standard_normal((m, 3)) @ rng.standard_normal((3, n)) * 0.05
                 + rng.standard_normal((m, n)) * 1e-3).astype(np.float32)
            state[name] += torch.from_numpy(d)
            delta[name] = state[name].double().numpy() - base[name]
    model.save_pretrained(root / "tuned")
    return root, base, delta


def _gpt2_adapted(hf, base_dir, adapter_dir):
    _, transformers, peft = hf
    model = transformers.GPT2Model.from_pretrained(base_dir).eval()
    return peft.PeftModel.from_pretrained(model, adapter_dir).eval()


@pytest.mark.parametrize("structure", ["global", "grid:2"])
def test_gpt2_conv1d_adapter_merges_to_base_plus_reconstruction(hf, gpt2_checkpoints, tmp_path,
                                                                structure):
    root, base, delta = gpt2_checkpoints
    adapter = extract_adapter(root / "tuned", root / "base", tmp_path / "a", lora_rank=2,
                              structure=structure, progress=False)
    assert adapter.config["fan_in_fan_out"] is True  # read from config.json (model_type gpt2)
    ranks = dict(zip((ms.name for ms in adapter.allocation.spectra),
                     (s for _, s in adapter.allocation.choices)))
    peft_model = _gpt2_adapted(hf, root / "base", tmp_path / "a")
    modules = dict(peft_model.base_model.model.named_modules())
    merged = peft_model.merge_and_unload().state_dict()
    for name in GPT2_PERTURBED:
        s = ranks[name]
        unit = Global(s) if structure == "global" else BlockGrid(2, rank=s)
        # the reference: the optimal approximation of the update in the weight's own layout
        recon = np.asarray(approximate(delta[name], unit).reconstruct())
        assert np.sum((delta[name] - recon) ** 2) < np.sum(delta[name] ** 2)
        np.testing.assert_allclose(merged[name].double().numpy(), base[name] + recon, atol=1e-5,
                                   rtol=0)
    if structure == "global":
        got = modules["h.0.attn.c_proj"]  # square: a transposed adapter would load silently
        assert got.fan_in_fan_out


def test_gpt2_pissa_from_the_module_keeps_the_outputs(hf, gpt2_checkpoints, tmp_path):
    torch, transformers, _ = hf
    root, _, _ = gpt2_checkpoints
    original = transformers.GPT2Model.from_pretrained(root / "tuned").eval()
    adapter = pissa_adapter(original, tmp_path / "p", lora_rank=2, pattern="h.*.weight",
                            progress=False)
    assert adapter.config["fan_in_fan_out"] is True  # from the module's Conv1D layers
    (tmp_path / "p" / "base" / "config.json").write_text(
        (root / "tuned" / "config.json").read_text())
    peft_model = _gpt2_adapted(hf, adapter.base_path, tmp_path / "p")
    x = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = original(x).last_hidden_state
        got = peft_model(x).last_hidden_state
        with peft_model.disable_adapter():
            residual_only = peft_model(x).last_hidden_state
    assert torch.max(torch.abs(got - want)) <= 1e-5
    assert torch.max(torch.abs(residual_only - want)) > 1e-2


def test_gpt2_names_without_a_config_must_say_fan_in_fan_out(hf, gpt2_checkpoints, tmp_path):
    _, base, delta = gpt2_checkpoints
    tuned = {n: base[n] + delta.get(n, 0.0) for n in GPT2_PERTURBED}
    plain = {n: base[n] for n in GPT2_PERTURBED}
    with pytest.raises(ValueError, match="fan_in_fan_out=True"):
        extract_adapter(tuned, plain, tmp_path / "a", lora_rank=1, progress=False)
    assert not (tmp_path / "a").exists()
    adapter = extract_adapter(tuned, plain, tmp_path / "b", lora_rank=1, fan_in_fan_out=True,
                              progress=False)
    assert adapter.config["fan_in_fan_out"] is True
    linear = extract_adapter(tuned, plain, tmp_path / "c", lora_rank=1, fan_in_fan_out=False,
                             progress=False)
    assert linear.config["fan_in_fan_out"] is False
