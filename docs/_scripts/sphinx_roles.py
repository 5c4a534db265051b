"""Griffe extension: turn the Sphinx roles of the library's docstrings into Markdown.

The docstrings of ``lowrank_blocks`` are numpydoc with Sphinx cross-reference roles
(``:func:`approximate```, ``:class:`~lowrank_blocks.Global```).  MkDocs renders Markdown, where
those roles would show up as literal text, so this extension rewrites them while the API
reference is built (the library files are not touched):

* a role whose target is an object of ``lowrank_blocks`` that the reference renders becomes a
  mkdocstrings cross-reference ``[`name`][canonical.path]`` (checked by ``mkdocs build --strict``);
* a role naming a NumPy, SciPy or standard-library object becomes a link to its documentation
  page (no inventory is downloaded, so the build works offline);
* anything else becomes inline code, and is listed by :func:`unresolved` (the docs test and the
  maintainers can see which references could not be linked).

The RST literal-block marker ``text::`` becomes ``text:`` (the indented block after it is
already a Markdown code block).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?P<kind>class|func|meth|mod|attr|data|obj|exc):`(?P<tilde>~?)(?P<target>[^`<>]+?)`")
LITERAL_BLOCK = re.compile(r"(?<=\S)::[ \t]*\n")

# Modules the API reference does not render: a target inside them stays inline code.
NOT_RENDERED = ("lowrank_blocks._kernels", "lowrank_blocks.cli")

NUMPY = "https://numpy.org/doc/stable/reference/generated/{}.html"
SCIPY = "https://docs.scipy.org/doc/scipy/reference/generated/{}.html"
PYTHON_EXCEPTIONS = "https://docs.python.org/3/library/exceptions.html#{}"
PYTHON_MODULES = {"fnmatch", "pickle", "os", "pathlib", "gzip", "importlib"}

_UNRESOLVED: list[tuple[str, str]] = []


def unresolved() -> list[tuple[str, str]]:
    """``(object path, role text)`` of every role that could not be linked."""
    return list(_UNRESOLVED)


def _external(target: str) -> str | None:
    head = target.split(".")[0]
    if head == "numpy":
        return NUMPY.format(target)
    if head == "scipy":
        return SCIPY.format(target)
    if head == "array_api_compat":
        return "https://data-apis.org/array-api-compat/"
    if head in PYTHON_MODULES:
        return f"https://docs.python.org/3/library/{head}.html#{target}"
    if target.endswith(("Error", "Exception", "Warning")) and "." not in target:
        return PYTHON_EXCEPTIONS.format(target)
    return None


def _lookup(root: griffe.Module, path: str) -> Any:
    if path == root.path:
        return root
    if not path.startswith(root.path + "."):
        return None
    try:
        obj = root[path[len(root.path) + 1 :]]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    try:
        return obj.final_target if obj.is_alias else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _resolve(root: griffe.Module, where: griffe.Object, target: str) -> Any:
    target = target.lstrip(".")
    scopes = []
    obj: Any = where
    while obj is not None:  # the object itself, its class, its module, ... the package
        scopes.append(obj.path)
        obj = obj.parent
    for scope in scopes:
        found = _lookup(root, f"{scope}.{target}")
        if found is not None:
            return found
    return _lookup(root, target)


def _rewrite(root: griffe.Module, where: griffe.Object, text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        target = match["target"].strip()
        shown = target.split(".")[-1] if match["tilde"] else target
        found = _resolve(root, where, target)
        if found is not None and found.is_module and match["kind"] not in ("mod", "obj"):
            # ``lowrank_blocks.approximate`` is both a module and the function it defines;
            # a :func: or :class: role means the function or class.
            found = _lookup(root, f"{found.path}.{target.split('.')[-1]}") or found
        if found is not None and not found.path.startswith(NOT_RENDERED):
            return f"[`{shown}`][{found.path}]"
        url = _external(target)
        if url is not None:
            return f"[`{shown}`]({url})"
        _UNRESOLVED.append((where.path, match[0]))
        return f"`{shown}`"

    return LITERAL_BLOCK.sub(":\n", ROLE.sub(replace, text))


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles once the whole package is loaded (so every target is known)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(pkg, obj, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)
