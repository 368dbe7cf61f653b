"""Imports have no side effects and no cycles; the parameter and kernel-module lists are complete.

Side effects are checked in a fresh interpreter (this one has imported wsim and initialised Warp long
ago); cycles from the source with ``ast`` (module-level imports only: an import inside a function
runs when called and cannot form an import-time cycle).
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import wsim
from wsim.device import KERNEL_MODULES, deterministic_requested, malloc_tuning_requested
from wsim.errors import ConfigError
from wsim.parameters import PARAMETER_MODULES, PARAMETERS, collect

PACKAGE = Path(wsim.__file__).resolve().parent
ROOT = PACKAGE.parent


def _python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    environment.pop("WSIM_DETERMINISTIC", None)
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          cwd=ROOT, timeout=300)


def _modules() -> dict[str, Path]:
    """Dotted name -> source file of every module of the package."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _module_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """wsim modules imported at module level by ``name`` (``from . import x`` counts module x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:  # top-level statements only: no function bodies
        statements = [node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # never runs
        if isinstance(node, (ast.If, ast.Try)):  # guarded imports still run at import time
            statements = list(ast.walk(node))
        for statement in statements:
            if isinstance(statement, ast.Import):
                targets = [alias.name for alias in statement.names]
            elif isinstance(statement, ast.ImportFrom):
                if statement.level:
                    base = package.split(".")
                    base = base[:len(base) - (statement.level - 1)]
                    module = ".".join(base + ([statement.module] if statement.module else []))
                else:
                    module = statement.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in statement.names]
            else:
                continue
            for target in targets:
                # importing a.b.c runs a, a.b and a.b.c; each package __init__ counts
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    candidate = ".".join(parts[:i])
                    if candidate in known and candidate != name:
                        found.add(candidate)
    return found


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return stack[stack.index(successor):] + [successor]
            if successor not in state:
                cycle = visit(successor)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        imports = _module_level_imports(name, path, known)
        # a package's own submodules import the package first; that edge is no cycle Python trips on
        graph[name] = {m for m in imports if not name.startswith(m + ".")}
    return graph


def test_no_import_cycle_among_wsim_modules():
    graph = _graph()
    assert len(graph) > 40 and "wsim.geometry.tetmesh" in graph["wsim.builder"]
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    graph = _graph()
    graph["wsim.geometry.surface"] = graph["wsim.geometry.surface"] | {"wsim.builder"}  # builder -> surface
    cycle = _find_cycle(graph)
    assert cycle and cycle[0] == cycle[-1] and {"wsim.builder", "wsim.geometry.surface"} <= set(cycle)


def test_import_changes_no_warp_config_and_compiles_nothing():
    code = """
import json, warp as wp
import warp._src.context as context
def snapshot():
    return {k: repr(getattr(wp.config, k)) for k in dir(wp.config) if not k.startswith("_")
            and not callable(getattr(wp.config, k)) and not isinstance(getattr(wp.config, k), type)}
before = snapshot()
import pkgutil, importlib, wsim
names = [m.name for m in pkgutil.walk_packages(wsim.__path__, "wsim.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
after = snapshot()
print(json.dumps({"changed": sorted(k for k in before if before[k] != after[k]), "modules": len(names),
                  "initialised": context.runtime is not None}))
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] > 40
    assert report["changed"] == []
    assert report["initialised"] is False  # Warp compiles nothing before it is initialised
    assert result.stderr == ""


def test_init_is_quiet_and_opts_in_wsim_modules_only():
    code = """
import json, warp as wp
from wsim.device import init_warp
init_warp()
def name(mode):
    return wp.DeterministicMode(mode).name
print(json.dumps({"fem": name(wp.get_module_options("wsim.models.fem")["deterministic"]),
                  "global": name(wp.config.deterministic),
                  "other": name(wp.get_module_options("not_wsim")["deterministic"])}))
"""
    opted = _python(code, WSIM_DETERMINISTIC="1")
    assert opted.returncode == 0, opted.stderr
    assert opted.stderr == "" and len(opted.stdout.strip().splitlines()) == 1  # no driver warning, no banner
    report = json.loads(opted.stdout)
    assert report == {"fem": "RUN_TO_RUN", "global": "NOT_GUARANTEED", "other": "NOT_GUARANTEED"}


@pytest.mark.parametrize("variable, requested, default", [
    ("WSIM_DETERMINISTIC", deterministic_requested, False),  # deterministic atomics: opt in
    ("WSIM_MALLOC_TUNING", malloc_tuning_requested, True),  # malloc thresholds: opt out
])
def test_environment_switches(monkeypatch, variable, requested, default):
    monkeypatch.delenv(variable, raising=False)
    assert requested() is default
    for value, expected in (("1", True), ("on", True), ("Yes", True), ("0", False), ("False", False), ("off", False)):
        monkeypatch.setenv(variable, value)
        assert requested() is expected
    monkeypatch.setenv(variable, "maybe")
    with pytest.raises(ConfigError, match=f"{variable}='maybe'"):
        requested()


def _defines(path: Path, predicate) -> bool:
    return any(predicate(node) for node in ast.walk(ast.parse(path.read_text())))


def _is_kernel_decorator(node) -> bool:
    if not isinstance(node, (ast.FunctionDef,)):
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("kernel", "func") and \
                isinstance(target.value, ast.Name) and target.value.id == "wp":
            return True
    return False


def _declares_parameters(node) -> bool:
    return isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PARAMETER_SPECS"
                                                 for t in node.targets)


def test_kernel_and_parameter_module_lists_are_complete():
    modules = _modules()
    with_kernels = {name for name, path in modules.items() if _defines(path, _is_kernel_decorator)}
    assert with_kernels == set(KERNEL_MODULES)
    declaring = {name for name, path in modules.items() if _defines(path, _declares_parameters)}
    assert declaring == set(PARAMETER_MODULES)


def test_registry_collects_every_declaration_once():
    total = sum(len(__import__(name, fromlist=["_"]).PARAMETER_SPECS) for name in PARAMETER_MODULES)
    assert len(PARAMETERS) == total
    for name in ("gravity", "body_mass", "lame_mu", "contact_ke", "particle_position"):
        assert PARAMETERS[name].name == name
    with pytest.raises(ValueError, match="declared by both"):
        collect(PARAMETER_MODULES + ("wsim.models.fem",))


_PAGE_FAULTS = """
import ctypes, resource, sys, torch
import wsim
# glibc's default thresholds, fixed (no automatic raising): every 4 MB block below is mapped anew
ctypes.CDLL(None).mallopt(-3, 128 << 10)
ctypes.CDLL(None).mallopt(-1, 128 << 10)
if sys.argv[1] == "init":
    from wsim.device import init_warp
    init_warp()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def cycle():  # a render's worth of live buffers, 8 x 4 MB, written and freed
    blocks = [torch.ones(1 << 20) for _ in range(8)]
    del blocks
cycle()
start = faults()
for _ in range(16):
    cycle()
print(faults() - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs glibc (Linux): mallopt and its thresholds")
def test_host_allocator_keeps_freed_pages_after_init_only():
    """init_warp sets glibc's malloc thresholds so that freed buffers stay mapped: the next render's
    buffers do not fault their pages in again (measured: 6.7 of a 46 ms render). Importing wsim does not,
    and WSIM_MALLOC_TUNING=0 or the user's own MALLOC_TRIM_THRESHOLD_ leaves malloc alone."""
    def faults(mode, **env):
        run = subprocess.run([sys.executable, "-c", _PAGE_FAULTS, mode], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env},
                             cwd=ROOT, timeout=300)
        assert run.returncode == 0, run.stderr
        return int(run.stdout.strip().splitlines()[-1])

    pages = 16 * 8 * (4 << 20) // 4096  # what the cycles touch
    assert faults("init") < 0.25 * pages  # measured: 5-10 %
    assert faults("import") > 0.8 * pages
    assert faults("init", WSIM_MALLOC_TUNING="0") > 0.8 * pages
    assert faults("init", MALLOC_TRIM_THRESHOLD_="131072") > 0.8 * pages
