"""The house has floors: the command line on top, Prefect flows below it, research tooling below those, the library
at the bottom. A module imports only from its own floor or the floors below, never a private name of another
module, and the library's rooms import each other without a circle.

Every module of ``gadms/`` and ``flows/`` is read with ``ast`` (imports anywhere in the file count, those inside
functions too), so the rules hold for lazy imports as well.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CLI = "cli"
FLOWS = "flows"
TOOLING = "tooling"
LIBRARY = "library"

TOOLING_ROOMS = ("gadms.ablate", "gadms.bench")

# Imports that close a circle between library rooms today, each (importing file, room imported). The circle check
# leaves these edges out, so any new circle fails; the list is to be emptied, not grown.
KNOWN_CIRCLE_EDGES: dict[tuple[str, str], str] = {
    # storage opens local files through safe_files, which streams URLs through storage (one way in for each
    # kind of file): open_binary and open_regular call each other.
    ("gadms/storage.py", "gadms.safe_files"): "storage -> safe_files -> storage",
}


@dataclass(frozen=True)
class Import:
    file: str  # path relative to the repository root
    line: int
    importer: str  # dotted module name of the importing file
    target: str  # dotted module imported (resolved for relative imports)
    names: tuple[str, ...]  # names taken with ``from target import ...`` (empty for ``import target``)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports_of(path: Path) -> list[Import]:
    importer = _module_name(path)
    rel = str(path.relative_to(ROOT))
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
        if isinstance(node, ast.Import):
            found += [Import(rel, node.lineno, importer, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(importer, path.name == "__init__.py", node)
            found.append(Import(rel, node.lineno, importer, target, tuple(a.name for a in node.names)))
    return found


def _all_imports() -> list[Import]:
    files = sorted([*(ROOT / "gadms").rglob("*.py"), *(ROOT / "flows").rglob("*.py")])
    return [imp for path in files for imp in _imports_of(path)]


IMPORTS = _all_imports()


def layer(module: str) -> str | None:
    """The floor a module stands on, or None for a module outside the project (stdlib, third party)."""
    if module == "flows" or module.startswith("flows."):
        return FLOWS
    if module == "gadms.__main__" or module == "gadms.cli" or module.startswith(("gadms.cli.", "gadms.cli_")):
        return CLI
    if any(module == room or module.startswith(room + ".") for room in TOOLING_ROOMS):
        return TOOLING
    if module == "gadms" or module.startswith("gadms."):
        return LIBRARY
    return None


def room(module: str) -> str:
    """The library room of a module: ``gadms.data.curated`` -> ``gadms.data``, ``gadms.locks`` -> ``gadms.locks``."""
    return ".".join(module.split(".")[:2])


def _project_module(name: str) -> bool:
    return layer(name) is not None


def _where(imp: Import) -> str:
    return f"{imp.file}:{imp.line}"


def test_the_scan_sees_the_whole_house():
    importers = {imp.importer for imp in IMPORTS}
    assert {"gadms.curation.run", "gadms.data.shardread", "flows.pipeline", "gadms.ablate.auroc"} <= importers
    lazy = [imp for imp in IMPORTS if imp.file == "gadms/data/shardread.py" and imp.target == "gadms.data.curated"]
    assert lazy, "imports inside functions are part of the scan"


def test_no_private_name_is_imported_from_another_module():
    problems = [
        f"{_where(imp)}: imports private {name!r} from {imp.target} (rule: no private name across modules)"
        for imp in IMPORTS
        if _project_module(imp.target) and imp.target != imp.importer
        for name in imp.names
        if name.startswith("_")
    ]
    assert not problems, "\n".join(problems)


FORBIDDEN = {
    LIBRARY: ({CLI, FLOWS, TOOLING}, ("prefect",)),
    TOOLING: ({CLI, FLOWS}, ("prefect",)),
    FLOWS: ({CLI}, ()),
    CLI: (set(), ()),
}


def _climbs(imp: Import) -> str | None:
    floor = layer(imp.importer)
    if floor is None:
        return None
    above, packages = FORBIDDEN[floor]
    target_floor = layer(imp.target)
    if target_floor in above:
        return f"the {floor} imports the {target_floor} ({imp.target})"
    top = imp.target.split(".")[0]
    if top in packages:
        return f"the {floor} imports {top} (only flows/ may)"
    return None


def test_no_module_imports_from_a_floor_above_its_own():
    problems = [
        f"{_where(imp)}: {why} (rule: import only from your own floor or below)"
        for imp in IMPORTS
        if (why := _climbs(imp))
    ]
    assert not problems, "\n".join(problems)


def _room_graph() -> dict[str, dict[str, Import]]:
    graph: dict[str, dict[str, Import]] = {}
    for imp in IMPORTS:
        if layer(imp.importer) != LIBRARY or layer(imp.target) != LIBRARY:
            continue
        here, there = room(imp.importer), room(imp.target)
        if (imp.file, there) in KNOWN_CIRCLE_EDGES:
            continue
        if imp.target == "gadms":  # ``from gadms import x``: the room is the name taken
            for name in imp.names:
                if name != "__version__" and name != here.split(".")[1]:
                    graph.setdefault(here, {}).setdefault(f"gadms.{name}", imp)
        elif there != here and there != "gadms":
            graph.setdefault(here, {}).setdefault(there, imp)
    return graph


def _find_cycle(graph: dict[str, dict[str, Import]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_library_rooms_import_each_other_without_a_circle():
    graph = _room_graph()
    cycle = _find_cycle(graph)
    if cycle:
        steps = [f"{a} -> {b} at {_where(graph[a][b])}" for a, b in zip(cycle, cycle[1:], strict=False)]
        pytest.fail("rooms import each other in a circle (rule: no cycle between library rooms):\n" + "\n".join(steps))


@pytest.mark.parametrize(
    ("module", "floor"),
    [
        ("gadms.cli", CLI),
        ("gadms.cli_train", CLI),
        ("gadms.cli.train", CLI),
        ("gadms.__main__", CLI),
        ("flows.pipeline", FLOWS),
        ("gadms.ablate.auroc", TOOLING),
        ("gadms.bench", TOOLING),
        ("gadms.data.curated", LIBRARY),
        ("gadms.crash", LIBRARY),
        ("gadms.client", LIBRARY),
        ("prefect", None),
    ],
)
def test_each_module_stands_on_its_floor(module, floor):
    assert layer(module) == floor


def test_a_circle_and_a_climb_are_caught():
    a = Import("gadms/x/a.py", 3, "gadms.x.a", "gadms.y.b", ("f",))
    b = Import("gadms/y/b.py", 7, "gadms.y.b", "gadms.x.c", ("g",))
    assert _find_cycle({"gadms.x": {"gadms.y": a}, "gadms.y": {"gadms.x": b}}) == ["gadms.x", "gadms.y", "gadms.x"]
    assert _climbs(Import("gadms/data/x.py", 1, "gadms.data.x", "gadms.bench.gpu", ())) is not None
    assert _climbs(Import("gadms/data/x.py", 1, "gadms.data.x", "prefect", ())) is not None
    assert _climbs(Import("gadms/bench/x.py", 1, "gadms.bench.x", "gadms.cli_common", ())) is not None
    assert _climbs(Import("flows/x.py", 1, "flows.x", "gadms.cli", ())) is not None
    assert _climbs(Import("flows/x.py", 1, "flows.x", "gadms.ablate.run", ())) is None


def test_each_known_circle_edge_is_still_there():
    edges = {(imp.file, room(imp.target)) for imp in IMPORTS if layer(imp.target) == LIBRARY}
    stale = [f"{file} -> {target}" for file, target in KNOWN_CIRCLE_EDGES if (file, target) not in edges]
    assert not stale, "gone from the code, remove from KNOWN_CIRCLE_EDGES: " + ", ".join(stale)


# What a module must not do when it is imported: choose the plotting backend, change the environment, configure
# logging or warnings, set torch's threads or seeds, or patch another module. Such a change belongs in the function
# that needs it (or in the command line's ``main``).
SIDE_EFFECT_CALLS = (
    "matplotlib.use",
    "os.environ.setdefault",
    "os.environ.update",
    "os.environ.pop",
    "os.putenv",
    "logging.basicConfig",
    "logging.captureWarnings",
    "logging.disable",
    "warnings.filterwarnings",
    "warnings.simplefilter",
    "torch.set_num_threads",
    "torch.set_num_interop_threads",
    "torch.manual_seed",
    "torch.set_default_dtype",
    "torch.use_deterministic_algorithms",
    "setattr",
)
SIDE_EFFECT_METHODS = ("setLevel", "addHandler")  # logging.getLogger(...).setLevel(...) and the like


def _import_time_statements(tree: ast.Module) -> list[ast.stmt]:
    """The statements that run on import: the module body, less definitions and the ``__main__`` block."""
    todo, run = list(tree.body), []
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            todo += [stmt for handler in getattr(node, "handlers", []) for stmt in handler.body]
            continue
        run.append(node)
    return run


def _side_effects(path: Path, root: Path = ROOT) -> list[str]:
    rel = str(path.relative_to(root))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    modules = {
        alias.asname or alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    found = []
    for stmt in _import_time_statements(tree):
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in SIDE_EFFECT_CALLS or name.rsplit(".", 1)[-1] in SIDE_EFFECT_METHODS:
                    found.append(f"{rel}:{node.lineno}: calls {name}() on import")
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign)
                else []
            )
            for target in targets:
                text = ast.unparse(target)
                root_name = text.split(".")[0].split("[")[0]
                if text.startswith("os.environ[") or (isinstance(target, ast.Attribute) and root_name in modules):
                    found.append(f"{rel}:{node.lineno}: assigns {text} on import")
    return found


def test_no_module_changes_the_process_when_it_is_imported():
    files = sorted([*(ROOT / "gadms").rglob("*.py"), *(ROOT / "flows").rglob("*.py")])
    problems = [problem for path in files for problem in _side_effects(path)]
    assert not problems, "\n".join(f"{p} (rule: no import-time side effects)" for p in problems)


def test_the_side_effect_scan_catches_a_backend_an_environment_and_a_patch(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(
        "import os\nimport matplotlib\nimport typer\n\nmatplotlib.use('Agg')\nos.environ['X'] = '1'\n"
        "typer.rich_utils.STYLE = 'x'\n\nif __name__ == '__main__':\n    matplotlib.use('Agg')\n",
        encoding="utf-8",
    )
    found = _side_effects(module, tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "calls matplotlib.use() on import",
        "assigns os.environ['X'] on import",
        "assigns typer.rich_utils.STYLE on import",
    ]


def test_a_token_score_figure_leaves_the_plotting_backend_alone_and_draws_without_a_display(tmp_path):
    """Importing the figure module used to switch matplotlib to Agg for the whole process."""
    code = (
        "import matplotlib, torch, sys\n"
        "from gadms.model.figures import token_score_figure\n"
        "from gadms.model.backbone import tokenizer\n"
        "tok = tokenizer(16)\n"
        "tokens = tok(['a man in a red jacket'])\n"
        "token_score_figure(tokens, torch.full(tokens.shape, 0.5), tok.decoder, sys.argv[1] + '/scores.png')\n"
        "print(matplotlib.get_backend())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"} | {"MPLBACKEND": "template"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "template"
    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _private_attributes(path: Path, root: Path = ROOT) -> list[str]:
    """``obj._name`` uses in a file, ``self``/``cls`` and dunders aside (another object's private parts)."""
    rel = str(path.relative_to(root))
    return [
        f"{rel}:{node.lineno}: uses {ast.unparse(node)}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and ast.unparse(node.value) not in ("self", "cls")
    ]


def test_flows_and_research_tooling_use_only_public_parts_of_the_library():
    """Floors above the library go through its public names: no ``detector._predict`` from a benchmark script."""
    files = sorted([*(ROOT / "flows").rglob("*.py"), *(ROOT / "gadms/ablate").rglob("*.py")])
    files += sorted((ROOT / "gadms/bench").rglob("*.py"))
    problems = [problem for path in files for problem in _private_attributes(path)]
    assert not problems, "\n".join(f"{p} (rule: public names only across floors)" for p in problems)


def test_the_private_attribute_scan_catches_another_objects_private_method(tmp_path):
    module = tmp_path / "bench.py"
    module.write_text("def f(detector):\n    self = detector\n    return detector._predict(), self._x\n")
    assert [f.split(": ", 1)[1] for f in _private_attributes(module, tmp_path)] == ["uses detector._predict"]


FLOW_FUNCTION_LINES = 25  # the pipeline flow's body is 21: a flow reads like its stage, the work is in the library


def _long_functions(path: Path, limit: int, root: Path = ROOT) -> list[str]:
    """Functions of a file whose body (docstring aside) is longer than ``limit`` lines."""
    rel = str(path.relative_to(root))
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        lines = (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1 if body else 0
        if lines > limit:
            found.append(f"{rel}:{node.lineno}: {node.name} is {lines} lines")
    return found


def test_every_function_in_flows_is_short_orchestration():
    problems = [
        p for path in sorted((ROOT / "flows").rglob("*.py")) for p in _long_functions(path, FLOW_FUNCTION_LINES)
    ]
    assert not problems, "\n".join(
        f"{p} (rule: at most {FLOW_FUNCTION_LINES}; move the logic to gadms/)" for p in problems
    )


def test_the_length_scan_counts_a_body_without_its_docstring(tmp_path):
    module = tmp_path / "flow.py"
    module.write_text('def f():\n    """Doc."""\n' + "    x = 1\n" * 3 + "\n\ndef g():\n    return 1\n")
    assert _long_functions(module, 2, tmp_path) == ["flow.py:1: f is 3 lines"]
    assert _long_functions(module, 3, tmp_path) == []
