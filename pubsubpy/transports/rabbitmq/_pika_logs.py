"""Silence pika's own log records while pubsubpy opens a connection, and only then.

A failed connect makes pika log about ten ERROR records, tracebacks included, for what pubsubpy says in
one line (a WARNING per attempt, then the exception). ``connecting(param)`` marks the calling thread as
inside pubsubpy's connect attempt; a ``logging.Filter`` on pika's loggers drops the records emitted:

- on that thread while it is marked (pika runs its connection workflow on the caller's thread), and
- on the thread pika starts to resolve the host name (a ``threading.Timer`` running
  ``_AddressResolver._resolve``; it logs ``Address resolution failed`` at ERROR) when that resolver works
  for the connection parameters ``param`` being connected (told by the resolver's own callback, which
  leads to them, or once pika has cleared it, by host and port; a resolver found to be ours is
  remembered until its thread ends).

Everything else passes: records from other threads, from pika used outside pubsubpy's connect (the
application's own connections, or pubsubpy's connections once open), at every level. Nothing changes
the level, handlers or propagation of the application's ``pika`` loggers. A logger filter only sees
records logged to that very logger (not its children's), so the filter is added to each of pika's
module loggers.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import weakref
from collections.abc import Iterator

__all__ = ["connecting", "install"]

# pika's module loggers (``logging.getLogger(__name__)``); every pika module already imported is added too.
_LOGGERS = (
    "pika.adapters.base_connection",
    "pika.adapters.blocking_connection",
    "pika.adapters.select_connection",
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.utils.selector_ioloop_adapter",
    "pika.callback",
    "pika.channel",
    "pika.connection",
    "pika.credentials",
    "pika.heartbeat",
)

_marked = threading.local()  # .depth: how many connect attempts this thread is inside
_params: dict[int, object] = {}  # id -> the connection parameters being connected (kept alive meanwhile)
_resolvers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # pika resolver threads found to be ours
_lock = threading.Lock()


def _resolver(thread: threading.Thread) -> object | None:
    """The pika ``_AddressResolver`` ``thread`` runs, if it is one (pika 1.x: ``_AddressResolver.start``
    runs ``self._resolve`` on a ``threading.Timer``); None otherwise."""
    resolver = getattr(getattr(thread, "function", None), "__self__", None)
    return resolver if type(resolver).__name__ == "_AddressResolver" else None


def _works_for_us(resolver: object) -> bool:
    """Whether ``resolver`` resolves a host for parameters being connected by pubsubpy (call with ``_lock``).

    While it runs, its ``_on_done`` is the bound method of the connection workflow holding the parameters:
    an exact answer. Once the result is handed over pika clears it, and the resolver may still log a last
    DEBUG record: then the host and port tell.
    """
    workflow = getattr(getattr(resolver, "_on_done", None), "__self__", None)
    if workflow is not None:
        configs = getattr(workflow, "_connection_configs", None) or ()
        return any(_params.get(id(config)) is config for config in configs)
    where = (getattr(resolver, "_host", None), getattr(resolver, "_port", None))
    return any((getattr(param, "host", None), getattr(param, "port", None)) == where for param in _params.values())


def _resolving_ours() -> bool:
    """Whether the current thread is pika's host name resolver working for a pubsubpy connect attempt.
    Any other thread, or another shape of pika, answers False: the record passes."""
    thread = threading.current_thread()
    resolver = _resolver(thread)
    if resolver is None:
        return False
    with _lock:
        if thread in _resolvers:
            return True
        if _params and _works_for_us(resolver):
            _resolvers.add(thread)
            return True
    return False


class _DuringConnect(logging.Filter):
    """Drop pika's records emitted by pubsubpy's own connect attempt (see the module's docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_marked, "depth", 0):
            return False
        return not ((_params or _resolvers) and _resolving_ours())


_FILTER = _DuringConnect("pubsubpy")


def install() -> None:
    """Add the filter to pika's loggers (once per logger; cheap to call again)."""
    names = set(_LOGGERS) | {name for name in sys.modules if name == "pika" or name.startswith("pika.")}
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextlib.contextmanager
def connecting(param: object) -> Iterator[None]:
    """Mark this thread (and pika's resolver for ``param``) as inside a pubsubpy connect attempt."""
    install()
    key = id(param)
    with _lock:
        _params[key] = param
    _marked.depth = getattr(_marked, "depth", 0) + 1
    try:
        yield
    finally:
        _marked.depth -= 1
        with _lock:  # a resolver thread still running logs a last record after this attempt: remember it
            for thread in threading.enumerate():
                resolver = _resolver(thread)
                if resolver is not None and _works_for_us(resolver):
                    _resolvers.add(thread)
            _params.pop(key, None)
