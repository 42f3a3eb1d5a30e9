"""The module functions and AsyncPubSub's wrappers are generated from PubSub (scripts/generate_api.py):
up to date, complete, and acting on what they wrap."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import pubsubpy
from pubsubpy import PubSub
from pubsubpy.aio import AsyncPubSub

SCRIPT = Path(__file__).parents[1] / "scripts" / "generate_api.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_api", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_api"] = module
    spec.loader.exec_module(module)
    return module


def test_the_generated_files_are_up_to_date() -> None:
    generator = _generator()
    stale = [path.name for path, text in generator.generate().items() if path.read_text() != text]
    assert not stale, f"{stale} are stale: run python scripts/generate_api.py"


def _public_methods() -> set[str]:
    return {name for name, member in vars(PubSub).items()
            if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, classmethod))}


def test_every_public_method_is_generated_or_skipped_with_a_reason() -> None:
    generator = _generator()
    methods = _public_methods()
    assert set(generator.FACADE_SKIPS) <= methods and set(generator.ASYNC_BY_HAND) <= methods
    for name in methods - set(generator.FACADE_SKIPS):
        assert name in pubsubpy.__all__, name
        function_params = list(inspect.signature(getattr(pubsubpy, name)).parameters)
        assert function_params == list(inspect.signature(getattr(PubSub, name)).parameters)[1:], name
    for name in methods - set(generator.ASYNC_BY_HAND):
        wrapper = getattr(AsyncPubSub, name)
        assert inspect.iscoroutinefunction(wrapper) == (name not in generator.ASYNC_NO_IO), name


def test_a_generated_async_wrapper_runs_its_method_off_the_loop() -> None:
    bus = AsyncPubSub("memory://", service_name="generated", require_schemas=False)

    @bus.subscribe("Thing.*")
    def on_thing(event: dict[str, int]) -> None: ...

    async def main() -> tuple[str, int, list[str]]:
        topology = await bus.declare()
        return topology.queue.name, await bus.dead_letter_count(), await bus.stale_bindings()

    assert asyncio.run(main()) == ("generated.events", 0, [])
