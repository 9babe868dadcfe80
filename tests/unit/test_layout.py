"""The layout's rules (issue 20): no import circle, no file in relay/ over ~400 lines,
one home for the closing error codes and the slash commands, and
no bus request name ("op") spelled outside relay/bus/.

The import graph is read from the source with `ast`, not by importing, so it
sees every import: at module level, inside functions, and under
`if TYPE_CHECKING:` (a circle of type-only imports still ties two modules
together for the reader). Importing `a.b.c` also runs `a` and `a.b`, so an
edge goes to each package `__init__` on the way: a package that imports its
own submodules in `__init__` shows up here as the circle it makes.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("relay", "transports", "clients")
MAX_LINES = 400

TOO_LONG_FOR_NOW: set[str] = set()
CIRCLES_FOR_NOW: set[frozenset[str]] = set()
# Files that still spell the key "op" outside relay/bus/ (it should come from
# relay.bus.messages: OP, op_of, a message's to_wire):
OP_LITERAL_FOR_NOW: set[str] = set()  # issue 20: empty; keep it so


def _modules() -> dict[str, Path]:
    """Every module of our packages: dotted name -> file."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _with_parents(name: str) -> Iterator[str]:
    """`a.b.c` -> a, a.b, a.b.c: what importing it runs."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `module` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: counted from this module's package
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            targets.update(n for n in _with_parents(name) if n in known)
    targets.discard(module)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    found = set(circles(import_graph()))
    unexpected = found - CIRCLES_FOR_NOW
    assert not unexpected, "import circles: " + "; ".join(
        " <-> ".join(sorted(c)) for c in unexpected)


def test_the_known_circles_are_still_there() -> None:
    """An allowed circle that is gone comes off the list, so it cannot come back."""
    gone = CIRCLES_FOR_NOW - set(circles(import_graph()))
    assert not gone, f"no longer circles, take them off CIRCLES_FOR_NOW: {gone}"


def test_the_graph_sees_every_kind_of_import() -> None:
    """The walker finds type-only, function-level and relative imports, and the
    circles they make; otherwise the tests above could not fail."""
    graph = import_graph()
    assert "relay.hub.stats" in graph["relay.metrics"]  # under TYPE_CHECKING
    assert "relay.hub.process" in graph["relay.cli"]  # inside a function
    assert "relay.hub" in graph["relay.hub.state"]  # the package __init__ on the way
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        frozenset({"a", "b", "c"})]


def test_no_file_in_relay_is_over_the_line_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "relay").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    unexpected = {p: n for p, n in long.items() if p not in TOO_LONG_FOR_NOW}
    assert not unexpected, f"files over {MAX_LINES} lines (split them by job): {unexpected}"
    stale = TOO_LONG_FOR_NOW - set(long)
    assert not stale, f"no longer over {MAX_LINES} lines, take off TOO_LONG_FOR_NOW: {stale}"


# One home per protocol rule ----------------------------------------------------
#
# The codes after which the relay closes a connection live in the error table
# (transports/errors.py), the slash commands in transports/commands.py. A
# second copy is found by its shape, not its name: any collection literal or
# comparison that names two or more closing codes, or three or more command
# names of which one can only be a slash command (`help`, `quit`, an alias, or
# a name written with its "/"; plain `join`, `who`, ... are also frame types).
# The web page's app.js is not searched: it fetches the table (/commands.json).

SEARCHED = ("relay", "transports", "clients", "benchmarks")
_GROUPS = (ast.Tuple, ast.List, ast.Set, ast.Dict, ast.BoolOp, ast.Compare)


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _frame_types() -> set[str]:
    from transports.events import ClientEvent, RelayEvent

    found: set[str] = set()
    todo: list[type] = [ClientEvent, RelayEvent]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        found.add(getattr(cls, "T", ""))
    return found


def closing_code_copies(source: str) -> list[int]:
    """Lines of `source` where two or more closing error codes are listed together."""
    from transports.errors import FATAL_CODES

    return sorted({node.lineno for node in ast.walk(ast.parse(source))
                   if isinstance(node, _GROUPS) and len(_strings(node) & FATAL_CODES) >= 2})


def command_table_copies(source: str) -> list[int]:
    """Lines of `source` where slash command names are listed together."""
    from transports.commands import BY_NAME

    names = set(BY_NAME)
    slash_only = names - _frame_types()
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, _GROUPS):
            continue
        found = _strings(node)
        named = {s.removeprefix("/") for s in found} & names
        marked = {s for s in found if s in slash_only or s.startswith("/") and s[1:] in names}
        if len(named) >= 3 and marked:
            lines.add(node.lineno)
    return sorted(lines)


def _files_with(find: Callable[[str], list[int]]) -> set[str]:
    return {str(p.relative_to(ROOT)) for package in SEARCHED
            for p in sorted((ROOT / package).rglob("*.py")) if find(p.read_text())}


def test_the_closing_error_codes_are_listed_once() -> None:
    assert _files_with(closing_code_copies) == {"transports/errors.py"}


def test_the_slash_command_names_are_listed_once() -> None:
    assert _files_with(command_table_copies) == {"transports/commands.py"}


def test_the_copy_finders_find_copies() -> None:
    """The shapes a second copy takes (these were in the tree before issue 20)."""
    assert closing_code_copies('CLOSE = {"slow_consumer": 1008, "kicked": 1008}\n') == [1]
    assert closing_code_copies('if code in ("kicked", "banned"):\n    pass\n') == [1]
    assert closing_code_copies('if code == "shutting_down" or code == "kicked":\n    pass\n')
    assert not closing_code_copies('CODES = ("bad_frame", "frame_too_large")\n')
    handlers = 'H = {"join": self._join, "help": self._help, "quit": self._quit}\n'
    assert command_table_copies(handlers) == [1]
    assert command_table_copies('NAMES = ["/join", "/part", "/nick"]\n') == [1]
    assert not command_table_copies('TYPES = ("join", "part", "who", "nick")\n')


def _op_literals(path: Path) -> int:
    return sum(1 for node in ast.walk(ast.parse(path.read_text(), str(path)))
               if isinstance(node, ast.Constant) and node.value == "op")


def test_no_op_literal_outside_the_bus_package() -> None:
    """The bus's request names have one owner: relay/bus/messages.py."""
    found = set()
    for package in (*PACKAGES, "benchmarks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if not rel.startswith("relay/bus/") and _op_literals(path):
                found.add(rel)
    unexpected = found - OP_LITERAL_FOR_NOW
    assert not unexpected, f'"op" spelled outside relay/bus/ (use relay.bus.messages): {unexpected}'
    stale = OP_LITERAL_FOR_NOW - found
    assert not stale, f'no "op" left, take off OP_LITERAL_FOR_NOW: {stale}'
    assert _op_literals(ROOT / "relay/bus/messages.py") == 1  # the one spelling: OP = "op"


# What each folder may import (docs/architecture.md) ----------------------------

FORBIDDEN = {
    "transports": ("relay", "clients", "benchmarks"),
    "clients": ("relay", "benchmarks"),
    "relay.bus": ("relay.hub", "relay.worker"),
    "relay.hub": ("relay.worker",),
    "relay.worker": ("relay.hub",),
}


def test_each_folder_imports_only_what_it_may() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for folder, banned in FORBIDDEN.items()
        if module == folder or module.startswith(folder + ".")
        for target in targets
        if any(target == b or target.startswith(b + ".") for b in banned)
    )
    assert not wrong, f"imports the layout forbids (docs/architecture.md): {wrong}"
