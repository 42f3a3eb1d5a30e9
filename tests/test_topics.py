"""Topic matching: a table, a property test against a reference matcher, and validation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pubsubpy import InvalidTopic
from pubsubpy.topics import TopicTrie, topic_matches, validate_pattern, validate_routing_key

# (pattern, routing key, RabbitMQ's answer)
ROUTING_TABLE: list[tuple[str, str, bool]] = [
    ("a.#", "a", True),
    ("#.a", "a", True),
    ("#", "", True),
    ("#", "a.b.c", True),
    ("*", "", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("a.*", "a.b.c", False),
    ("a.*", "a.", True),
    ("a.*", "a", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a..c", True),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.b.b.c", True),
    ("a.#.c", "a.b.b.d", False),
    ("#.#", "", True),
    ("#.#", "a.b", True),
    ("#.*", "", False),
    ("#.*", "a", True),
    ("*.#", "a", True),
    ("*.#", "", False),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "b", True),
    ("#.b.#", "a.c", False),
    ("Booking.*", "Booking.updated", True),
    ("Booking.*", "Booking", False),
    ("Booking.*", "booking.updated", False),
    ("Booking.updated", "Booking.updated", True),
    ("Booking.updated", "Booking.updated.x", False),
    ("*.updated", "Room.updated", True),
    ("#.updated", "shop.Room.updated", True),
    ("a.*.#", "a.b", True),
    ("a.*.#", "a", False),
    ("a.#.#.b", "a.b", True),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("ünï.*", "ünï.cödé", True),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), ROUTING_TABLE)
def test_routing_table(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected
    trie: TopicTrie[str] = TopicTrie()
    trie.add(pattern, pattern)
    assert trie.match(key) == ([pattern] if expected else [])


def test_trie_returns_every_matching_value_once_in_insertion_order() -> None:
    trie: TopicTrie[int] = TopicTrie()
    for i, pattern in enumerate(["#", "a.*", "a.b", "*.b", "#.b", "a.#", "c.*", "a.b"]):
        trie.add(pattern, i)
    assert trie.match("a.b") == [0, 1, 2, 3, 4, 5, 7]
    assert trie.match("c") == [0]
    assert trie.match("") == [0]
    assert list(trie) == list(range(8)) and len(trie) == 8


@pytest.mark.parametrize("pattern", ["Book*", "a.b#", "*a", "a..b", ".a", "a.", "", "a.#x", "x" * 256])
def test_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidTopic):
        validate_pattern(pattern)
    with pytest.raises(ValueError):  # InvalidTopic is a ValueError too
        topic_matches(pattern, "a")


@pytest.mark.parametrize("key", ["", "a..b", "a.*", "a.#", ".a", "é" * 200])
def test_invalid_routing_keys_are_refused_for_publishing(key: str) -> None:
    with pytest.raises(InvalidTopic):
        validate_routing_key(key)


def test_partial_wildcard_error_says_how_to_fix_it() -> None:
    with pytest.raises(InvalidTopic, match=r"'Book\*'.*'Booking\.\*'"):
        validate_pattern("Book*")


def reference_match(pattern: str, key: str) -> bool:
    """RabbitMQ's rules written as plainly as possible: a recursive word matcher."""
    def go(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        head, rest = p[0], p[1:]
        if head == "#":
            return any(go(rest, k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (head == "*" or head == k[0]) and go(rest, k[1:])
    return go(pattern.split("."), key.split(".") if key else [])


words = st.sampled_from(["a", "b", "c", ""])
pattern_words = st.sampled_from(["a", "b", "c", "*", "#"])
keys = st.lists(words, min_size=0, max_size=6).map(".".join)
patterns = st.lists(pattern_words, min_size=1, max_size=6).map(".".join)


@settings(max_examples=3000, deadline=None)
@given(patterns, keys)
def test_trie_agrees_with_the_reference_matcher(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) is reference_match(pattern, key)


@settings(max_examples=300, deadline=None)
@given(st.lists(patterns, min_size=1, max_size=30, unique=True), keys)
def test_trie_with_many_patterns_agrees_with_a_linear_scan(many: list[str], key: str) -> None:
    trie: TopicTrie[str] = TopicTrie()
    for pattern in many:
        trie.add(pattern, pattern)
    assert trie.match(key) == [p for p in many if reference_match(p, key)]


def test_regex_baseline_used_by_the_benchmark_agrees() -> None:
    from bench.routing import compile_pattern, regex_matches

    for pattern, key, expected in ROUTING_TABLE:
        assert regex_matches(compile_pattern(pattern), key) is expected, (pattern, key)
    assert isinstance(compile_pattern("a.#"), re.Pattern)


@settings(max_examples=1000, deadline=None)
@given(patterns, keys)
def test_regex_baseline_agrees_with_the_reference_matcher(pattern: str, key: str) -> None:
    from bench.routing import compile_pattern, regex_matches

    assert regex_matches(compile_pattern(pattern), key) is reference_match(pattern, key)
