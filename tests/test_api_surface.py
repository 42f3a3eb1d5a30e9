"""``__all__`` is the API: a public package exposes exactly its ``__all__`` (besides its submodules),
and every name in it says what it is."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

PACKAGES = ["pubsubpy", "pubsubpy.aio", "pubsubpy.testing", "pubsubpy.messages"]


@pytest.mark.parametrize("name", ["pubsubpy", "pubsubpy.aio"])  # the packages that only re-export
def test_a_public_package_exposes_exactly_its_all(name: str) -> None:
    module = importlib.import_module(name)
    exposed = {attribute for attribute, value in vars(module).items()
               if not attribute.startswith("_") and not isinstance(value, types.ModuleType)
               and attribute != "annotations"}  # ``from __future__ import annotations``
    assert exposed == set(module.__all__), f"{name}: not in __all__: {sorted(exposed - set(module.__all__))}; " \
                                           f"in __all__, missing: {sorted(set(module.__all__) - exposed)}"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_name_in_all_has_a_docstring(name: str) -> None:
    module = importlib.import_module(name)
    undocumented = [attribute for attribute in module.__all__
                    if (inspect.isclass(getattr(module, attribute)) or callable(getattr(module, attribute)))
                    and not inspect.getdoc(getattr(module, attribute))]
    assert not undocumented, f"{name}: {undocumented}"


def test_every_public_method_of_the_two_apps_has_a_docstring() -> None:
    from pubsubpy import PubSub
    from pubsubpy.aio import AsyncPubSub

    for cls in (PubSub, AsyncPubSub):
        bare = [attribute for attribute in dir(cls) if not attribute.startswith("_")
                and not inspect.getdoc(getattr(cls, attribute))]
        assert not bare, f"{cls.__name__}: {bare}"


def _private_members_of_pubsub() -> set[str]:
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parents[1] / "pubsubpy" / "app.py").read_text())
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "PubSub")
    names = {node.name for node in cls.body if isinstance(node, ast.FunctionDef) and node.name.startswith("_")}
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def test_no_module_reaches_into_a_pubsub_s_private_members() -> None:
    """aio, Django, telemetry and testing use PubSub's public seams (use_inbox, deliver, drain_with...)."""
    import ast
    from pathlib import Path

    private = _private_members_of_pubsub()
    root = Path(__file__).parents[1] / "pubsubpy"
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "app.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} .{node.attr}")
    assert not found, found


# The modules a user imports from, each the home of documented names; every other module is private
# (a leading underscore somewhere in its path), so a reader can tell API from internals.
API_HOMES = {
    "pubsubpy.aio", "pubsubpy.app", "pubsubpy.cli", "pubsubpy.deadletters", "pubsubpy.deadline", "pubsubpy.envelope",
    "pubsubpy.errors", "pubsubpy.health", "pubsubpy.inbox", "pubsubpy.messages", "pubsubpy.middleware",
    "pubsubpy.publisher", "pubsubpy.router", "pubsubpy.schemas", "pubsubpy.settings", "pubsubpy.telemetry",
    "pubsubpy.testing", "pubsubpy.topics", "pubsubpy.topology", "pubsubpy.transports", "pubsubpy.transports.base",
    "pubsubpy.transports.memory", "pubsubpy.transports.rabbitmq", "pubsubpy.contrib", "pubsubpy.contrib.celery",
    # Django finds these by name: the app, its models, migrations and management commands
    "pubsubpy.contrib.django", "pubsubpy.contrib.django.apps", "pubsubpy.contrib.django.models",
    "pubsubpy.contrib.django.inbox", "pubsubpy.contrib.django.outbox", "pubsubpy.contrib.django.relay",
    "pubsubpy.contrib.django.model_events", "pubsubpy.contrib.django.management",
    "pubsubpy.contrib.django.management.commands",
}


def test_every_module_is_an_api_home_or_private() -> None:
    import pkgutil

    import pubsubpy

    public = {module.name for module in pkgutil.walk_packages(pubsubpy.__path__, "pubsubpy.")
              if not any(part.startswith("_") for part in module.name.split("."))
              and not module.name.startswith(("pubsubpy.contrib.django.migrations",
                                              "pubsubpy.contrib.django.management.commands."))}
    assert public == API_HOMES, f"public but not an API home: {sorted(public - API_HOMES)}; " \
                                f"homes that are gone: {sorted(API_HOMES - public)}"
