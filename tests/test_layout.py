"""The package's layout holds: modules of at most 350 lines, and no import from a folder back up into the
package above it except through the interface the package docstring names."""

import ast
from pathlib import Path

import deap_llmmerge

PACKAGE = Path(deap_llmmerge.__file__).parent
ALLOWED_FROM_ABOVE = {"deap_llmmerge.errors", "deap_llmmerge.devices"}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts), parts[-1] == "__init__"


def test_no_module_is_over_350_lines():
    long = {str(path.relative_to(PACKAGE)): n for path, _, _ in modules()
            if (n := len(path.read_text().splitlines())) > 350}
    assert not long, long


def test_no_module_imports_a_package_above_it_except_the_named_interface():
    wrong = []
    for path, name, is_package in modules():
        folder = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = folder[:len(folder) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
            above = ".".join(folder).startswith(target) and target != ".".join(folder) or \
                (target == ".".join(folder) and not is_package and node.module is None and
                 any(not (PACKAGE.parent / target.replace(".", "/") / f"{a.name}.py").exists() for a in node.names))
            allowed = target in ALLOWED_FROM_ABOVE or (target == "deap_llmmerge" and
                                                       [a.name for a in node.names] == ["__version__"])
            if above and not allowed:
                wrong.append(f"{name}: {ast.unparse(node)}")
    assert not wrong, wrong
