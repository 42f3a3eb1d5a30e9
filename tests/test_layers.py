"""The engine stays below the rest: no transport, no asyncio, no telemetry in it, and no import cycles
among the modules a message goes through (read from the source, so a lazy import counts too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pubsubpy"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


GRAPH = {_module(path): _imports(path) for path in ROOT.rglob("*.py")}


def _internal(name: str) -> str | None:
    """The pubsubpy module ``name`` refers to (a module, or a name inside one), if any."""
    while name:
        if name in GRAPH:
            return name
        name = name.rpartition(".")[0]
    return None


def _reach(start: str) -> set[str]:
    """Every module (ours and outside) ``start`` imports, directly or through our modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for name in GRAPH[todo.pop()]:
            ours = _internal(name)
            target = ours or name
            if target not in seen:
                seen.add(target)
                if ours is not None and ours != "pubsubpy":
                    todo.append(ours)
    return seen


ENGINE = sorted(name for name in GRAPH if name.startswith("pubsubpy._engine"))


@pytest.mark.parametrize("module", ENGINE)
def test_the_engine_imports_no_transport_no_asyncio_no_telemetry(module: str) -> None:
    reached = _reach(module)
    forbidden = sorted(name for name in reached
                       if name.split(".")[0] in ("asyncio", "pika", "opentelemetry")
                       or name.startswith(("pubsubpy.transports", "pubsubpy.telemetry", "pubsubpy.aio",
                                           "pubsubpy._consume.loop", "pubsubpy.app")))
    assert not forbidden, f"{module} reaches {forbidden}"


def test_the_message_types_sit_below_engine_and_transports() -> None:
    ours = {name for name in _reach("pubsubpy.messages") if name.startswith("pubsubpy")}
    assert ours <= {"pubsubpy.envelope", "pubsubpy.errors"}, ours


@pytest.mark.parametrize("module", [*ENGINE, "pubsubpy._consume.loop", "pubsubpy._consume.settling",
                                    "pubsubpy.middleware", "pubsubpy.router", "pubsubpy._consume.executor",
                                    "pubsubpy._consume.thread_pool", "pubsubpy._consume.caller_thread",
                                    "pubsubpy._consume.backoff"])
def test_no_import_cycle_through_the_message_path(module: str) -> None:
    assert module not in _reach(module), f"{module} imports itself through a cycle"
