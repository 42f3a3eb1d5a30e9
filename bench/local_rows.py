"""Rows that need no broker: routing, the in-process path."""

from __future__ import annotations

import random
import time

from bench.common import MODEL, PAYLOAD, ROUTING_KEY, Booking, Row, alternate, rate
from bench.routing import compile_pattern, regex_key
from pubsubpy.testing import memory_pubsub
from pubsubpy.topics import TopicTrie

WORDS = [f"w{i}" for i in range(200)]


def _patterns(count: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    patterns = []
    for _ in range(count):
        words = [rnd.choice(WORDS) for _ in range(rnd.randint(2, 4))]
        roll = rnd.random()
        if roll < 0.2:
            words[rnd.randrange(len(words))] = "*"
        elif roll < 0.3:
            words[-1] = "#"
        patterns.append(".".join(words))
    return patterns


def _keys(count: int, seed: int = 11) -> list[str]:
    rnd = random.Random(seed)
    return [".".join(rnd.choice(WORDS) for _ in range(rnd.randint(2, 4))) for _ in range(count)]


def _trie_rate(patterns: list[str], keys: list[str]) -> float:
    trie: TopicTrie[int] = TopicTrie()
    for i, pattern in enumerate(patterns):
        trie.add(pattern, i)
    return rate(len(keys), lambda: [trie.match(key) for key in keys])


def routing(pattern_count: int, key_count: int, rounds: int) -> tuple[Row, Row]:
    patterns = _patterns(pattern_count)
    keys = _keys(key_count)
    compiled = [compile_pattern(p) for p in patterns]

    few = keys[:500]  # the scan costs milliseconds per key; its rate per key needs no more

    def linear() -> float:
        def work() -> None:
            for key in few:
                text = regex_key(key)
                [i for i, rx in enumerate(compiled) if rx.fullmatch(text)]
        return rate(len(few), work)

    vs_regex = alternate(Row(f"routing: TopicTrie vs regex scan, {pattern_count} patterns", "keys/s",
                             target=">= 50"), rounds, lambda: _trie_rate(patterns, keys), linear)
    small = patterns[:10]
    scaling = alternate(Row(f"routing: trie at {pattern_count} patterns vs at 10", "keys/s", target=">= 0.33",
                            note="cost at 10,000 within 3x of cost at 10"), rounds,
                        lambda: _trie_rate(patterns, keys), lambda: _trie_rate(small, keys))
    return vs_regex, scaling


def in_process(count: int, rounds: int) -> Row:
    body = Booking(**PAYLOAD).model_dump_json().encode()  # type: ignore[arg-type]

    def ours() -> float:
        app = memory_pubsub(schemas=[Booking], on_unroutable="ignore", telemetry=False)

        @app.subscribe(ROUTING_KEY)
        def on_booking(event: Booking) -> None:
            pass

        app.declare()

        def work() -> None:
            for _ in range(count):
                app.publish_model_event(MODEL, "updated", PAYLOAD)
            result = app.drain(timeout=600)
            assert result.handled == count, result

        return rate(count, work)

    def baseline() -> float:
        return rate(count, lambda: [Booking.model_validate_json(body) for _ in range(count)])

    return alternate(Row("in-process: memory publish + drain vs bare model_validate_json", "msg/s",
                         target=">= 0.3"), rounds, ours, baseline)


def timed_ms(work: object) -> float:
    started = time.perf_counter()
    work()  # type: ignore[operator]
    return (time.perf_counter() - started) * 1000
