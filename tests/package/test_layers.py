"""The package's shape (docs/architecture.md): every module sits in a layer and imports only
from its own layer or lower ones, there is no import cycle, the core stays small, importing
the core or ``ops`` loads no model, and functions stay short enough to read."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from tests.paths import ROOT

PACKAGE = ROOT / "yolact_lite"
LOWER_LAYERS = ("yolact_lite.config", "yolact_lite.model", "yolact_lite.ops", "yolact_lite.data")
MOVED = ("predictor", "backends", "postprocess", "export", "video", "tiling", "tracking", "visualize",
         "agreement", "results")
MAX_INFERENCE_FUNCTION_LINES = 60
MAX_FUNCTION_LINES = 80
MAX_CORE_MODULES = 8

# Lowest first; a module imports only from its own layer or a lower one.  The core is every
# module loose at the top of the package (plus the config package and the _C extension).
LAYERS = (
    ("core", ()),
    ("model / ops", ("model", "ops")),
    ("data / loss / checkpoint", ("data", "loss", "checkpoint")),
    ("inference", ("inference",)),
    ("evaluation", ("evaluation",)),
    ("engine", ("engine",)),
    ("cli", ("cli", "__main__", "")),  # "": the package's own __init__ (lazy exports of every layer)
)
CORE_PACKAGES = ("config",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: Set[str]) -> Set[str]:
    """The package modules ``path`` imports anywhere in it (lazy imports included):
    ``import a.b``, ``from a import b`` (module b or a name of a), ``from . import x``,
    ``from ..x import y``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                found.add(submodule if submodule in known else origin)
    return {m for m in found if m in known and m != name}


@functools.lru_cache(maxsize=None)
def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package modules it imports. Compiled extensions (``_C``) are modules
    too (``from yolact_lite import _C`` imports the extension, not the package's names),
    without imports of their own."""
    files = sorted(PACKAGE.rglob("*.py"))
    extensions = {_extension_name(f) for f in PACKAGE.rglob("*.so")}
    known = {module_name(f) for f in files} | extensions
    graph = {module_name(f): imported_modules(f, known) for f in files}
    graph.update({name: set() for name in extensions})
    return graph


def _extension_name(path: Path) -> str:
    """``yolact_lite/_C.cpython-311-x86_64-linux-gnu.so`` -> ``yolact_lite._C``."""
    return module_name(path.with_name(path.name.split(".")[0] + ".py"))


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a list of modules (first == last), or [] when there is none."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of a module of the package."""
    parts = module.split(".")[1:]
    first = parts[0] if parts else ""
    for index, (_, packages) in enumerate(LAYERS):
        if first in packages:
            return index
    return 0  # a core module, or a core package such as config


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    """``"importer -> imported"`` for every import of a higher layer than the importer's."""
    return sorted(f"{module} -> {imported}" for module, imports in graph.items() for imported in imports
                  if layer_of(imported) > layer_of(module))


def test_layer_check_fails_on_an_upward_import_or_a_cycle():
    """The checks themselves, on a fake module tree: a clean tree passes; adding an import of
    a higher layer, or one that closes a cycle, is caught."""
    clean = {
        "yolact_lite.errors": set(),
        "yolact_lite.config.schema": {"yolact_lite.errors"},
        "yolact_lite.model.yolact": {"yolact_lite.config.schema"},
        "yolact_lite.loss.criterion": {"yolact_lite.model.yolact", "yolact_lite.data.stats"},
        "yolact_lite.data.stats": {"yolact_lite.errors"},
        "yolact_lite.inference.predictor": {"yolact_lite.checkpoint.files"},
        "yolact_lite.checkpoint.files": {"yolact_lite.model.yolact"},
        "yolact_lite.cli.train": {"yolact_lite.engine.trainer"},
        "yolact_lite.engine.trainer": {"yolact_lite.inference.predictor"},
    }
    assert upward_imports(clean) == [] and find_cycle(clean) == []
    upward = {**clean, "yolact_lite.model.yolact": {"yolact_lite.config.schema", "yolact_lite.inference.predictor"}}
    assert upward_imports(upward) == ["yolact_lite.model.yolact -> yolact_lite.inference.predictor"]
    core_up = {**clean, "yolact_lite.errors": {"yolact_lite.engine.trainer"}}
    assert upward_imports(core_up) == ["yolact_lite.errors -> yolact_lite.engine.trainer"]
    peers = {**clean, "yolact_lite.data.stats": {"yolact_lite.loss.criterion"}}  # same layer: allowed ...
    assert upward_imports(peers) == []
    assert find_cycle(peers) == ["yolact_lite.data.stats", "yolact_lite.loss.criterion",
                                 "yolact_lite.data.stats"]  # ... but not in a cycle


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(import_graph()) == []


def test_every_package_is_in_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    named = {name for _, names in LAYERS for name in names} | set(CORE_PACKAGES)
    assert packages - named == set()


def test_core_is_small():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(loose) <= MAX_CORE_MODULES, loose


def test_every_package_says_what_it_may_import():
    missing = [p.parent.name for p in PACKAGE.glob("*/__init__.py")
               if "Layer:" not in (ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or "")]
    assert missing == []


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_relative_imports_are_resolved():
    graph = import_graph()
    assert "yolact_lite.model.outputs" in graph["yolact_lite.inference.runtimes"]  # from ..model.outputs
    assert "yolact_lite.inference.export" in graph["yolact_lite.inference.runtime_choice"]  # from .export


def missing_import_origins(source: str, name: str, known: Set[str], is_package: bool = False) -> List[str]:
    """``"module: from X import ..."`` for every import in ``source`` (module ``name``; lazy
    imports too) whose package-internal origin X is no module of the package: such an import
    fails only when its line runs, which a test that never takes that branch does not notice."""
    package = name if is_package else name.rpartition(".")[0]
    missing = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("yolact_lite")):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            origin = ".".join(base + ([node.module] if node.module else []))
            if origin not in known:
                written = "." * node.level + (node.module or "")
                missing.append(f"{name}: from {written} import ... ({origin} does not exist)")
        elif isinstance(node, ast.Import):
            missing += [f"{name}: import {a.name}" for a in node.names
                        if a.name.startswith("yolact_lite.") and a.name not in known]
    return missing


def test_every_import_inside_the_package_names_a_module_that_exists():
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files} | {"yolact_lite._C"}
    assert [line for f in files for line in missing_import_origins(
        f.read_text(encoding="utf-8"), module_name(f), known, f.name == "__init__.py")] == []


def test_a_relative_import_one_level_too_shallow_is_found():
    known = {module_name(f) for f in PACKAGE.rglob("*.py")}
    name = "yolact_lite.engine.hooks.metrics"
    assert missing_import_origins("def f():\n    from ...progress import progress_bar\n", name, known) == []
    assert missing_import_origins("def f():\n    from ..progress import progress_bar\n", name, known) == [
        f"{name}: from ..progress import ... (yolact_lite.engine.progress does not exist)"]
    assert missing_import_origins("import yolact_lite.nothere\n", name, known) == [
        f"{name}: import yolact_lite.nothere"]


def test_no_import_cycle():
    assert find_cycle(import_graph()) == []


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_lower_layers_import_nothing_from_inference(layer):
    offending = {
        module: sorted(m for m in imports if m.startswith("yolact_lite.inference"))
        for module, imports in import_graph().items()
        if module == layer or module.startswith(layer + ".")
    }
    assert {m: i for m, i in offending.items() if i} == {}


def test_exporter_imports_no_runtime():
    """export writes files; the runtimes that need a file import it, never the reverse."""
    imports = import_graph()["yolact_lite.inference.export"]
    assert not {m for m in imports if m.startswith("yolact_lite.inference.runtime")}


def test_inference_modules_are_not_left_at_the_top_level():
    assert [name for name in MOVED if (PACKAGE / f"{name}.py").exists()] == []


def long_functions(paths, limit: int) -> List[str]:
    long = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({lines} lines)")
    return long


def test_inference_functions_are_short():
    assert long_functions(sorted((PACKAGE / "inference").glob("*.py")), MAX_INFERENCE_FUNCTION_LINES) == []


def test_no_function_is_long():
    assert long_functions(sorted(PACKAGE.rglob("*.py")), MAX_FUNCTION_LINES) == []


def test_public_names_import_from_the_package_lazily():
    code = (
        "import sys, yolact_lite\n"
        "assert not [m for m in sys.modules if m.startswith('yolact_lite.inference')], 'eager inference import'\n"
        "import yolact_lite as y\n"
        "missing = [n for n in y.__all__ if getattr(y, n, None) is None]\n"
        "assert not missing, missing\n"
        "from yolact_lite.inference.predictor import Predictor\n"
        "assert y.Predictor is Predictor\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_unknown_package_attribute_is_an_attribute_error():
    import yolact_lite

    with pytest.raises(AttributeError, match="no attribute 'predictor'"):
        yolact_lite.predictor  # noqa: B018 - the old module path is gone, not aliased


@pytest.mark.parametrize("module", ["yolact_lite.config", "yolact_lite.ops", "yolact_lite.structures"])
def test_core_and_ops_load_no_model(module):
    code = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('yolact_lite.model', 'yolact_lite.inference',"
        " 'yolact_lite.engine', 'yolact_lite.data', 'yolact_lite.loss', 'yolact_lite.checkpoint')))\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


MAX_TRAINER_LINES = 250
MAX_ENGINE_FILE_LINES = 400


def test_engine_stays_small():
    """The Trainer wires parts together; the parts live in their own engine modules."""
    engine = PACKAGE / "engine"
    tree = ast.parse((engine / "trainer.py").read_text(encoding="utf-8"))
    (trainer,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer"]
    assert trainer.end_lineno - trainer.lineno + 1 <= MAX_TRAINER_LINES
    long = {p.name: n for p in engine.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_ENGINE_FILE_LINES}
    assert long == {}
