"""Layering rules, checked on the real import graph (relative imports and imports inside
functions included) and in child processes (what importing really loads):

* no core module imports Qt; importing every core module loads no Qt;
* importing every ui module loads no torch (the window appears before torch is imported);
* the ui never imports the command-line module, nor (through any module) Ray;
* there is no import circle among vit_desktop modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vit_desktop"
QT = {"PySide6", "PyQt5", "PyQt6", "shiboken6"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in the file, relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # `from . import x`: x may be a module
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in MODULES else mod)
    return out


def _internal_graph() -> dict[str, set[str]]:
    graph = {}
    for name in MODULES:
        deps = set()
        for imp in _imports(name):
            while imp and imp not in MODULES:  # `import vit_desktop.core.x.y` → the module it names
                imp = imp.rpartition(".")[0]
            if imp and imp != name and imp.startswith("vit_desktop"):
                deps.add(imp)
        graph[name] = deps
    return graph


def test_the_import_graph_sees_relative_and_lazy_imports():
    # The check itself must be able to fail: these imports exist today.
    deps = _internal_graph()
    assert "vit_desktop.core.classifier" in deps["vit_desktop.ui.worker"]  # lazy, inside a slot
    assert "vit_desktop.core.text" in deps["vit_desktop.ui.outcome"]  # relative, at the top


def test_core_never_imports_qt():
    offenders = {
        n: QT & {i.split(".")[0] for i in _imports(n)} for n in MODULES if n.startswith("vit_desktop.core")
    }
    assert not {n: q for n, q in offenders.items() if q}


def test_ui_never_imports_the_command_line_module():
    offenders = [
        n for n in MODULES if n.startswith("vit_desktop.ui") and "vit_desktop.cli" in _internal_graph()[n]
    ]
    assert not offenders


def test_only_the_ray_engine_imports_ray_and_the_ui_never_reaches_it():
    # Ray is an optional extra for the command line's --engine ray; the window never loads it.
    users = sorted(n for n in MODULES if any(i.split(".")[0] == "ray" for i in _imports(n)))
    assert users == ["vit_desktop.core.ray_engine"]
    graph = _internal_graph()
    seen, todo = set(), [n for n in MODULES if n.startswith("vit_desktop.ui")]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(graph[n])
    assert "vit_desktop.core.ray_engine" not in seen


def test_no_import_circles():
    graph = _internal_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
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
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip()


def test_importing_every_ui_module_loads_no_torch():
    ui = sorted(n for n in MODULES if n.startswith("vit_desktop.ui"))
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({n!r})\n" for n in ui)
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    assert _run(code) == "[]"


def test_importing_every_core_module_loads_no_qt():
    core = sorted(n for n in MODULES if n.startswith("vit_desktop.core") and ".demo.train" not in n)
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({n!r})\n" for n in core)
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6')))"
    assert _run(code) == "[]"


def test_command_line_help_loads_no_torch_and_no_qt():
    code = "import sys; from vit_desktop import cli; cli.build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6')))"
    assert _run(code) == "[]"


def test_what_the_ui_draws_with_loads_no_torch():
    # The window renders maps and overlays from cached results on the GUI thread and must
    # appear before torch is imported: these core modules are numpy/Pillow only.
    mods = "maps, overlay, results, images, preprocess, errors, text, paths, export, sources, defaults"
    assert _run(f"import sys; from vit_desktop.core import {mods}; print('torch' in sys.modules)") == "False"


def test_every_package_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PKG.rglob("__init__.py")}
    assert found <= listed, found - listed
    assert "vit_desktop.resources" in listed
    assert cfg["tool"]["setuptools"]["package-dir"]["vit_desktop.resources"] == "resources"


def test_resources_come_from_the_installed_package():
    from importlib import resources

    res = resources.files("vit_desktop.resources")
    assert res.joinpath("demo_shapes.safetensors").is_file()
    assert res.joinpath("demo_shapes.labels.txt").read_text().split() == [
        "circle", "ellipse", "semicircle", "ring", "triangle", "square", "pentagon", "hexagon", "star", "cross",
    ]  # fmt: skip


def test_no_module_is_over_400_lines():
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in MODULES.items()}
    assert not {n: k for n, k in long.items() if k > 400}
