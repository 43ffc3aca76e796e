"""Imports point one way (SPEC §9): no module of the repository imports, directly or through
others, a module that imports it back. Read from the source (every import statement, also
those inside functions), so a cycle hidden behind a lazy import counts too."""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "__pycache__", "node_modules", "runs", "log", "shared"}


def repo_modules(root: str) -> dict[str, str]:
    """Dotted module name -> file, for every .py under root (a package's __init__ is the package)."""
    mods = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("."))
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), root)[:-3].replace(os.sep, ".")
                mods[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
    return mods


def import_graph(root: str) -> dict[str, set[str]]:
    """Module -> the repository modules it imports."""
    mods = repo_modules(root)
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(p for p in parts + [base] if p)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[mod].update(t for t in targets if t in mods and t != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_repository_has_no_import_cycle():
    graph = import_graph(REPO)
    assert {"datasets.convert_scribbles", "datasets.labelme", "datasets.strokes"} <= set(graph)
    assert cycles(graph) == []


def test_scribble_converters_depend_one_way():
    graph = import_graph(REPO)
    # the XML tool's CLI dispatches to labelme; both draw with datasets.strokes
    assert "datasets.labelme" in graph["datasets.convert_scribbles"]
    assert "datasets.convert_scribbles" not in graph["datasets.labelme"]
    assert "datasets.strokes" in graph["datasets.labelme"]
    assert "datasets.strokes" in graph["datasets.convert_scribbles"]


def test_a_cycle_is_found_even_behind_a_lazy_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text("from . import a\n")   # relative, and no cycle through c
    graph = import_graph(str(tmp_path))
    assert graph["pkg.c"] == {"pkg", "pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
