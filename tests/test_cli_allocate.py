"""The allocate and extract commands on a tiny BERT: tables, totals, files PEFT accepts."""

from __future__ import annotations

import json

import pytest

from lowrank_blocks.cli import main
from lowrank_blocks.model_budget import allocate_model

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(root / "base")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, (name, p) in enumerate(model.named_parameters()):
            if name.startswith("encoder") and name.endswith("dense.weight"):
                u = torch.randn(p.shape[0], 2, generator=g)
                v = torch.randn(2, p.shape[1], generator=g)
                p += 0.01 * (k % 3 + 1) * (u @ v) + 1e-4 * torch.randn(p.shape, generator=g)
    model.save_pretrained(root / "tuned")
    return root


def test_allocate_prints_table_and_totals_and_writes_a_lora_config(models, capsys, tmp_path):
    peft = pytest.importorskip("peft")
    out = tmp_path / "lora.json"
    code = main(["allocate", str(models / "tuned"), "--base", str(models / "base"),
                 "--budget", "600", "--peft-config", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    alloc = allocate_model(models / "tuned", 600, base=models / "base", progress=False)
    assert "sum of squared relative errors" in text and f"uniform rank {alloc.uniform_rank}" in text
    assert f"{alloc.total_error:.6g}" in text and f"{alloc.uniform_error:.6g}" in text
    for name in alloc.ranks:
        assert name in text
    cfg = json.loads(out.read_text())
    assert set(cfg) == {"r", "lora_alpha", "rank_pattern", "alpha_pattern", "target_modules"}
    peft.LoraConfig(**cfg)
    ranks = {m: cfg["rank_pattern"].get(m, cfg["r"]) for m in cfg["target_modules"]}
    assert ranks == {n[: -len(".weight")]: r for n, r in alloc.ranks.items() if r}


def test_allocate_structures_json_and_gralora(models, capsys, tmp_path):
    code = main(["allocate", str(models / "tuned"), "--base", str(models / "base"),
                 "--lora-rank", "2", "--structures", "global,grid:2", "--pattern", "encoder.*",
                 "--json", "--peft-config", str(tmp_path / "c.json"), "--no-progress"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] in ("exact dp", "lagrangian")
    totals = {row["choice"].split(" (")[0]: row["total_error"] for row in doc["summary"]}
    assert totals["allocated"] <= min(v for k, v in totals.items() if k.startswith("uniform")) + 1e-12
    gralora = json.loads((tmp_path / "c.gralora.json").read_text())
    assert gralora["gralora_k"] in (1, 2) and gralora["alpha"] == gralora["r"]


def test_extract_writes_an_adapter_peft_loads(models, capsys, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    out = tmp_path / "adapter"
    code = main(["extract", "--base", str(models / "base"), "--finetuned", str(models / "tuned"),
                 "--lora-rank", "2", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0 and "LORA adapter" in text and "uniform rank 2" in text
    model = transformers.BertModel.from_pretrained(models / "base")
    merged = peft.PeftModel.from_pretrained(model, out).merge_and_unload().state_dict()
    tuned = transformers.BertModel.from_pretrained(models / "tuned").state_dict()
    # a rank-2 update plus 1e-4 noise: the merged model is the fine-tuned one up to the noise
    for name, W in tuned.items():
        if name.endswith("dense.weight") and name.startswith("encoder"):
            assert torch.max(torch.abs(merged[name] - W)) < 2e-3
    capsys.readouterr()
    # GraLoRA with a k that does not divide: one line, the nearest structure named
    code = main(["extract", "--base", str(models / "base"), "--finetuned", str(models / "tuned"),
                 "--lora-rank", "3", "--structure", "grid:3", "--out", str(tmp_path / "g"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "nearest structure PEFT can hold" in err and len(err.splitlines()) == 1
    # an existing adapter directory is not overwritten without --force
    code = main(["extract", "--base", str(models / "base"), "--finetuned", str(models / "tuned"),
                 "--lora-rank", "2", "--out", str(out), "--no-progress"])
    assert code == 2 and "--force" in capsys.readouterr().err


def test_bad_arguments_are_one_line(models, capsys):
    assert main(["allocate", str(models / "tuned"), "--no-progress"]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main(["allocate", str(models / "tuned"), "--budget", "10", "--structures", "grid",
                 "--no-progress"]) == 2
    assert "not allowed" in capsys.readouterr().err


def test_extract_gpt2_names_without_a_config_ask_for_fan_in_fan_out(capsys, tmp_path):
    pytest.importorskip("peft")
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    base = {"h.0.attn.c_proj.weight": rng.standard_normal((8, 8)).astype(np.float32)}
    tuned = {k: v + np.outer(rng.standard_normal(8), rng.standard_normal(8)).astype(np.float32)
             for k, v in base.items()}
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    argv = ["extract", "--base", str(tmp_path / "base.safetensors"), "--finetuned",
            str(tmp_path / "tuned.safetensors"), "--lora-rank", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--fan-in-fan-out true" in err and len(err.splitlines()) == 1
    assert main([*argv, "--out", str(tmp_path / "b"), "--fan-in-fan-out", "true"]) == 0
    config = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True
