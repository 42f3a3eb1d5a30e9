"""Write the module functions (``pubsubpy/_facade.py``) and ``AsyncPubSub``'s plain wrappers
(``pubsubpy/aio/_methods.py``) from ``PubSub`` in ``pubsubpy/app.py``, the one definition.

    python scripts/generate_api.py           # rewrite both files
    python scripts/generate_api.py --check   # exit 1 if either is out of date (tests/test_generated_api.py)

Signatures and docstrings are copied from the source text, so mypy and the documentation's reference see
exact signatures (a ``*args, **kwargs`` delegator would show neither). A method listed in ``FACADE_SKIPS``
or ``ASYNC_BY_HAND`` is not generated, with the reason beside it.
"""

from __future__ import annotations

import ast
import builtins
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "pubsubpy" / "app.py"
FACADE = ROOT / "pubsubpy" / "_facade.py"
ASYNC = ROOT / "pubsubpy" / "aio" / "_methods.py"
WIDTH = 120

FACADE_SKIPS = {
    "configure": "init() is the facade's configure(), returning the instance (written in __init__.py)",
    "unconfigured": "makes the default instance itself",
    "topology": "would shadow the submodule pubsubpy.topology; use get_default().topology()",
    "use_inbox": "a seam for integrations (the Django app): on the instance, get_default().use_inbox()",
    "use_outbox": "a seam for integrations (the Django app): on the instance",
    "deliver": "a seam for AsyncPubSub: encoded messages, not events",
    "send": "a seam for the outbox relay: encoded messages, not events",
    "use_middleware": "a seam for pubsubpy.testing.capture: on the instance",
    "drain_with": "a seam for runtimes with an event loop (AsyncPubSub): use drain()",
    "run_with": "a seam for runtimes with an event loop (AsyncPubSub, pubsubpy worker): use run()",
}
ASYNC_BY_HAND = {
    "configure": "AsyncPubSub(...) takes the constructor's arguments; AsyncPubSub.of(app) wraps a PubSub",
    "unconfigured": "the facade's own",
    "publish_model_event": "validates on the loop, then a batching publisher thread (aio/batching.py)",
    "publish_many": "validates on the loop, then one batch in a thread",
    "drain": "consumes on a thread of its own; async def handlers run on the calling loop",
    "run": "stop may be an asyncio.Event too; cancelling it stops the worker",
    "close": "aclose(): flushes the batching publisher first",
    "use_inbox": "a seam for integrations: on the wrapped PubSub (bus.sync)",
    "use_outbox": "a seam for integrations: on the wrapped PubSub (bus.sync)",
    "deliver": "the wrapped PubSub's seam, used by AsyncPubSub itself",
    "send": "the wrapped PubSub's seam (the outbox relay's)",
    "use_middleware": "a seam: on the wrapped PubSub (bus.sync)",
    "drain_with": "AsyncPubSub.drain is this seam on the calling loop",
    "run_with": "AsyncPubSub.run is this seam on the calling loop",
}
ASYNC_NO_IO = {"subscribe", "topology"}  # plain methods on AsyncPubSub too: nothing to wait for


@dataclass
class Method:
    name: str
    params: list[str]  # "name: annotation = default", as in the source
    call: list[str]    # how the wrapper passes each one on
    returns: str
    doc: str


def _methods(tree: ast.Module, source: str) -> list[Method]:
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "PubSub")
    found = []
    for node in cls.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or node.decorator_list:
            continue
        found.append(_method(node, source))
    return found


def _text(node: ast.expr | None, source: str) -> str:
    assert node is not None
    text = ast.get_source_segment(source, node)
    assert text is not None
    return " ".join(text.split())


def _method(node: ast.FunctionDef, source: str) -> Method:
    args = node.args
    assert not args.posonlyargs, f"{node.name}: positional-only parameters are not supported"
    positional = args.args[1:]  # without self
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params, call = [], []

    def param(arg: ast.arg, default: ast.expr | None, prefix: str = "") -> str:
        text = f"{prefix}{arg.arg}: {_text(arg.annotation, source)}"
        return text if default is None else f"{text} = {_text(default, source)}"

    for arg, default in zip(positional, defaults, strict=True):
        params.append(param(arg, default))
        call.append(arg.arg)
    if args.vararg is not None:
        params.append(param(args.vararg, None, "*"))
        call.append(f"*{args.vararg.arg}")
    elif args.kwonlyargs:
        params.append("*")
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(param(arg, default))
        call.append(f"{arg.arg}={arg.arg}")
    if args.kwarg is not None:
        params.append(param(args.kwarg, None, "**"))
        call.append(f"**{args.kwarg.arg}")
    doc = ast.get_docstring(node, clean=True)
    assert doc, f"PubSub.{node.name} has no docstring"
    return Method(node.name, params, call, _text(node.returns, source), doc)


def _names(method: Method) -> set[str]:
    """Every name the signature's text uses."""
    found: set[str] = set()
    for text in [*method.params, method.returns]:
        expression = text.lstrip("*").split(":", 1)[-1] if text != "*" else "None"
        for part in expression.split(" = "):
            for node in ast.walk(ast.parse(part.strip(), mode="eval")):
                if isinstance(node, ast.Name):
                    found.add(node.id)
    return found


def _imports(tree: ast.Module, needed: set[str], plain: tuple[str, ...] = ()) -> str:
    """``from x import ...`` lines for ``needed``, found where app.py gets them, sorted as ruff's isort
    wants (standard library, third party, pubsubpy; constants, classes, then functions)."""
    where: dict[str, str] = {}
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.Import)
                for alias in node.names}
    plain = tuple(sorted({*plain, *(name for name in needed if name in imported)}))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                where[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.Assign | ast.ClassDef | ast.FunctionDef):
            for name in ([t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign)
                         else [node.name]):
                where[name] = "pubsubpy.app"
    modules: dict[str, set[str]] = {}
    for name in sorted(needed):
        if hasattr(builtins, name) or name in imported:
            continue
        modules.setdefault(where[name], set()).add(name)

    def section(module: str) -> int:
        top = module.split(".")[0]
        return 2 if top == "pubsubpy" else 0 if top in sys.stdlib_module_names else 1

    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() and len(name) > 1 else 1 if name[0].isupper() else 2, name)

    blocks: list[list[str]] = [[f"import {module}" for module in plain], [], []]
    for module in sorted(modules):
        if module == "__future__":
            continue
        line = f"from {module} import {', '.join(sorted(modules[module], key=order))}"
        blocks[section(module)].append(line)
    return "\n\n".join("\n".join(block) for block in blocks if block)


def _signature(head: str, params: list[str], returns: str, indent: str) -> str:
    one_line = f"{indent}{head}({', '.join(params)}) -> {returns}:"
    if len(one_line) <= WIDTH:
        return one_line
    inner = indent + "    "
    return "\n".join([f"{indent}{head}(", *(f"{inner}{p}," for p in params), f"{indent}) -> {returns}:"])


def _wrapped(opening: str, items: list[str], closing: str, indent: str) -> str:
    """``opening + items + closing`` on one line, or the items packed on lines after the opening."""
    one_line = f"{indent}{opening}{', '.join(items)}{closing}"
    if len(one_line) <= WIDTH:
        return one_line
    inner, lines, line = indent + "    ", [f"{indent}{opening}"], ""
    for item in items:
        candidate = f"{line}, {item}" if line else item
        if len(inner + candidate) + len(closing) + 1 > WIDTH and line:
            lines.append(f"{inner}{line},")
            candidate = item
        line = candidate
    lines.append(f"{inner}{line}{closing}")
    return "\n".join(lines)


def _docstring(doc: str, indent: str) -> str:
    lines = doc.split("\n")
    body = [f'{indent}"""{lines[0]}', *((indent + line) if line else "" for line in lines[1:])]
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""'
    return "\n".join([*body, f'{indent}"""'])


INIT_DOC = """Configure the default instance, once per process. Never connects: the first publish, drain or
declare does.

Args:
    amqp_url: the broker: ``amqp://user:password@host:5672/vhost``, ``amqps://...`` (TLS), several
        comma-separated URLs (failover, tried in order), or ``memory://`` / ``memory://NAME`` (the
        in-process broker). ``None``: ``$PUBSUBPY_URL``, else ``memory://``. A URL naming a user but no
        password takes the password from the file ``$PUBSUBPY_PASSWORD_FILE``.
    schemas: the event schemas this instance knows. ``None``: every ``ModelEvent`` subclass defined with
        ``register=True`` (the default).
    transport: a transport to use instead of the one the URL names (tests).
    inbox: what runs ``@subscribe(..., idempotent=True)`` handlers once per message id (an ``Inbox``;
        the Django app installs one).
    publishes: the schemas this service publishes, for the AsyncAPI document, the event catalogue and
        ``pubsubpy topology``.
    middleware: ``Middleware`` instances, the first the outermost.
    **options: the fields of ``pubsubpy.settings.Settings`` (``service_name``, ``model_exchange``,
        ``max_attempts``, timeouts...), typed in ``SettingsOptions``. See the Settings reference.

Returns:
    The default ``PubSub``, configured.

Raises:
    ConfigurationError: an unknown option or a bad value (naming the field and the value), a TLS or
        password file that cannot be read, or ``init()`` called a second time (call it once per process;
        ``pubsubpy.testing.reset()`` between tests)."""

APUBLISH_DOC = """``publish_model_event`` for async code (FastAPI, Django async views), on the default instance.

The same arguments, validation, return value and errors as ``publish_model_event``, without blocking
the event loop: the payload is validated in the caller's coroutine, then concurrent publishes go out
together as confirmed batches. With Django's outbox on, the row is written through ``sync_to_async``:
Django has no async transactions, so inside an async view the row gets a transaction of its own.

Returns:
    The message id, once the broker confirmed the message (with the outbox: once the row is written)."""

HEADER = '''"""{what}

Generated by ``scripts/generate_api.py`` from ``PubSub`` (``pubsubpy/app.py``): do not edit by hand;
change ``PubSub`` and run the script (``tests/test_generated_api.py`` fails when this file is stale).
"""

from __future__ import annotations

{imports}
'''


def facade(tree: ast.Module, methods: list[Method]) -> str:
    chosen = [m for m in methods if m.name not in FACADE_SKIPS]
    by_name = {m.name: m for m in methods}
    configure, publish = by_name["configure"], by_name["publish_model_event"]
    needed = set().union(*(_names(m) for m in [*chosen, configure]))
    imports = _imports(tree, needed | {"PubSub"})
    own = ["get_default", "init", "apublish_model_event"]
    names = [f'"{n}"' for n in sorted([*own, *(m.name for m in chosen)])]
    parts = [HEADER.format(what="The module-level functions: ``PubSub``'s methods on the default instance.",
                           imports=imports),
             _wrapped("__all__ = [", names, "]", "") + "\n",
             "_default = PubSub.unconfigured()\n",
             '\ndef get_default() -> PubSub:\n'
             '    """The ``PubSub`` the module-level functions use.\n\n'
             "    Created unconfigured at import (it collects ``@pubsubpy.subscribe`` registrations made before\n"
             "    ``init()``); ``init()`` configures it. Use it to reach what the module functions do not expose,"
             " e.g.\n"
             "    ``pubsubpy.get_default().settings.display_url``.\n"
             '    """\n'
             "    return _default\n",
             '\ndef replace_default(app: PubSub) -> PubSub:\n'
             '    """Make ``app`` the default instance; returns the one it replaces (``pubsubpy.testing.reset``)."""\n'
             "    global _default\n"
             "    old, _default = _default, app\n"
             "    return old\n",
             "\n" + "\n".join([
                 _signature("def init", configure.params, "PubSub", ""),
                 _docstring(INIT_DOC, "    "),
                 _wrapped("_default.configure(", configure.call, ")", "    "),
                 "    return _default"]) + "\n",
             "\n" + "\n".join([
                 _signature("async def apublish_model_event", publish.params, publish.returns, ""),
                 _docstring(APUBLISH_DOC, "    "),
                 "    from pubsubpy.aio import AsyncPubSub",
                 "",
                 _wrapped("return await AsyncPubSub.of(_default).publish_model_event(", publish.call, ")", "    "),
             ]) + "\n"]
    for method in chosen:
        doc = method.doc.replace("@app.subscribe(", "@pubsubpy.subscribe(").replace("before ``configure()``",
                                                                                     "before ``init()``")
        parts.append("\n" + "\n".join([
            _signature(f"def {method.name}", method.params, method.returns, ""),
            _docstring(doc, "    "),
            _wrapped(f"return _default.{method.name}(", method.call, ")", "    "),
        ]) + "\n")
    return "\n".join(parts)


def async_methods(tree: ast.Module, methods: list[Method]) -> str:
    chosen = [m for m in methods if m.name not in ASYNC_BY_HAND]
    configure = next(m for m in methods if m.name == "configure")
    needed = set().union(*(_names(m) for m in [*chosen, configure]))
    imports = _imports(tree, needed | {"PubSub"}, plain=("asyncio", "functools"))
    parts = [HEADER.format(what="``AsyncPubSub``'s wrappers of ``PubSub`` methods that only wait: each runs the "
                                "method in a thread\n(``asyncio.to_thread``), so the event loop stays free.",
                           imports=imports),
             '__all__ = ["AsyncMethods"]\n',
             "\nclass AsyncMethods:\n"
             '    """What ``AsyncPubSub`` inherits: ``PubSub``\'s methods as coroutines, on ``self.sync``."""\n\n'
             "    sync: PubSub\n",
             "\n".join([
                 _signature("def __init__", ["self", *configure.params], "None", "    "),
                 '        """A new ``PubSub`` with these arguments (``PubSub.configure``\'s), wrapped."""',
                 _wrapped("self._attach(PubSub(", configure.call, "))", "        "),
             ]) + "\n",
             "    def _attach(self, app: PubSub) -> None:\n"
             '        """Wrap ``app`` (``AsyncPubSub`` says how)."""\n'
             "        raise NotImplementedError\n"]
    for method in chosen:
        params = ["self", *method.params]
        plain = method.name in ASYNC_NO_IO
        head = f"def {method.name}" if plain else f"async def {method.name}"
        doc = f"As ``PubSub.{method.name}``" + (" (no I/O)." if plain else ", awaited.") + "\n\n" + method.doc
        if plain:
            body = _wrapped(f"return self.sync.{method.name}(", method.call, ")", "        ")
        else:
            body = _wrapped("return await asyncio.to_thread(functools.partial(",
                            [f"self.sync.{method.name}", *method.call], "))", "        ")
        parts.append("\n".join([
            _signature(head, params, method.returns, "    "),
            _docstring(doc.replace("@app.subscribe(", "@bus.subscribe("), "        "),
            body,
        ]) + "\n")
    return "\n".join(parts)


def generate() -> dict[Path, str]:
    source = APP.read_text()
    tree = ast.parse(source)
    methods = _methods(tree, source)
    return {FACADE: facade(tree, methods), ASYNC: async_methods(tree, methods)}


def main(argv: list[str]) -> int:
    stale = [path for path, text in generate().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python scripts/generate_api.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generate().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
