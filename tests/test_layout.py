"""The layout shows the trust boundary: the worker imports nothing trusted but the wire."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


PACKAGE = ROOT / "autograder"


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {module for module in modules if module.split(".")[0] == "autograder"}


@pytest.mark.parametrize("folder, allowed", [
    ("worker", ("autograder.worker", "autograder.wire")),
    ("wire", ("autograder.wire",)),
])
def test_the_untrusted_side_imports_only_the_wire(folder, allowed):
    for path in sorted((PACKAGE / folder).glob("*.py")):
        # `from autograder import wire` names the package too; its __init__ holds only the version.
        outside = sorted(module for module in _imported_modules(path)
                         if module != "autograder" and not module.startswith(allowed))
        assert outside == [], f"{path.relative_to(ROOT)} imports {outside}"
    assert _imported_modules(PACKAGE / "__init__.py") == set()


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if path.name != "__init__.py" or path.parent != PACKAGE:
            assert f"`{module}`" in page, f"docs/architecture.md does not mention {module}"
