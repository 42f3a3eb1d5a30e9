"""Topic patterns and routing keys, with RabbitMQ's matching rules exactly.

A routing key is split into words on ``.``; the empty key has no words, and
``a.`` has two (``a`` and the empty word). In a pattern ``*`` matches exactly
one word and ``#`` matches zero or more. So ``a.#`` matches ``a``, ``#.a``
matches ``a``, ``#`` matches the empty key, ``*`` does not, and ``a.*``
matches ``a.`` but not ``a.b.c``.

Three things RabbitMQ accepts are refused here because they never mean what the
writer intended: a partial wildcard (``Book*`` is a literal word to RabbitMQ),
an empty word in a pattern (``a..b``), and whitespace in a pattern
(``"Booking.created "`` matches no routing key pubsubpy publishes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from pubsubpy.errors import InvalidTopic

__all__ = ["MAX_KEY_BYTES", "TopicTrie", "topic_matches", "validate_pattern", "validate_routing_key"]

MAX_KEY_BYTES = 255
"""AMQP 0-9-1 limits routing keys (a short string) to 255 bytes."""

T = TypeVar("T")


def _check_length(kind: str, value: str) -> None:
    if len(value.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidTopic(f"{kind} {value[:40]!r}... is longer than {MAX_KEY_BYTES} bytes")


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a well-formed binding pattern, else raise ``InvalidTopic`` (a partial
    wildcard, an empty word, whitespace anywhere, or more than 255 bytes)."""
    if not isinstance(pattern, str):
        raise InvalidTopic(f"topic pattern must be a str, got {type(pattern).__name__}")
    _check_length("topic pattern", pattern)
    if not pattern:
        raise InvalidTopic("topic pattern is empty; use '#' to match every routing key")
    spaces = [index for index, char in enumerate(pattern) if char.isspace()]
    if spaces:
        where = ", ".join(f"{pattern[i]!r} at index {i}" for i in spaces[:3]) + (", ..." if len(spaces) > 3 else "")
        stripped = ".".join(word.strip() for word in pattern.split("."))
        hint = f"; did you mean {stripped!r}?" if stripped and not any(c.isspace() for c in stripped) else ""
        raise InvalidTopic(f"topic pattern {pattern!r} contains whitespace ({where}), which RabbitMQ would match "
                           f"literally{hint or '; remove it'}")
    for word in pattern.split("."):
        if not word:
            raise InvalidTopic(f"topic pattern {pattern!r} has an empty word (two dots, or a dot at an end)")
        if word not in ("*", "#") and ("*" in word or "#" in word):
            raise InvalidTopic(
                f"topic pattern {pattern!r} has a partial wildcard {word!r}: "
                "'*' and '#' must stand alone between dots, e.g. 'Booking.*'"
            )
    return pattern


def validate_routing_key(key: str) -> str:
    """Return ``key`` if it can be published (no wildcards, no empty words, <= 255 bytes)."""
    if not isinstance(key, str):
        raise InvalidTopic(f"routing key must be a str, got {type(key).__name__}")
    _check_length("routing key", key)
    if not key:
        raise InvalidTopic("routing key is empty")
    for word in key.split("."):
        if not word:
            raise InvalidTopic(f"routing key {key!r} has an empty word")
        if "*" in word or "#" in word:
            raise InvalidTopic(f"routing key {key!r} contains a wildcard character")
    return key


class _Node(Generic[T]):
    __slots__ = ("children", "hash_child", "is_hash", "star_child", "values")

    def __init__(self, is_hash: bool = False) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.star_child: _Node[T] | None = None
        self.hash_child: _Node[T] | None = None
        self.is_hash = is_hash  # reached through '#': absorbs any number of words
        self.values: list[tuple[int, T]] = []

    def child(self, word: str) -> _Node[T]:
        if word == "*":
            if self.star_child is None:
                self.star_child = _Node()
            return self.star_child
        if word == "#":
            if self.hash_child is None:
                self.hash_child = _Node(is_hash=True)
            return self.hash_child
        node = self.children.get(word)
        if node is None:
            node = self.children[word] = _Node()
        return node


def _with_hash_children(nodes: list[_Node[T]]) -> list[_Node[T]]:
    """Add the '#' children of ``nodes`` (a '#' may match zero words), transitively, without duplicates."""
    result: dict[int, _Node[T]] = {}
    pending = nodes
    while pending:
        more: list[_Node[T]] = []
        for node in pending:
            if id(node) not in result:
                result[id(node)] = node
                if node.hash_child is not None:
                    more.append(node.hash_child)
        pending = more
    return list(result.values())


class TopicTrie(Generic[T]):
    """Patterns in a word trie, matched as an NFA one word at a time.

    The work per key is (words x live branches): it depends on how many
    wildcard paths a key can follow, not on how many patterns are stored.
    ``match`` returns the value of every matching pattern, each once, in the
    order the patterns were added.
    """

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._count = 0
        self._start: list[_Node[T]] | None = None

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: str, value: T) -> None:
        """Store ``value`` under ``pattern`` (a pattern may hold several values).

        Raises:
            InvalidTopic: a malformed pattern.
        """
        node = self._root
        for word in validate_pattern(pattern).split("."):
            node = node.child(word)
        node.values.append((self._count, value))
        self._count += 1
        self._start = None

    def match(self, routing_key: str) -> list[T]:
        """The values of every pattern that matches ``routing_key``, each once, in the order they were added.

        ```python
        trie: TopicTrie[str] = TopicTrie()
        trie.add("Booking.*", "any booking event")
        trie.add("#.deleted", "any deletion")
        trie.match("Booking.deleted")   # ["any booking event", "any deletion"]
        ```
        """
        active = self._start
        if active is None:
            active = self._start = _with_hash_children([self._root])
        if routing_key:
            for word in routing_key.split("."):
                following: list[_Node[T]] = []
                needs_closure = False
                for node in active:
                    exact = node.children.get(word)
                    if exact is not None:
                        following.append(exact)
                        needs_closure = needs_closure or exact.hash_child is not None
                    star = node.star_child
                    if star is not None:
                        following.append(star)
                        needs_closure = needs_closure or star.hash_child is not None
                    if node.is_hash:
                        following.append(node)
                if not following:
                    return []
                if needs_closure:  # only a '#' closure can reach a node twice; trie paths are unique
                    following = _with_hash_children(following)
                active = following
        hits = [node for node in active if node.values]
        if not hits:
            return []
        if len(hits) == 1:
            return [value for _, value in hits[0].values]
        return [value for _, value in sorted(item for node in hits for item in node.values)]

    def __iter__(self) -> Iterator[T]:
        stack = [self._root]
        items: list[tuple[int, T]] = []
        while stack:
            node = stack.pop()
            items.extend(node.values)
            stack.extend(node.children.values())
            stack.extend(child for child in (node.star_child, node.hash_child) if child is not None)
        return iter([value for _, value in sorted(items, key=lambda item: item[0])])


def topic_matches(pattern: str, routing_key: str) -> bool:
    """True when RabbitMQ would route ``routing_key`` through a binding on ``pattern``.

    ```python
    topic_matches("Booking.*", "Booking.updated")   # True
    topic_matches("a.#", "a")                       # True: '#' matches zero words
    topic_matches("*", "")                          # False: '*' is exactly one word
    ```

    Raises:
        InvalidTopic: a malformed pattern (``Book*``, ``a..b``).
    """
    trie: TopicTrie[bool] = TopicTrie()
    trie.add(pattern, True)
    return bool(trie.match(routing_key))
