"""MkDocs hook: what the generated reference pages need, and a check that they cover the public API.

- **The command line.** ``pubsubpy.cli._commands`` builds its click group in a function (``build()``), so there is
  no module attribute for mkdocs-click to import. This hook builds it once and registers it as the module
  ``pubsubpy_docs_cli`` (attribute ``cli``), which ``docs/reference/cli.md`` names in its ``::: mkdocs-click``
  block. Every command and option then comes from the code (``_for_the_reference`` smooths what
  mkdocs-click 0.9 renders badly with click 8.3+, on that copy only).
- **API coverage.** Every name in ``pubsubpy.__all__`` must be rendered by a ``::: pubsubpy.NAME`` block on a
  page under ``reference/``, and no other ``pubsubpy.NAME`` may be (the module's public API is exactly
  ``__all__``). Every one of them, and the public names outside the top-level module (``DESIGN_NAMES``: the
  design guide's stable names that live in submodules, once they exist in the code), must then appear in the
  built HTML (mkdocstrings' heading ids), by a block of its own or one rendering its whole module. A gap is a
  warning, fatal under ``mkdocs build --strict``.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import types
from typing import Any

log = logging.getLogger("mkdocs.plugins.pubsubpy.reference")

# Public names that live outside ``pubsubpy.__all__`` (design guide sections 1 and 8, and the helpers the
# README documents by their module path). A name that does not exist (yet) is skipped.
DESIGN_NAMES = [
    "pubsubpy.topics.topic_matches",
    "pubsubpy.topics.TopicTrie",
    "pubsubpy.aio.AsyncPubSub",
    "pubsubpy.testing.reset",
    "pubsubpy.testing.memory_pubsub",
    "pubsubpy.testing.memory_broker",
    "pubsubpy.testing.settle",
    "pubsubpy.testing.delete_topology",
    "pubsubpy.testing.MemoryInbox",
    "pubsubpy.UnroutableWarning",
    "pubsubpy.messages.Outcome",
    "pubsubpy.publisher.EventSpec",
    "pubsubpy.publisher.PublishOptions",
    "pubsubpy.settings.Settings",
    "pubsubpy.settings.SettingsOptions",
    "pubsubpy.settings.InsecureTLSWarning",
    "pubsubpy.topology.at_least_once_policy",
    "pubsubpy.topology.lazy_policy",
    "pubsubpy.topology.no_delivery_limit_policy",
    "pubsubpy.transports.rabbitmq.service_permissions",
    "pubsubpy.testing.capture",
    "pubsubpy.testing.MemoryBroker",
]

_BLOCK = re.compile(r"^:::\s+(pubsubpy[\w.]*)\s*$", re.MULTILINE)
_ANCHOR = re.compile(r'id="(pubsubpy[\w.]*)"')
_rendered: dict[str, str] = {}  # identifier -> page whose ::: block renders it
_anchors: set[str] = set()  # the objects the built reference pages show (mkdocstrings' heading ids)


def _for_the_reference(command: Any, name: str = "pubsubpy") -> None:
    """Adapt a freshly built click tree (used only for these pages) to what mkdocs-click 0.9 renders well:
    click 8.3+ marks "no default" with a sentinel that mkdocs-click would print as ``Sentinel.UNSET``. (Every
    option has its own help text; tests/test_cli_messages.py checks it.)"""
    import click

    for param in command.get_params(click.Context(command, info_name=name)):  # --help included (cached)
        if not isinstance(param, click.Option):
            continue
        if str(param.default) == "Sentinel.UNSET":
            param.default = False if param.is_flag else None
    for sub_name, sub in getattr(command, "commands", {}).items():
        _for_the_reference(sub, sub_name)


def _register_cli() -> None:
    from pubsubpy.cli._commands import build

    module = types.ModuleType("pubsubpy_docs_cli", "The pubsubpy click group, for mkdocs-click.")
    cli = build()  # a tree of its own: adapting it changes nothing for the real command
    _for_the_reference(cli)
    module.cli = cli  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module


_register_cli()


def _is_module(dotted: str) -> bool:
    try:
        importlib.import_module(dotted)
    except ImportError:
        return False
    return True


def _exists(dotted: str) -> bool:
    if _is_module(dotted):
        return True
    module_name, _, attribute = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    return hasattr(module, attribute)


def on_pre_build(config: Any) -> None:
    _rendered.clear()
    _anchors.clear()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri.startswith("reference/"):
        for identifier in _BLOCK.findall(markdown):
            _rendered[identifier] = page.file.src_uri
    return markdown


def on_post_page(output: str, page: Any, config: Any) -> str:
    if page.file.src_uri.startswith("reference/"):
        _anchors.update(_ANCHOR.findall(output))
    return output


def on_post_build(config: Any) -> None:
    import pubsubpy

    public = set(pubsubpy.__all__)
    for name in sorted(public):
        if f"pubsubpy.{name}" not in _rendered:
            log.warning("API reference: pubsubpy.%s is in pubsubpy.__all__ but no page under reference/ "
                        "renders it (add a '::: pubsubpy.%s' block)", name, name)
    for identifier, page in sorted(_rendered.items()):
        head, _, name = identifier.rpartition(".")
        if not _exists(identifier):
            log.warning("API reference: %s renders %s, which does not exist", page, identifier)
        elif (head == "pubsubpy" and name not in public and identifier not in DESIGN_NAMES
              and not _is_module(identifier)):
            log.warning("API reference: %s renders %s, which is not in pubsubpy.__all__", page, identifier)
    required = [f"pubsubpy.{name}" for name in sorted(public)] + [name for name in DESIGN_NAMES if _exists(name)]
    for identifier in required:
        if identifier not in _anchors:
            log.warning("API reference: %s is public but no page under reference/ shows it (give it a block, or "
                        "a docstring if its module's block hides undocumented names)", identifier)
