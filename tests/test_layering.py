"""The core's import graph is acyclic and imports sit at module top (issue 21).

The graph is read statically with ``ast`` from the source files, so the test does not depend
on what happens to be imported already.  Deferring an optional third-party dependency
(matplotlib, torch, onnx, mpi4py, dask) into a function is fine; deferring a fastnn module to
dodge a cycle is not.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules():
    mods = {}
    for base, pkg in ((ROOT / "fastnn", "fastnn"), (ROOT / "kernels", "fastnn.kernels")):
        for f in base.rglob("*.py"):
            if "__pycache__" in f.parts:
                continue
            rel = f.relative_to(base).with_suffix("")
            parts = [pkg] + [p for p in rel.parts if p != "__init__"]
            mods[".".join(parts)] = (f, rel.name == "__init__")
    return mods


def _targets(mods, mod, is_pkg, node):
    here = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = here[: len(here) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [target] + [f"{target}.{a.name}" for a in node.names]
    else:
        names = [a.name for a in node.names]
    return [t for t in names if t in mods]


def import_graph():
    """{module: set of fastnn modules it imports} and the list of deferred imports."""
    mods = _modules()
    graph, deferred = {}, []
    for mod, (path, is_pkg) in mods.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = _targets(mods, mod, is_pkg, node)
                if targets and node.col_offset > 0:
                    deferred.append(f"{mod}:{node.lineno} imports {targets[0]}")
                # a package's __init__ importing its own submodules is not a layering edge
                edges.update(t for t in targets if t != mod and not t.startswith(mod + "."))
        graph[mod] = edges
    return graph, deferred


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_core_imports_form_no_cycle():
    graph, _ = import_graph()
    assert "fastnn.training" in graph and graph["fastnn.model"]  # the scan saw the package
    assert cycles(graph) == []


def test_no_fastnn_import_is_deferred_into_a_function():
    _, deferred = import_graph()
    assert deferred == []


def test_layers_below_model_below_io_below_callbacks():
    graph, _ = import_graph()

    def reaches(a, b):
        seen, todo = set(), [a]
        while todo:
            m = todo.pop()
            if m == b:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    assert reaches("fastnn.callbacks", "fastnn.io")
    assert reaches("fastnn.io", "fastnn.model")
    assert reaches("fastnn.model", "fastnn.training")
    for low in ("fastnn.kernels", "fastnn.layers", "fastnn.losses", "fastnn.optim"):
        assert not reaches(low, "fastnn.training"), low
        assert not reaches(low, "fastnn.model"), low
