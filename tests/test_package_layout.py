"""The package's layout: no import cycles among diffit_hf's modules, no module over `MAX_LINES` lines, and
docs/layout.md names every module that exists (and none that does not)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffit_hf"
MAX_LINES = 400


def module_name(path: Path) -> str:
    """`diffit_hf/pipelines/push.py` -> `diffit_hf.pipelines.push`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str | None, level: int, package: str) -> str:
    """The absolute module name of `from <level dots><name> import ...` written in `package`."""
    if level == 0:
        return name or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{name}" if name else base


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The diffit_hf modules that `path` imports anywhere (top level or inside functions): import statements, and
    `importlib.import_module` calls with a constant name (relative ones resolved against `__package__`)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.module, node.level, package)
            # `from . import push` imports the module `push`; `from .push import push_to_hub` the module `.push`
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            if getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":  # importlib.import_module
                target = node.args[0].value
                level = len(target) - len(target.lstrip("."))
                found.add(resolve(target.lstrip(".") or None, level, package))
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    return {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as `[a, b, ..., a]`, or `None` if it is acyclic (depth-first search)."""
    done, stack = set(), []

    def visit(node: str) -> list[str] | None:
        if node in stack:
            return stack[stack.index(node):] + [node]
        if node in done:
            return None
        stack.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        stack.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_import_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "diffit_hf.pipelines.pipeline_diffit" in graph["diffit_hf.pipelines"]  # package __init__
    assert "diffit_hf.pipelines.hub_mixin" in graph["diffit_hf.pipelines.pipeline_diffit"]  # from .x import y
    assert "diffit_hf.pipelines.model_card" in graph["diffit_hf.training.init_weights"]  # inside a function
    assert "diffit_hf.data.cache_format" in graph["diffit_hf.pipelines.model_card"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_among_the_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_over_the_line_limit():
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
               for path in sorted(PACKAGE.rglob("*.py"))}
    over = {path: n for path, n in lengths.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def test_the_layout_page_names_every_module():
    page = (PACKAGE.parent / "docs" / "layout.md").read_text()
    named = {word for word in page.split() if word.startswith("diffit_hf/") and word.endswith(".py")}
    modules = {str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
               if path.name != "__init__.py" and path.parent != PACKAGE}
    assert named <= {str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")}, named
    listed_folders = {w.rstrip("/") for w in page.split() if w.startswith("diffit_hf/") and w.endswith("/")}
    unlisted = {m for m in modules if m not in named and str(Path(m).parent) not in listed_folders}
    assert not unlisted, f"docs/layout.md does not name {sorted(unlisted)}"
