"""The ``lowrank-blocks`` command, run in-process through ``main(argv)`` on small files.

Only two tests start a process: one runs the installed ``lowrank-blocks`` console script, one
``python -m lowrank_blocks``.  Expected parameter counts come from the closed forms
(``r (m + n)`` for LoRA and uniform MELoRA, ``r (q m + p n)`` for a ``p × q`` grid) and rank
overheads from the block counts (``p q`` for a grid, ``N`` for diagonal blocks), never from the
code under test.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowrank_blocks.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAPER_NAMES = ("LoRA", "MELoRA", "Localized LoRA")
FAMILIES = ("global", "diagonal", "grid")
ERROR_PREFIX = "lowrank-blocks: error: "
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """``main(argv)`` in-process, in a temporary working folder, with its output captured."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys

    def run(self, *args) -> Result:
        code = main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def ok(self, *args) -> str:
        result = self.run(*args)
        assert result.code == 0, result.err
        assert "Traceback" not in result.err
        return result.out


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path) -> Cli:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOWRANK_BLOCKS_TRACEBACK", raising=False)
    return Cli(capsys)


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def expected_n_params(structure: str, m: int, n: int) -> int:
    """n_params of a uniform-rank structure repr from the closed forms."""
    if match := re.fullmatch(r"Global\(rank=(\d+)\)", structure):
        return int(match[1]) * (m + n)
    if match := re.fullmatch(r"DiagonalBlocks\(n_blocks=(\d+), rank=(\d+)\)", structure):
        return int(match[2]) * (m + n)
    if match := re.fullmatch(r"BlockGrid\(grid=(\d+), rank=(\d+)\)", structure):
        k, r = int(match[1]), int(match[2])
        return r * (k * m + k * n)
    if match := re.fullmatch(r"BlockGrid\(grid=\((\d+), (\d+)\), rank=(\d+)\)", structure):
        p, q, r = (int(g) for g in match.groups())
        return r * (q * m + p * n)
    raise AssertionError(f"not a uniform-rank structure: {structure}")


def expected_rank_overhead(structure: str) -> int:
    """Integers storing per-block ranks, from a structure repr: one per block, or 0 if uniform."""
    if re.search(r"rank=\d+\)$", structure):
        return 0
    if match := re.fullmatch(r"DiagonalBlocks\(n_blocks=(\d+), rank=.*\)", structure):
        return int(match[1])
    if match := re.fullmatch(r"BlockGrid\(grid=(\d+), rank=.*\)", structure):
        return int(match[1]) ** 2
    if match := re.fullmatch(r"BlockGrid\(grid=\((\d+), (\d+)\), rank=.*\)", structure):
        return int(match[1]) * int(match[2])
    raise AssertionError(f"not a structure repr with per-block ranks: {structure}")


def table_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(name + "  "))


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
def test_help_has_examples(command, cli):
    out = cli.ok(*([command] if command else []), "--help")
    assert out.startswith("usage: lowrank-blocks")
    assert "examples:\n  lowrank-blocks " in out
    if not command:
        for name in ("compare", "curve", "surface", "scan", "reproduce"):
            assert f"    {name} " in out


def test_version(cli):
    from lowrank_blocks import __version__

    assert cli.ok("--version").strip() == f"lowrank-blocks {__version__}"


# -- compare -------------------------------------------------------------------------------------


def test_compare_budget_finds_the_block_structure(files, cli):
    out = cli.ok("compare", files["blocks"], "--budget", 256, "--no-progress")
    for name, family in zip(PAPER_NAMES, FAMILIES):
        line = table_line(out, name)
        assert line.split()[len(name.split())] == family
        structure = re.search(r"(Global|DiagonalBlocks|BlockGrid)\(.*?\)(?=\s{2})", line)[0]
        n_params, rank_overhead = (int(v) for v in line.split()[-3:-1])
        assert n_params == expected_n_params(structure, 32, 32) <= 256
        assert rank_overhead == 0
    # LoRA rank 4 and a 4 × 4 grid of rank 1 both cost exactly 256 = 4 · 64 = 1 · 256.
    assert "Global(rank=4)" in table_line(out, "LoRA")
    localized = table_line(out, "Localized LoRA")
    assert "BlockGrid(grid=4, rank=1)" in localized
    errors = {m: float(table_line(out, m).split()[-1]) for m in PAPER_NAMES}
    assert errors["Localized LoRA"] < 0.01 < 0.5 < errors["LoRA"]
    best = table_line(out, "best found").split()
    assert float(best[-1]) <= errors["Localized LoRA"]
    assert int(best[-3]) + int(best[-2]) <= 256  # the rank integers are charged by default
    assert re.search(r"\d\.\d{4}\b", localized) and not re.search(r"\d\.\d{5}", localized)
    assert "charged to the budget (n_params + rank_overhead <= 256)" in out


def test_compare_budget_json_and_csv_full_precision(files, cli):
    records = json.loads(cli.ok("compare", files["small"], "--budget", 32, "--json"))
    assert [r["paper_name"] for r in records] == [*PAPER_NAMES, "best found"]
    assert [r["family"] for r in records[:3]] == list(FAMILIES)
    assert records[3]["family"] in FAMILIES
    for r in records[:3]:
        assert r["n_params"] == expected_n_params(r["structure"], 8, 8) <= 32
        assert r["rank_overhead"] == 0
    assert records[3]["n_params"] + records[3]["rank_overhead"] <= 32
    assert records[3]["error"] <= min(r["error"] for r in records[:3]) + 1e-12
    frame = pd.read_csv(io.StringIO(cli.ok("compare", files["small"], "--budget", 32, "--csv")))
    assert list(frame.columns) == ["paper_name", "family", "structure", "n_params",
                                   "rank_overhead", "error"]
    assert np.allclose(frame["error"], [r["error"] for r in records], rtol=1e-15, atol=0)


@pytest.mark.parametrize("budget", [16, 24, 32, 40, 48])
def test_compare_budget_charges_the_rank_overhead(files, cli, budget):
    """n_params + rank integers <= budget for every row, per-block winners included."""
    frame = pd.read_csv(io.StringIO(cli.ok("compare", files["small"], "--budget", budget,
                                           "--csv")))
    # (A 2 × 2 grid of rank 1 costs 2 · 8 + 2 · 8 = 32: none within 16 or 24 parameters.)
    none = frame["structure"] == "none within budget"
    assert frame["paper_name"][none].tolist() == (["Localized LoRA"] if budget < 32 else [])
    frame = frame[~none]
    assert (frame["n_params"] + frame["rank_overhead"] <= budget).all()
    for structure, overhead in zip(frame["structure"], frame["rank_overhead"]):
        assert overhead == expected_rank_overhead(structure)
    free = json.loads(cli.ok("compare", files["small"], "--budget", budget, "--json",
                             "--no-rank-overhead"))
    # Without the charge the search has more room, so it does at least as well.
    assert free[-1]["paper_name"] == frame["paper_name"].iloc[-1] == "best found"
    assert free[-1]["error"] <= frame["error"].iloc[-1] + 1e-12
    assert free[-1]["n_params"] <= budget


def test_compare_no_rank_overhead(files, cli):
    # On this 8 × 8 Gaussian matrix the uncharged winner spends its 32 parameters on 16 of the
    # 64 one-entry blocks of an 8 × 8 grid (2 parameters each), and needs 64 rank integers on
    # top of them.
    records = json.loads(cli.ok("compare", files["small"], "--budget", 32, "--json",
                                "--no-rank-overhead"))
    best = records[3]
    assert best["paper_name"] == "best found" and best["family"] == "grid"
    assert best["n_params"] <= 32 < best["n_params"] + best["rank_overhead"]
    assert best["rank_overhead"] == expected_rank_overhead(best["structure"]) == 64
    charged = json.loads(cli.ok("compare", files["small"], "--budget", 32, "--json"))
    assert charged[3]["n_params"] + charged[3]["rank_overhead"] <= 32
    assert best["error"] < charged[3]["error"]
    assert records[:3] == charged[:3]  # uniform ranks store no rank integers either way
    out = cli.ok("compare", files["small"], "--budget", 32, "--no-rank-overhead")
    assert "not charged (--no-rank-overhead)" in out
    assert "note: 'best found' needs 64 integers for its per-block ranks" in out


def test_compare_families(files, cli):
    records = json.loads(cli.ok("compare", files["blocks"], "--budget", 256, "--json",
                                "--families", "grid,LoRA"))
    assert [r["paper_name"] for r in records] == ["LoRA", "Localized LoRA", "best found"]
    assert records[2]["family"] in ("global", "grid")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("flag", [None, "--no-progress"])
def test_compare_progress_bar_on_a_terminal(files, cli, monkeypatch, flag):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["compare", files["blocks"], "--budget", 256] + ([flag] if flag else [])
    assert cli.ok(*args).startswith("blocks.npy: 32 × 32 matrix")
    if flag is None:
        assert re.search(r"block spectra: +\d+%\|", terminal.getvalue())
    else:
        assert terminal.getvalue() == ""


def test_compare_no_progress_bar_off_a_terminal(files, cli):
    result = cli.run("compare", files["blocks"], "--budget", 256)
    assert result.code == 0 and result.err == ""


def test_compare_paper_rule_on_an_image(files, cli):
    # r = 8, N = 4: Global(8), DiagonalBlocks(4, 2), BlockGrid(2, 1) on a 24 × 20 image.
    out = cli.ok("compare", files["img"], "--rank", 8, "--paper-rule", "--blocks", 4)
    expected = {"LoRA": ("Global(rank=8)", 8 * 44),
                "MELoRA": ("DiagonalBlocks(n_blocks=4, rank=2)", 2 * 44),
                "Localized LoRA": ("BlockGrid(grid=2, rank=1)", 2 * 24 + 2 * 20)}
    for name, (structure, n_params) in expected.items():
        line = table_line(out, name)
        assert structure in line and int(line.split()[-2]) == n_params
        assert 0.0 <= float(line.split()[-1]) <= 1.0
    frame = pd.read_csv(io.StringIO(cli.ok("compare", files["img"], "--rank", 8, "--paper-rule",
                                           "--blocks", 4, "--csv")))
    assert list(frame.columns) == ["paper_name", "family", "structure", "n_params", "error"]
    assert frame["n_params"].tolist() == [n for _, n in expected.values()]
    assert frame["family"].tolist() == list(FAMILIES)


# -- curve and surface ---------------------------------------------------------------------------


def test_curve_writes_csv_and_png(files, cli, tmp_path):
    out_dir = tmp_path / "new" / "figs"
    result = cli.run("curve", files["blocks"], "--budgets", "64,128,256", "--out", out_dir,
                     "--csv")
    assert result.code == 0, result.err
    frame = pd.read_csv(io.StringIO(result.out))
    assert set(frame["paper_name"]) == set(PAPER_NAMES)
    assert set(frame["family"]) == set(FAMILIES)
    assert (frame["n_params"] + frame["rank_overhead"] <= frame["budget"]).all()
    uniform_lora = frame.query("paper_name == 'LoRA' and allocation == 'uniform'")
    assert uniform_lora["n_params"].tolist() == [64, 128, 256]  # r (m + n), r = 1, 2, 4
    uniform = frame.query("allocation == 'uniform'")
    assert [expected_n_params(s, 32, 32) for s in uniform["structure"]] \
        == uniform["n_params"].tolist()
    assert f"wrote {out_dir / 'curve.csv'}" in result.err  # stdout stays pure CSV
    assert pd.read_csv(out_dir / "curve.csv").shape == frame.shape
    assert is_png(out_dir / "curve.png")


def test_curve_no_rank_overhead(files, cli):
    frame = pd.read_csv(io.StringIO(cli.ok("curve", files["blocks"], "--budgets", "64,128,256",
                                           "--allocation", "optimal", "--no-rank-overhead",
                                           "--csv")))
    assert (frame["n_params"] <= frame["budget"]).all()
    # Not charged: some per-block allocation needs rank integers beyond the budget.
    assert (frame["n_params"] + frame["rank_overhead"] > frame["budget"]).any()
    per_block = ~frame["structure"].str.contains(r"rank=\d+\)$")
    assert per_block.any()
    for structure, overhead in zip(frame["structure"][per_block],
                                   frame["rank_overhead"][per_block]):
        assert overhead == expected_rank_overhead(structure)


def test_curve_default_budgets_table(files, cli, tmp_path):
    out = cli.ok("curve", files["blocks"], "--points", 5, "--allocation", "uniform")
    assert "budget" in out and all(name in out for name in PAPER_NAMES)
    rows = [line.split() for line in out.splitlines() if re.match(r"\s*\d+\s+\d+\.\d\s", line)]
    budgets = [int(r[0]) for r in rows]
    assert budgets[0] == 64 and budgets[-1] == 256 and len(budgets) == 5  # m + n .. 25 % of m n
    assert is_png(tmp_path / "results" / "curve.png")
    assert f"wrote {Path('results') / 'curve.png'}" in out


def test_surface_writes_heatmaps(files, cli, tmp_path):
    out = cli.ok("surface", files["blocks"], "--budget", 256, "--out", "surf")
    section = out.split("at most 256 parameters")[1]
    assert section.splitlines()[1].split() == ["paper_name", "grid", "rank", "n_params", "error"]
    first = section.splitlines()[2].split()  # best first: Localized LoRA 4×4, rank 1
    assert first[:4] == ["Localized", "LoRA", "4×4", "1"]
    assert int(first[4]) == 1 * (4 * 32 + 4 * 32)
    for name in ("surface_grid.png", "surface_diagonal.png"):
        assert is_png(tmp_path / "surf" / name)
    surface = pd.read_csv(tmp_path / "surf" / "surface.csv")
    grid = surface.query("family == 'grid'")
    assert (grid["n_params"] == grid["rank"] * (grid["q"] * 32 + grid["p"] * 32)).all()
    assert [expected_n_params(s, 32, 32) for s in surface["structure"]] \
        == surface["n_params"].tolist()
    records = json.loads(cli.ok("surface", files["blocks"], "--grids", "2,2x4", "--json",
                                "--out", "surf2"))
    assert {(r["p"], r["q"]) for r in records if r["family"] == "grid"} == {(2, 2), (2, 4)}
    assert {r["paper_name"] for r in records if r["family"] == "grid"} == {"Localized LoRA"}


def test_surface_families(files, cli, tmp_path):
    result = cli.run("surface", files["blocks"], "--families", "diagonal", "--out", "surf",
                     "--csv")
    assert result.code == 0, result.err
    assert set(pd.read_csv(io.StringIO(result.out))["family"]) == {"diagonal"}
    assert is_png(tmp_path / "surf" / "surface_diagonal.png")
    assert not (tmp_path / "surf" / "surface_grid.png").exists()


# -- scan ----------------------------------------------------------------------------------------


def test_scan_checkpoint(files, cli, tmp_path):
    out = cli.ok("scan", files["model"], "--budget-fraction", 0.25)
    assert "layer1.bias" not in out.split("skipped")[0]
    for name, (m, n) in {"layer1.weight": (48, 40), "layer2.weight": (40, 40)}.items():
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert f"{m} × {n}" in line and str(round(0.25 * m * n)) in line.split()
    assert "1 1-D" in out or "bias" in out  # the bias is listed as skipped, with its reason

    document = json.loads(cli.ok("scan", files["model"], "--budget-fraction", 0.25, "--json"))
    rows = document["matrices"]
    assert [r["name"] for r in rows] == ["layer1.weight", "layer2.weight"]
    for r in rows:
        errors = {f: r[f"error_{f}{a}"] for f in ("global", "diagonal", "grid")
                  for a in ("", "_optimal") if r[f"error_{f}{a}"] is not None}
        assert r["best_error"] == pytest.approx(min(errors.values()), abs=1e-12)
        assert r["best_n_params"] + r["best_rank_overhead"] <= r["budget"]
        for f in ("global", "diagonal", "grid"):
            if r[f"structure_{f}"] is not None:
                assert expected_n_params(r[f"structure_{f}"], r["rows"], r["cols"]) <= r["budget"]
    assert [s["family"] for s in document["summary"]] == ["global", "diagonal", "grid"]
    assert sum(s["wins"] for s in document["summary"]) == 2
    assert [s["name"] for s in document["skipped"]] == ["layer1.bias"]

    frame = pd.read_csv(io.StringIO(cli.ok("scan", files["model"], "--pattern", "layer2*",
                                           "--csv")))
    assert list(frame.columns[:8]) == ["name", "rows", "cols", "budget", "error_global",
                                       "error_diagonal", "error_grid", "best"]
    assert frame["name"].tolist() == ["layer2.weight"]
    assert frame["budget"].tolist() == [round(0.05 * 40 * 40)]  # the default fraction

    lora = pd.read_csv(io.StringIO(cli.ok("scan", files["model"], "--lora-rank", 2, "--csv")))
    assert lora["budget"].tolist() == [2 * (48 + 40), 2 * (40 + 40)]  # r (m + n)

    cli.ok("scan", files["model"], "--lora-rank", 2, "--out", tmp_path / "scan")
    for f in ("scan.csv", "scan.json", "scan_summary.csv", "scan_skipped.csv"):
        assert (tmp_path / "scan" / f).stat().st_size > 0
    assert is_png(tmp_path / "scan" / "scan_heatmap.png")
    assert is_png(tmp_path / "scan" / "scan_bars.png")


def test_scan_families_in_table_order(files, cli):
    document = json.loads(cli.ok("scan", files["model"], "--families", "grid,global", "--json"))
    assert [s["family"] for s in document["summary"]] == ["global", "grid"]
    assert "error_diagonal" not in document["matrices"][0]


# -- reproduce -----------------------------------------------------------------------------------


@pytest.mark.mnist
def test_reproduce_table1(cli, tmp_path):
    records = json.loads(cli.ok("reproduce", "table1", "--json"))
    assert [(r["paper_name"], r["n_params"], round(r["error"], 4)) for r in records] == [
        ("LoRA", 224, 0.2313), ("MELoRA", 224, 0.9071), ("Localized LoRA", 224, 0.2119)]
    out = cli.ok("reproduce", "table1", "--out", "t1")
    assert out.startswith("Table I:") and "matrix rank of the image: 15" in out
    assert pd.read_csv(tmp_path / "t1" / "table1.csv")["n_params"].tolist() == [224] * 3


@pytest.mark.mnist
def test_reproduce_fig1(cli, tmp_path):
    out = cli.ok("reproduce", "fig1", "--out", "figs")
    assert is_png(tmp_path / "figs" / "fig1.png")
    assert f"wrote {Path('figs') / 'fig1.png'}" in out
    for name in PAPER_NAMES:
        assert int(table_line(out, name).split()[-3]) == 224
    best = table_line(out, "best found").split()
    assert int(best[-3]) + int(best[-2]) <= 224  # rank integers charged
    assert float(best[-1]) < 0.2119  # better than the paper's best (Localized LoRA)


# -- bad input: exit status 2 and one line on stderr ---------------------------------------------

BAD = {
    "missing file": ["compare", "{dir}/nope.npy", "--budget", "100"],
    "unreadable file": ["compare", "{garbage}", "--budget", "100"],
    "unknown suffix": ["compare", "{weights}", "--budget", "100"],
    "wrong key": ["compare", "{npz}", "--key", "zz", "--budget", "100"],
    "several arrays, no key": ["compare", "{npz}", "--budget", "100"],
    "1-D array": ["compare", "{vector}", "--budget", "100"],
    "non-integer budget": ["compare", "{blocks}", "--budget", "1.5"],
    "zero budget": ["compare", "{blocks}", "--budget", "0"],
    "text budget": ["compare", "{blocks}", "--budget", "lots"],
    "budget too large": ["compare", "{blocks}", "--budget", str(2**70)],
    "budget below cheapest": ["compare", "{blocks}", "--budget", "10"],
    "no budget or rank": ["compare", "{blocks}"],
    "paper rule without rank": ["compare", "{blocks}", "--paper-rule", "--blocks", "4"],
    "rank without paper rule": ["compare", "{blocks}", "--rank", "8", "--blocks", "4"],
    "rank/N not integer": ["compare", "{blocks}", "--rank", "6", "--paper-rule", "--blocks", "4"],
    "N not a square": ["compare", "{blocks}", "--rank", "8", "--paper-rule", "--blocks", "2"],
    "rank too large": ["compare", "{blocks}", "--rank", "64", "--paper-rule", "--blocks", "4"],
    "rank overhead with paper rule": ["compare", "{blocks}", "--rank", "8", "--paper-rule",
                                      "--blocks", "4", "--no-rank-overhead"],
    "both rank overhead flags": ["compare", "{blocks}", "--budget", "256", "--no-rank-overhead",
                                 "--count-rank-overhead"],
    "csv and json": ["compare", "{blocks}", "--budget", "256", "--csv", "--json"],
    "unknown family": ["compare", "{blocks}", "--budget", "256", "--families", "global,banded"],
    "empty families": ["curve", "{blocks}", "--families", ",", "--out", "{dir}/c"],
    "unknown family in scan": ["scan", "{model}", "--families", "tucker"],
    # (with per-block ranks 8 parameters buy rank-1 terms of small diagonal blocks)
    "budgets below cheapest": ["curve", "{blocks}", "--budgets", "8", "--allocation", "uniform",
                               "--out", "{dir}/c"],
    "bad curve budget": ["curve", "{blocks}", "--budgets", "64,-1", "--out", "{dir}/c"],
    "bad grid": ["surface", "{blocks}", "--grids", "2y3"],
    "grid too large": ["surface", "{small}", "--grids", "16", "--out", "{dir}/s"],
    "no matching weight": ["scan", "{model}", "--pattern", "nothing*"],
    "unknown command": ["frobnicate"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_status_2(files, cli, case):
    where = {k: str(v) for k, v in files.items()}
    result = cli.run(*[a.format(**where) for a in BAD[case]])
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.err
    assert len(lines[0]) > len(ERROR_PREFIX) + 10
    assert result.out == ""


def test_unknown_family_names_the_allowed_ones(files, cli):
    result = cli.run("compare", files["blocks"], "--budget", 256, "--families", "banded")
    assert result.code == 2
    assert "'banded'" in result.err and all(f"'{f}'" in result.err for f in FAMILIES)


def test_traceback_on_request(files, cli, monkeypatch):
    monkeypatch.setenv("LOWRANK_BLOCKS_TRACEBACK", "1")
    with pytest.raises(ValueError, match="below the cheapest configuration"):
        main(["compare", str(files["blocks"]), "--budget", "10"])


# -- the installed command and python -m: one process each ---------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("LOWRANK_BLOCKS_TRACEBACK", None)
    env["MPLBACKEND"] = "Agg"
    return env


def test_console_script(files, tmp_path):
    script = Path(sys.executable).parent / "lowrank-blocks"
    if not script.is_file():
        pytest.skip("the lowrank-blocks console script is not installed (pip install -e .)")
    result = subprocess.run([str(script), "compare", str(files["small"]), "--budget", "32",
                             "--json"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["paper_name"] for r in records] == [*PAPER_NAMES, "best found"]
    assert result.stderr == ""  # no progress bar off a terminal


def test_python_m_lowrank_blocks(files, tmp_path):
    result = subprocess.run([sys.executable, "-m", "lowrank_blocks", "compare",
                             str(files["blocks"]), "--budget", "10"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX + "budget=10 is below")


# -- issue 12: hostile input on the command line: exit status 2, one short line -----------------


def _hostile(tmp_path: Path, kind: str) -> list[str]:
    W = np.random.default_rng(0).standard_normal((16, 16))
    np.save(tmp_path / "w.npy", W)
    w = str(tmp_path / "w.npy")
    if kind == "devzero":
        (tmp_path / "zero.npy").symlink_to("/dev/zero")
        return ["compare", str(tmp_path / "zero.npy"), "--budget", "100"]
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe.csv")
        return ["compare", str(tmp_path / "pipe.csv"), "--budget", "100"]
    if kind == "zip bomb":
        np.savez_compressed(tmp_path / "bomb.npz", W=np.zeros((4096, 4096)))
        return ["compare", str(tmp_path / "bomb.npz"), "--budget", "100"]
    if kind == "100000 names":
        import zipfile

        buffer = io.BytesIO()
        np.save(buffer, np.ones((2, 2)))
        with zipfile.ZipFile(tmp_path / "many.npz", "w") as zf:
            for k in range(100_000):
                zf.writestr(f"w{k}.npy", buffer.getvalue())
        return ["compare", str(tmp_path / "many.npz"), "--key", "nope", "--budget", "100"]
    if kind == "nested safetensors":
        import struct

        blob = ("[" * 50_000 + "]" * 50_000).encode()
        (tmp_path / "deep.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
        return ["compare", str(tmp_path / "deep.safetensors"), "--budget", "100"]
    return {
        "points 10**9": ["curve", w, "--points", str(10**9), "--out", str(tmp_path / "c")],
        "budget 10**30": ["compare", w, "--budget", str(10**30)],
        "budget 2**63": ["compare", w, "--budget", str(2**63)],
        "budgets 10**30": ["curve", w, "--budgets", f"64,{10**30}", "--out", str(tmp_path / "c")],
        "surface budget 10**30": ["surface", w, "--budget", str(10**30), "--out",
                                  str(tmp_path / "s")],
        "blocks 10**30": ["compare", w, "--rank", "8", "--paper-rule", "--blocks", str(10**30)],
        "grids 10**30": ["surface", w, "--grids", str(10**30), "--out", str(tmp_path / "s")],
        "5000-digit budget": ["compare", w, "--budget", "9" * 5000],
    }[kind]


HOSTILE = {
    "devzero": r"zero.npy' is a character device \(it resolves to '/dev/zero'\), not a regular",
    "fifo": r"pipe.csv' is a FIFO \(named pipe\), not a regular file",
    "zip bomb": r"reading array 'W' from .*bomb.npz' would need 128.0 MiB, more than the limit "
                r"of 1.0 MiB \(LOWRANK_BLOCKS_MAX_BYTES\)",
    "100000 names": r"no array named 'nope' in .*many.npz'; available: 'w0', 'w1', 'w2', 'w3', "
                    r"'w4' and 99,995 more$",
    "nested safetensors": r"deep.safetensors' is not a valid .safetensors file \(header JSON is "
                          r"nested too deeply\)",
    "points 10**9": r"points=1000000000 is too large; at most 1,000 is allowed",
    "budget 10**30": r"budget=10{30} is too large; at most 2\*\*62 is allowed",
    "budget 2**63": r"budget=9223372036854775808 is too large; at most 2\*\*62",
    "budgets 10**30": r"budgets=10{30} is too large; at most 2\*\*62",
    "surface budget 10**30": r"budget=10{30} is too large",
    "blocks 10**30": r"blocks=10{30} is too large",
    "grids 10**30": r"--grids entry=10{30} is too large",
    "5000-digit budget": r"budget must be a positive integer, got '9{40}'",
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_input_is_one_short_line_and_status_2(cli, tmp_path, monkeypatch, kind):
    if kind == "devzero" and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    if kind == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs")
    monkeypatch.setenv("LOWRANK_BLOCKS_MAX_BYTES", "1M")
    result = cli.run(*_hostile(tmp_path, kind))
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.err
    assert len(lines[0]) < 400
    assert re.search(HOSTILE[kind], lines[0]), lines[0]
    assert result.out == ""
