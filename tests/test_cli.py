"""The ``lowrank-blocks`` command, run as a separate process on small files.

Expected parameter counts come from the closed forms (``r (m + n)`` for LoRA and uniform
MELoRA, ``r (q m + p n)`` for a ``p × q`` grid), never from the code under test.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER_NAMES = ("LoRA", "MELoRA", "Localized LoRA")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("LOWRANK_BLOCKS_TRACEBACK", None)
    env["MPLBACKEND"] = "Agg"
    return env


def _popen(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "lowrank_blocks.cli", *map(str, args)],
        cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run(*args, cwd) -> subprocess.CompletedProcess:
    proc = _popen(args, cwd)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def ok(*args, cwd) -> str:
    result = run(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def expected_n_params(structure: str, m: int, n: int) -> int:
    """n_params of a uniform-rank structure repr from the closed forms."""
    if match := re.fullmatch(r"Global\(rank=(\d+)\)", structure):
        return int(match[1]) * (m + n)
    if match := re.fullmatch(r"DiagonalBlocks\(n_blocks=(\d+), rank=(\d+)\)", structure):
        return int(match[2]) * (m + n)
    if match := re.fullmatch(r"BlockGrid\(n_blocks=(\d+), rank=(\d+)\)", structure):
        k, r = int(match[1]), int(match[2])
        return r * (k * m + k * n)
    if match := re.fullmatch(r"BlockGrid\(n_blocks=\((\d+), (\d+)\), rank=(\d+)\)", structure):
        p, q, r = (int(g) for g in match.groups())
        return r * (q * m + p * n)
    raise AssertionError(f"not a uniform-rank structure: {structure}")


def table_line(out: str, method: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(method + "  "))


# -- files ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    # 32 × 32 with a rank-1 block in every cell of a 4 × 4 grid (8 × 8 blocks), plus 1e-3 noise:
    # BlockGrid(4, rank=1) costs 1 · (4·32 + 4·32) = 256 parameters and is nearly exact.
    W = np.zeros((32, 32))
    for i in range(4):
        for j in range(4):
            W[8 * i:8 * i + 8, 8 * j:8 * j + 8] = np.outer(rng.standard_normal(8),
                                                          rng.standard_normal(8))
    W += 1e-3 * rng.standard_normal(W.shape)
    np.save(d / "blocks.npy", W)
    np.save(d / "small.npy", rng.standard_normal((8, 8)))
    np.save(d / "vector.npy", np.arange(5.0))
    np.savez(d / "two.npz", a=W, b=W[:16])
    (d / "garbage.npy").write_bytes(b"this is not an npy file")
    (d / "weights.xyz").write_bytes(b"1 2 3")

    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (24, 20), dtype=np.uint8), mode="L").save(d / "img.png")

    from safetensors.numpy import save_file

    save_file(
        {
            "layer1.weight": rng.standard_normal((48, 40)).astype(np.float32),
            "layer1.bias": np.zeros(48, dtype=np.float32),
            "layer2.weight": rng.standard_normal((40, 40)).astype(np.float32),
        },
        str(d / "model.safetensors"),
    )
    return {p.stem if p.suffix != ".npz" else "npz": p for p in d.iterdir()} | {"dir": d}


# -- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["", "compare", "curve", "surface", "scan", "reproduce"])
def test_help_has_examples(command, tmp_path):
    out = ok(*([command] if command else []), "--help", cwd=tmp_path)
    assert out.startswith("usage: lowrank-blocks")
    assert "examples:\n  lowrank-blocks " in out
    if not command:
        for name in ("compare", "curve", "surface", "scan", "reproduce"):
            assert f"    {name} " in out


# -- compare -------------------------------------------------------------------------------------


def test_compare_budget_finds_the_block_structure(files, tmp_path):
    out = ok("compare", files["blocks"], "--budget", 256, "--no-progress", cwd=tmp_path)
    for method in PAPER_NAMES:
        line = table_line(out, method)
        structure = re.search(r"(Global|DiagonalBlocks|BlockGrid)\(.*?\)(?=\s{2})", line)[0]
        n_params = int(line.split()[-3])
        assert n_params == expected_n_params(structure, 32, 32) <= 256
    # LoRA rank 4 and a 4 × 4 grid of rank 1 both cost exactly 256 = 4 · 64 = 1 · 256.
    assert "Global(rank=4)" in table_line(out, "LoRA")
    localized = table_line(out, "Localized LoRA")
    assert "BlockGrid(n_blocks=4, rank=1)" in localized
    errors = {m: float(table_line(out, m).split()[-2]) for m in PAPER_NAMES}
    assert errors["Localized LoRA"] < 0.01 < 0.5 < errors["LoRA"]
    best = table_line(out, "best found").split()
    assert float(best[-2]) <= errors["Localized LoRA"] and int(best[-3]) <= 256
    assert re.search(r"\d\.\d{4}\b", localized) and not re.search(r"\d\.\d{5}", localized)


def test_compare_budget_json_and_csv_full_precision(files, tmp_path):
    records = json.loads(ok("compare", files["small"], "--budget", 32, "--json", cwd=tmp_path))
    assert [r["method"] for r in records] == [*PAPER_NAMES, "best found"]
    for r in records[:3]:
        assert r["n_params"] == expected_n_params(r["structure"], 8, 8) <= 32
        assert r["rank_overhead"] == 0
    assert records[3]["n_params"] <= 32 and isinstance(records[3]["rank_overhead"], int)
    assert records[3]["error"] <= min(r["error"] for r in records[:3]) + 1e-12
    frame = pd.read_csv(io.StringIO(ok("compare", files["small"], "--budget", 32, "--csv",
                                       cwd=tmp_path)))
    assert list(frame.columns) == ["method", "structure", "n_params", "error", "rank_overhead"]
    assert np.allclose(frame["error"], [r["error"] for r in records], rtol=1e-15, atol=0)


def test_compare_paper_rule_on_an_image(files, tmp_path):
    # r = 8, N = 4: Global(8), DiagonalBlocks(4, 2), BlockGrid(2, 1) on a 24 × 20 image.
    out = ok("compare", files["img"], "--rank", 8, "--paper-rule", "--blocks", 4, cwd=tmp_path)
    expected = {"LoRA": ("Global(rank=8)", 8 * 44), "MELoRA": ("DiagonalBlocks(n_blocks=4, "
                "rank=2)", 2 * 44), "Localized LoRA": ("BlockGrid(n_blocks=2, rank=1)",
                                                       2 * 24 + 2 * 20)}
    for method, (structure, n_params) in expected.items():
        line = table_line(out, method)
        assert structure in line and int(line.split()[-2]) == n_params
        assert 0.0 <= float(line.split()[-1]) <= 1.0
    frame = pd.read_csv(io.StringIO(ok("compare", files["img"], "--rank", 8, "--paper-rule",
                                       "--blocks", 4, "--csv", cwd=tmp_path)))
    assert frame["n_params"].tolist() == [n for _, n in expected.values()]


# -- curve and surface ---------------------------------------------------------------------------


def test_curve_writes_csv_and_png(files, tmp_path):
    out_dir = tmp_path / "new" / "figs"
    result = run("curve", files["blocks"], "--budgets", "64,128,256", "--out", out_dir, "--csv",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert set(frame["method"]) == set(PAPER_NAMES)
    assert (frame["n_params"] <= frame["budget"]).all()
    uniform_lora = frame.query("method == 'LoRA' and allocation == 'uniform'")
    assert uniform_lora["n_params"].tolist() == [64, 128, 256]  # r (m + n), r = 1, 2, 4
    assert f"wrote {out_dir / 'curve.csv'}" in result.stderr  # stdout stays pure CSV
    assert pd.read_csv(out_dir / "curve.csv").shape == frame.shape
    assert is_png(out_dir / "curve.png")


def test_curve_default_budgets_table(files, tmp_path):
    out = ok("curve", files["blocks"], "--points", 5, "--allocation", "uniform", cwd=tmp_path)
    assert "budget" in out and all(name in out for name in PAPER_NAMES)
    rows = [line.split() for line in out.splitlines() if re.match(r"\s*\d+\s+\d+\.\d\s", line)]
    budgets = [int(r[0]) for r in rows]
    assert budgets[0] == 64 and budgets[-1] == 256 and len(budgets) == 5  # m + n .. 25 % of m n
    assert is_png(tmp_path / "results" / "curve.png")
    assert "wrote results/curve.png" in out or f"wrote {Path('results') / 'curve.png'}" in out


def test_surface_writes_heatmaps(files, tmp_path):
    out = ok("surface", files["blocks"], "--budget", 256, "--out", "surf", cwd=tmp_path)
    section = out.split("at most 256 parameters")[1]
    first = section.splitlines()[2].split()  # best first: Localized LoRA 4×4, rank 1
    assert first[:4] == ["Localized", "LoRA", "4×4", "1"]
    assert int(first[4]) == 1 * (4 * 32 + 4 * 32)
    for name in ("surface_grid.png", "surface_diagonal.png"):
        assert is_png(tmp_path / "surf" / name)
    surface = pd.read_csv(tmp_path / "surf" / "surface.csv")
    grid = surface.query("structure == 'grid'")
    assert (grid["n_params"] == grid["rank"] * (grid["q"] * 32 + grid["p"] * 32)).all()
    records = json.loads(ok("surface", files["blocks"], "--grids", "2,2x4", "--json",
                            "--out", "surf2", cwd=tmp_path))
    assert {(r["p"], r["q"]) for r in records if r["structure"] == "grid"} == {(2, 2), (2, 4)}


# -- scan ----------------------------------------------------------------------------------------


def test_scan_checkpoint(files, tmp_path):
    out = ok("scan", files["model"], "--budget-fraction", 0.25, cwd=tmp_path)
    assert "layer1.bias" not in out
    for name, (m, n) in {"layer1.weight": (48, 40), "layer2.weight": (40, 40)}.items():
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert f"{m} × {n}" in line and str(round(0.25 * m * n)) in line.split()
    summary = out.split("summary:")[1]
    wins = [int(table_line(summary.strip("\n"), m).split()[-3]) for m in PAPER_NAMES]
    assert sum(wins) == 2

    document = json.loads(ok("scan", files["model"], "--budget-fraction", 0.25, "--json",
                             cwd=tmp_path))
    rows = document["matrices"]
    assert [r["name"] for r in rows] == ["layer1.weight", "layer2.weight"]
    for r in rows:
        errors = {m: r[m] for m in PAPER_NAMES}
        assert r["winner"] == min(errors, key=errors.get)
        for m in PAPER_NAMES:
            assert expected_n_params(r[f"{m} structure"], r["rows"], r["cols"]) <= r["budget"]
    assert [s["method"] for s in document["summary"]] == list(PAPER_NAMES)

    frame = pd.read_csv(io.StringIO(ok("scan", files["model"], "--pattern", "layer2*", "--csv",
                                       cwd=tmp_path)))
    assert frame["name"].tolist() == ["layer2.weight"]
    assert frame["budget"].tolist() == [round(0.05 * 40 * 40)]  # the default fraction


# -- reproduce -----------------------------------------------------------------------------------


@pytest.mark.mnist
def test_reproduce_table1(tmp_path):
    records = json.loads(ok("reproduce", "table1", "--json", cwd=tmp_path))
    assert [(r["method"], r["n_params"], round(r["error"], 4)) for r in records] == [
        ("LoRA", 224, 0.2313), ("MELoRA", 224, 0.9071), ("Localized LoRA", 224, 0.2119)]
    out = ok("reproduce", "table1", "--out", "t1", cwd=tmp_path)
    assert out.startswith("Table I:") and "matrix rank of the image: 15" in out
    assert pd.read_csv(tmp_path / "t1" / "table1.csv")["n_params"].tolist() == [224] * 3


@pytest.mark.mnist
def test_reproduce_fig1(tmp_path):
    out = ok("reproduce", "fig1", "--out", "figs", cwd=tmp_path)
    assert is_png(tmp_path / "figs" / "fig1.png")
    assert f"wrote {Path('figs') / 'fig1.png'}" in out
    for method in (*PAPER_NAMES, "best found"):
        assert int(table_line(out, method).split()[-3]) == 224 or method == "best found"


# -- bad input: exit status 2 and one line on stderr ---------------------------------------------

BAD = {
    "missing file": ["compare", "{dir}/nope.npy", "--budget", "100"],
    "unreadable file": ["compare", "{garbage}", "--budget", "100"],
    "unknown suffix": ["compare", "{weights}", "--budget", "100"],
    "wrong key": ["compare", "{npz}", "--key", "zz", "--budget", "100"],
    "several arrays, no key": ["compare", "{npz}", "--budget", "100"],
    "1-D array": ["compare", "{vector}", "--budget", "100"],
    "non-integer budget": ["compare", "{blocks}", "--budget", "1.5"],
    "budget below cheapest": ["compare", "{blocks}", "--budget", "10"],
    "no budget or rank": ["compare", "{blocks}"],
    "paper rule without rank": ["compare", "{blocks}", "--paper-rule", "--blocks", "4"],
    "rank without paper rule": ["compare", "{blocks}", "--rank", "8", "--blocks", "4"],
    "rank/N not integer": ["compare", "{blocks}", "--rank", "6", "--paper-rule", "--blocks", "4"],
    "N not a square": ["compare", "{blocks}", "--rank", "8", "--paper-rule", "--blocks", "2"],
    "rank too large": ["compare", "{blocks}", "--rank", "64", "--paper-rule", "--blocks", "4"],
    "csv and json": ["compare", "{blocks}", "--budget", "256", "--csv", "--json"],
    # (with per-block ranks 8 parameters buy rank-1 terms of small diagonal blocks)
    "budgets below cheapest": ["curve", "{blocks}", "--budgets", "8", "--allocation", "uniform",
                               "--out", "{dir}/c"],
    "bad grid": ["surface", "{blocks}", "--grids", "2y3"],
    "grid too large": ["surface", "{small}", "--grids", "16", "--out", "{dir}/s"],
    "no matching weight": ["scan", "{model}", "--pattern", "nothing*"],
    "unknown command": ["frobnicate"],
}


@pytest.fixture(scope="module")
def bad_runs(files):
    """Run every bad-input command at once (each is a separate process)."""
    where = {k: str(v) for k, v in files.items()}

    def one(args):
        return run(*[a.format(**where) for a in args], cwd=files["dir"])

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(BAD, pool.map(one, BAD.values())))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_status_2(bad_runs, case):
    result = bad_runs[case]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lowrank-blocks: error: "), result.stderr
    assert len(lines[0]) > len("lowrank-blocks: error: ") + 10
    assert result.stdout == ""
