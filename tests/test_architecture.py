"""The house rules, checked on the source: one namespace, no import cycle, arrows only point down
the layers, and no private name is imported from another module.

Every import counts, including those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: a module may import its own layer and the layers before it, never one after it.
LAYERS = (
    ("core", "accelflow.core"),
    ("storage", "accelflow.storage"),
    ("reports", "accelflow.reports"),
    ("formats", "accelflow.formats"),
    ("engines", "accelflow.engines"),
    ("tasks", "accelflow.tasks"),
    ("flows", "accelflow.flows"),
    ("flows/service", "accelflow.flows.service"),
    ("flows/cli", "accelflow.flows.cli"),
    ("accelflow", "accelflow"),
)
OLD_TOP_LEVEL = ("core", "storage", "reports", "formats", "engines", "tasks", "flows")


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in LAYERS:
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    """The index of the innermost layer package holding the module."""
    matches = [(len(package), i) for i, (_, package) in enumerate(LAYERS)
               if module == package or module.startswith(package + ".")]
    return max(matches)[1]


def _imports(module: str, path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for each project import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub, "", node.lineno) if sub in MODULES else (node.module, a.name, node.lineno))
    return [(m, n, line) for m, n, line in found if m.split(".")[0] in ("accelflow",) + OLD_TOP_LEVEL]


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def test_every_import_uses_the_accelflow_namespace():
    wrong = [f"{_where(m, line)} imports {target}" for m, imports in GRAPH.items()
             for target, _, line in imports if not target.startswith("accelflow")]
    assert not wrong, "\n".join(wrong)


def test_every_imported_project_module_exists():
    missing = [f"{_where(m, line)} imports {target}" for m, imports in GRAPH.items()
               for target, _, line in imports if target not in MODULES]
    assert not missing, "\n".join(missing)


def test_arrows_only_point_down_the_layers():
    upward = [f"{_where(m, line)}: {m} imports {target}" for m, imports in GRAPH.items()
              for target, _, line in imports if target in MODULES and _layer(target) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_no_private_name_is_imported_from_another_module():
    private = [f"{_where(m, line)}: {name} from {target}" for m, imports in GRAPH.items()
               for target, name, line in imports if name.startswith("_") and target != m]
    assert not private, "\n".join(private)


def _private_uses(path: Path) -> list[tuple[str, int]]:
    """`module._name` where `module` is a project module imported under that local name."""
    tree = ast.parse(path.read_text(), str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("accelflow"):
            modules |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in MODULES}
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.asname and a.name in MODULES}
    return [(f"{node.value.id}.{node.attr}", node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
            and node.attr.startswith("_") and not node.attr.startswith("__")]


def test_no_private_name_of_another_module_is_used():
    private = [f"{_where(m, line)}: {name}" for m, path in MODULES.items() for name, line in _private_uses(path)]
    assert not private, "\n".join(private)


def test_no_import_cycle():
    edges = {m: sorted({t for t, _, _ in imports if t in MODULES and t != m}) for m, imports in GRAPH.items()}
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    assert not cycles, "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_check_finds_a_cycle_and_an_upward_arrow():
    components = _strongly_connected({"a": ["b"], "b": ["a"], "c": ["a"]})
    assert sorted(sorted(c) for c in components) == [["a", "b"], ["c"]]
    assert _layer("accelflow.flows.cli.main") > _layer("accelflow.flows.optimize") > _layer("accelflow.core.errors")


# tests/ mirrors the code: every module of these folders has tests/<folder>/test_<module>.py.
MIRRORED = ("core", "storage", "tasks")
# Modules without a test module of their own, each for a reason (folder/module.py).
NO_TEST_MODULE = (
    # Only the Prefect @task wrappers of the step functions: each step is tested in its own
    # module (tests/tasks/test_<step>.py), the wrappers by every flow test in tests/flows/.
    "tasks/steps.py",
)


def test_every_module_has_its_test_module():
    missing = [f"{folder}/{path.name}: no tests/{folder}/test_{path.name}"
               for folder in MIRRORED for path in sorted((ROOT / folder).glob("*.py"))
               if path.stem != "__init__" and f"{folder}/{path.name}" not in NO_TEST_MODULE
               and not (ROOT / "tests" / folder / f"test_{path.name}").is_file()]
    assert not missing, "\n".join(missing)


def test_every_exemption_still_needs_one():
    stale = [f"{rel}: no such module" for rel in NO_TEST_MODULE if not (ROOT / rel).is_file()]
    stale += [f"{rel}: has tests/{rel.rsplit('/', 1)[0]}/test_{rel.rsplit('/', 1)[1]} now; drop the exemption"
              for rel in NO_TEST_MODULE
              if (ROOT / "tests" / rel.rsplit("/", 1)[0] / f"test_{rel.rsplit('/', 1)[1]}").is_file()]
    assert not stale, "\n".join(stale)


def test_every_test_folder_is_a_package():
    """`from tests.flows.service.test_server import service` and the like need every folder
    under tests/ to be a package (and pytest then names modules by their full path)."""
    missing = [str(d.relative_to(ROOT)) for d in sorted((ROOT / "tests").rglob("*"))
               if d.is_dir() and d.name != "__pycache__" and not d.name.startswith(".")
               and any(d.glob("*.py")) and not (d / "__init__.py").is_file()]
    assert not missing, "no __init__.py in: " + ", ".join(missing)


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative over the recursion it would otherwise need."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(edges.get(root, ())))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    out.append(component)
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges.get(child, ()))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for node in edges:
        if node not in index:
            visit(node)
    return out
