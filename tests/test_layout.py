"""The package's layout and the one-way imports between its wings, read from the source with ``ast``.

``store`` knows nothing of the engine or the quality tooling; ``engine`` knows nothing of the quality
tooling, the CLI, the demo or the adapters; ``quality`` may stand on the engine but not on the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import minirerank_integrations

PACKAGE = Path(minirerank_integrations.__file__).parent
NAME = "minirerank_integrations"

#: What each wing may import from inside the package (besides itself).
ALLOWED = {
    "store": {"errors"},
    "engine": {"errors", "store", "demo_model"},
    "quality": {"errors", "store", "engine"},
}
#: Third-party frameworks only the adapters may know.
FRAMEWORKS = ("llama_index", "langchain", "langchain_core", "langchain_classic")
#: What may stand at the top of the package, next to the wings.
TOP_LEVEL = {"__init__.py", "errors.py", "demo.py", "tiny_checkpoint.py", "qwen_vocab.py", "testing.py", "py.typed"}
TOP_PACKAGES = {"engine", "store", "quality", "cli", "demo_model", "scale", "bench", "serve"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, absolute, including imports inside functions and TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
            if node.module is None:  # `from . import codec`: each name is a module
                found.extend(f"{target}.{alias.name}" for alias in node.names)
    return found


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == NAME else None


def _sources(wing: str) -> list[Path]:
    files = sorted((PACKAGE / wing).rglob("*.py"))
    assert files, f"the {wing} wing has no modules"
    return files


@pytest.mark.parametrize("wing", sorted(ALLOWED))
def test_wing_imports_run_one_way(wing: str) -> None:
    bad = []
    for path in _sources(wing):
        for target in _imports(path):
            other = _wing(target)
            if other is not None and other != wing and other not in ALLOWED[wing]:
                bad.append(f"{_module_name(path)} imports {target}")
            if target.split(".")[0] in FRAMEWORKS:
                bad.append(f"{_module_name(path)} imports the framework {target}")
    assert not bad, f"{wing} may import only {sorted(ALLOWED[wing])} from the package:\n" + "\n".join(bad)


def test_the_check_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The import reader resolves relative imports and finds imports inside functions."""
    sample = PACKAGE / "engine" / "reranker.py"
    targets = _imports(sample)
    assert f"{NAME}.store" in targets  # `from ..store import ...`
    assert f"{NAME}.engine.config" in targets  # `from .config import ...`
    cli_targets = _imports(PACKAGE / "cli" / "demo.py")
    assert f"{NAME}.demo" in cli_targets  # imported inside the handler


def test_top_level_holds_only_the_wings_and_a_few_modules() -> None:
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    files = {name for name in entries if (PACKAGE / name).is_file()}
    packages = {name for name in entries if (PACKAGE / name).is_dir()}
    assert files <= TOP_LEVEL, f"new modules belong in a wing, not at the top: {sorted(files - TOP_LEVEL)}"
    assert packages == TOP_PACKAGES


@pytest.mark.parametrize("wing", sorted(TOP_PACKAGES - {"demo_model"}))
def test_each_wing_says_what_it_holds(wing: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 20, f"{wing}/__init__.py needs a paragraph saying what it holds"


def test_modules_stay_small() -> None:
    """No package module over 500 lines; the public engine class's module under 400 (``docs/design.md``,
    "Layout"): a module that grows past them holds more than one concern and is split by concern."""
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in PACKAGE.rglob("*.py")}
    assert len(sizes) > 50  # the walk found the package
    too_long = [f"{path.relative_to(PACKAGE)}: {n} lines" for path, n in sizes.items() if n > 500]
    assert not too_long, "split these modules by concern:\n" + "\n".join(too_long)
    reranker = sizes[PACKAGE / "engine" / "reranker.py"]
    assert reranker < 400, f"engine/reranker.py is {reranker} lines: its work belongs in the plan and execution"


#: The core modules an adapter may import besides the package's top level: the remote client, imported lazily.
ADAPTER_REACH = {f"{NAME}.serve.client"}


def test_adapters_use_the_core_through_its_public_names() -> None:
    """The adapters import the core's top level (its exported, pinned names: ``tests/test_public_api.py``), so a
    module moved inside the core never breaks them."""
    sources = [p for p in (PACKAGE.parent / "adapters").rglob("*.py") if "tests" not in p.parts]
    assert len(sources) > 5  # both adapter packages were found
    bad = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith(f"{NAME}."):
                if node.module not in ADAPTER_REACH:
                    bad.append(f"{path.relative_to(PACKAGE.parent)} imports {node.module}")
    assert not bad, "import these from minirerank_integrations (exported there) instead:\n" + "\n".join(bad)
