"""The layout's rules (docs/ARCHITECTURE.md, "The folders"), read from the source with `ast`:
the protocol stands on the core, not on the HTTP API; the core imports no transport; no module
imports another's private name; no two modules import each other; app/ itself stays small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in APP.rglob("*.py")
        if not path.name.endswith(("_pb2.py", "_pb2_grpc.py"))
    }


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every `import m` and `from m import a, b` in the file, relative
    imports resolved; `from pkg import mod` also yields `pkg.mod` as a module."""
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [alias.name for alias in node.names]
            found.append((base, names))
            found.extend((f"{base}.{name}", []) for name in names)
    return found


def app_imports(path: Path, known: dict[str, Path]) -> set[str]:
    return {module for module, _ in imports_of(path) if module in known}


def test_app_itself_holds_at_most_eight_modules() -> None:
    direct = sorted(p.name for p in APP.glob("*.py"))
    assert len(direct) <= 8, direct


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("app.oip", "app.api"),  # the protocol stands on the core, not on the HTTP API
        ("app.calls", "app.api"),
        ("app.calls", "app.oip"),
        ("app.serving", "app.api"),
        ("app.serving", "app.oip"),
        ("app.model", "app.serving"),
        ("app.images", "app.serving"),
        ("app.memory", "app.serving"),
        # The cache knows keys, entries and tiers: not the pipeline that consults it.
        ("app.cache", "app.serving"),
        ("app.cache", "app.api"),
        ("app.cache", "app.oip"),
        # The shadow comparison is handed bytes and a class id: it knows no transport and no
        # pipeline.
        ("app.shadow", "app.api"),
        ("app.shadow", "app.oip"),
        ("app.shadow", "app.serving"),
    ],
)
def test_a_layer_does_not_import_the_one_above(layer: str, forbidden: str) -> None:
    known = app_modules()
    offenders = {
        name: sorted(m for m in app_imports(path, known) if m.startswith(forbidden))
        for name, path in known.items()
        if name == layer or name.startswith(layer + ".")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_core_and_the_model_import_no_web_framework() -> None:
    web = ("fastapi", "starlette", "grpc")
    parts = ("app.serving", "app.model", "app.images", "app.memory", "app.settings", "app.cache",
             "app.shadow")  # fmt: skip
    offenders = {
        name: sorted({m for m, _ in imports_of(path) if m.split(".")[0] in web})
        for name, path in app_modules().items()
        if name.startswith(parts)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imported_modules(path: Path, *, in_functions: bool) -> set[str]:
    """What a module imports: each module's dotted name, and `module.name` for `from module
    import name` (it may be a submodule). `if TYPE_CHECKING:` blocks are left out (annotations
    only), and function bodies too unless `in_functions` (imports deferred to a call).
    Relative imports are left out: the app uses absolute ones."""

    def walk(nodes: list[ast.stmt]) -> set[str]:
        found: set[str] = set()
        for node in nodes:
            if not in_functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                found |= walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    found |= walk([n for n in inner if isinstance(n, ast.stmt)])
                    found |= walk(
                        [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body]
                    )
        return found

    return walk(ast.parse(path.read_text()).body)


def runtime_imports(path: Path) -> set[str]:
    """Top-level package names imported when the module runs, deferred imports included."""
    return {name.split(".")[0] for name in imported_modules(path, in_functions=True)}


def test_the_core_is_engine_neutral() -> None:
    # numpy arrays between the stages: torch belongs to the model's backends (and the build).
    engine = {"torch", "torchvision", "openvino"}
    parts = ("app.serving", "app.images", "app.oip", "app.api", "app.calls", "app.memory",
             "app.shadow")  # fmt: skip
    offenders = {
        name: sorted(runtime_imports(path) & engine)
        for name, path in app_modules().items()
        if name.startswith(parts)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def import_time_imports(path: Path) -> set[str]:
    """Modules imported when this module itself is imported (not those deferred to a call)."""
    return imported_modules(path, in_functions=False)


# The modules that need torch when imported: the torch backend, the conversion, the weights
# (torchvision's metadata), and the build-time steps. The CPU image has no torch: nothing else
# may reach torch at import time, directly or through another module of the app
# (tests/model/test_ir.py runs a server without torch to prove the same at run time).
TORCH_MODULES = {
    "app.model.weights",
    "app.model.bake",
    "app.model.backends.torch_backend",
    "app.model.backends.convert",
    "app.model.ir.build",
}


def test_only_the_torch_modules_import_torch_when_imported() -> None:
    known = app_modules()
    direct = {name: import_time_imports(path) for name, path in known.items()}
    torch = {"torch", "torchvision"}
    reaches = {name: {m for m in found if m in known} for name, found in direct.items()}
    needs_torch = {
        name for name, found in direct.items() if {m.split(".")[0] for m in found} & torch
    }
    changed = True
    while changed:  # through other modules of the app: the closure of import-time imports
        changed = False
        for name, targets in reaches.items():
            if name not in needs_torch and targets & needs_torch:
                needs_torch.add(name)
                changed = True
    assert needs_torch == TORCH_MODULES


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = []
    for name, path in app_modules().items():
        for module, names in imports_of(path):
            if module.startswith("app") and module != name:
                offenders += [f"{name}: {module}.{n}" for n in names if private(n)]
    assert offenders == []


def test_no_two_modules_import_each_other() -> None:
    known = app_modules()
    graph = {name: app_imports(path, known) for name, path in known.items()}
    # A package's __init__ importing its own modules is how packages work; not a cycle.
    pairs = sorted(
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if a < b
        and a in graph.get(b, set())
        and not (b.startswith(a + ".") or a.startswith(b + "."))
    )
    assert pairs == []


def test_the_rules_can_see_an_import() -> None:
    # The reader itself: a rule that finds nothing because the reader finds nothing proves nothing.
    path = APP / "oip" / "served_model.py"
    assert "app.serving.pipeline" in app_imports(path, app_modules())
    assert ("app.serving.pipeline", ["ImageSource"]) in imports_of(path)
