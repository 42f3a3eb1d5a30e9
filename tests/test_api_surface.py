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
