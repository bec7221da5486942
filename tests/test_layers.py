"""Layers stay layers: no module of the package imports a module of a higher layer.

Every import statement is read with ``ast`` (module level and inside functions alike).
Order, lowest first (see DESIGN.md section 8):

    foundations (errors, geometry, config, registry, serialization, _version, data/formats,
    models/files) → chem → data, metrics → nn → latent → models (and the package's
    ``__init__``, whose ``load_model`` is the models' front door) → training, evaluation,
    experiments → cli → apps
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FOUNDATION = {"atomarch._version", "atomarch.errors", "atomarch.geometry", "atomarch.config",
              "atomarch.registry", "atomarch.serialization", "atomarch.data.formats", "atomarch.models.files"}
LAYERS = [
    ("foundation", FOUNDATION),
    ("chem", {"atomarch.chem"}),
    ("data/metrics", {"atomarch.data", "atomarch.metrics"}),
    ("nn", {"atomarch.nn"}),
    ("latent", {"atomarch.latent"}),
    ("models", {"atomarch.models", "atomarch"}),
    ("training/evaluation/experiments", {"atomarch.training", "atomarch.evaluation", "atomarch.experiments"}),
    ("cli", {"atomarch.cli", "atomarch.__main__"}),
    ("apps", {"apps"}),
]


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a dotted module name (None: not ours). Exact foundation names win over
    their package (``atomarch.models.files`` is a foundation, ``atomarch.models.api`` is not);
    ``atomarch`` itself (the package ``__init__``) counts only as an exact name."""
    if module in FOUNDATION:
        return 0
    best, best_len = None, -1
    for k, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if p == "atomarch" and module != p:
                continue
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = k, len(p)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # ``from atomarch.models import loading`` imports the submodule
            out += [(node.lineno, f"{base}.{a.name}" if layer_of(f"{base}.{a.name}") is not None
                     and (ROOT / Path(*f"{base}.{a.name}".split("."))).with_suffix(".py").is_file() else base)
                    for a in node.names]
    return out


def sources() -> list[Path]:
    return sorted(p for d in ("atomarch", "apps") for p in (ROOT / d).rglob("*.py"))


def upward_imports() -> list[str]:
    bad = []
    for path in sources():
        mine = layer_of(module_name(path))
        assert mine is not None, f"{path} belongs to no layer: add it to LAYERS"
        for line, target in imports(path):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    return bad


def test_no_upward_imports():
    bad = upward_imports()
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


@pytest.mark.parametrize("module, layer", [("atomarch.models.files", 0), ("atomarch.models.api", 5),
                                           ("atomarch.data.formats", 0), ("atomarch.data.graph", 2),
                                           ("atomarch", 5), ("atomarch.errors", 0), ("atomarch.cli", 7), ("apps.explorer.app", 8),
                                           ("numpy", None)])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_the_check_sees_imports_inside_functions(tmp_path):
    src = ROOT / "atomarch" / "latent" / "paths.py"
    assert any(t == "atomarch.errors" for _, t in imports(src))
    tree = ast.parse("def f():\n    from atomarch.cli import main\n")
    assert [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] == ["atomarch.cli"]
