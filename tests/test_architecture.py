"""The layout rules of jaxmetric/ (docs/contributing.md): imports only go downward (no circle,
no import inside a function but of an optional dependency), no ``globals()`` rewriting, every
public function of the API modules behind the front door, no function body over 80 lines."""
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxmetric"
# Imported where used: the package works without them (extras "examples" / "faiss").
OPTIONAL_DEPENDENCIES = {"faiss", "sklearn", "tqdm"}
# The modules whose public functions take user input (losses, miners, masks, reductions,
# regularizers, wrappers, multi-label metrics): each such function goes through
# jaxmetric/_src/front_door.py.
API_MODULES = ["jaxmetric.masks", "jaxmetric.reduce", "jaxmetric.metrics", "jaxmetric.miners",
               "jaxmetric.regularizers", "jaxmetric.wrappers"] + sorted(
    f"jaxmetric.losses.{p.stem}" for p in (PACKAGE / "losses").glob("*.py") if not p.stem.startswith("_"))


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text())


def _imported_modules(tree, known):
    """The jaxmetric modules a module imports at its top level (run time, not TYPE_CHECKING)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxmetric"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("jaxmetric"))
    return out


def test_no_import_circle():
    modules = {name: tree for name, _, tree in _modules()}
    # A package's __init__ imports its submodules: edges into a package are not cycles.
    graph = {n: {d for d in _imported_modules(t, modules) if d != n and d not in ("jaxmetric", "jaxmetric.losses")}
             for n, t in modules.items()}
    state = {}

    def visit(n, path):
        state[n] = "open"
        for d in sorted(graph.get(n, ())):
            if state.get(d) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_imports_at_the_top_only_optional_dependencies_inside_functions():
    inside = []
    for name, path, tree in _modules():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    roots = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    roots = {(node.module or "").split(".")[0]}
                else:
                    continue
                if not roots <= OPTIONAL_DEPENDENCIES:
                    inside.append(f"{path.relative_to(ROOT)}:{node.lineno} ({fn.name})")
    assert not inside, inside


def test_no_globals_rewriting():
    found = [str(path.relative_to(ROOT)) for _, path, tree in _modules()
             if any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "globals" for n in ast.walk(tree))]
    assert not found, found


def _public_functions():
    """Every function of the public surface (the ``__all__`` of the package and its public
    modules) defined in an API module."""
    import jaxmetric

    spaces = [jaxmetric] + [importlib.import_module(m) for m in API_MODULES]
    found = {}
    for space in spaces:
        for name in getattr(space, "__all__", ()):
            obj = getattr(space, name)
            if callable(obj) and not isinstance(obj, type) and getattr(obj, "__module__", None) in API_MODULES:
                found[f"{obj.__module__}.{name}"] = obj
    return found


def test_every_public_function_is_behind_the_front_door():
    functions = _public_functions()
    assert len(functions) > 100
    missing = [name for name, obj in functions.items()
               if not getattr(getattr(obj, "__code__", None), "co_filename", "").endswith("front_door.py")]
    assert not missing, f"not decorated with @front_door: {missing}"


def test_no_function_body_over_80_lines():
    long = []
    for _, path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]  # the docstring is not code
                lines = node.end_lineno - body[0].lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


COLLECTIVES = {"psum", "pmean", "pmax", "pmin", "all_gather", "ppermute", "psum_scatter", "all_to_all", "axis_index", "axis_size"}


def test_only_collectives_calls_collectives():
    calls = []
    for _, path, tree in _modules():
        if path.name == "collectives.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in COLLECTIVES and isinstance(node.value, ast.Attribute) and node.value.attr == "lax":
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno} lax.{node.attr}")
    assert not calls, calls


def test_one_block_loop():
    """Every loss's ``block_size`` runs through jaxmetric/_src/blocks.map_blocks; evaluation's kNN
    search has its own query loop."""
    loops = []
    for _, path, tree in _modules():
        if path.name in ("blocks.py", "evaluation.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("map", "scan", "fori_loop", "while_loop") and getattr(node.value, "attr", None) == "lax":
                if node.attr == "fori_loop" and path.name == "triplets.py":
                    continue  # the binary search of first_false, not a loop over blocks
                loops.append(f"{path.relative_to(ROOT)}:{node.lineno} lax.{node.attr}")
    assert not loops, loops
