"""``pubsubpy replay --since 7d [--until T] [--dry-run] [--rebuild [--force]] [--allow-gap] [--pattern P]``.

On a terminal a progress line shows the share of the window read, the rate and
the time left; elsewhere (a log file, CI) a line every 10,000 events. Exit
codes as every command's, and 1 when the log no longer holds the start of the
window (``LogGap``) or the replay stopped (``ReplayStopped``, which names the
time to resume from).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import click

from pubsubpy.app import PubSub
from pubsubpy.errors import ReplayStopped
from pubsubpy.messages import ReplayResult

__all__ = ["ProgressLine", "describe_dry_run", "register_replay_command"]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
_EVERY = 10_000   # events between two progress lines when not on a terminal
_REDRAW = 0.2     # seconds between two redraws on a terminal
_WIDTH = 24       # characters of the bar


class ProgressLine:
    """Draws ``[######......]  42%  12,345 events  8,100/s  ETA 0:00:12`` on ``stream``."""

    def __init__(self, stream: TextIO, terminal: bool | None = None) -> None:
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self.started = time.monotonic()
        self.drawn = self.started  # the first line after one redraw interval: a rate needs some events
        self.shown = 0

    def __call__(self, result: ReplayResult, share: float | None) -> None:
        now = time.monotonic()
        events = result.messages
        if self.terminal:
            if now - self.drawn >= _REDRAW:
                self.drawn = now
                self.stream.write("\r" + self.line(events, share, now))
                self.stream.flush()
        elif events - self.shown >= _EVERY:
            self.shown = events
            self.stream.write(self.line(events, share, now) + "\n")

    def line(self, events: int, share: float | None, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = events / elapsed
        if share is None:
            return f"  {events:,} events  {rate:,.0f}/s"
        filled = int(share * _WIDTH)
        eta = elapsed * (1 - share) / share if share > 0 else 0.0
        minutes, seconds = divmod(int(eta), 60)
        hours, minutes = divmod(minutes, 60)
        return (f"  [{'#' * filled}{'.' * (_WIDTH - filled)}] {share:4.0%}  {events:,} events  {rate:,.0f}/s  "
                f"ETA {hours}:{minutes:02d}:{seconds:02d}")

    def end(self) -> None:
        if self.terminal and self.drawn > self.started:
            self.stream.write("\n")


def describe_dry_run(result: ReplayResult) -> str:
    """What ``--dry-run`` prints: counts, the time range, the gap, events per routing key."""
    first = result.first_at.isoformat(timespec="seconds") if result.first_at else "-"
    last = result.last_at.isoformat(timespec="seconds") if result.last_at else "-"
    lines = [
        f"window: {result.since.isoformat(timespec='seconds') if result.since else '-'} .. "
        f"{result.until.isoformat(timespec='seconds') if result.until else 'now'}",
        f"events to replay: {result.messages:,} (published {first} .. {last})",
        f"would dead-letter before any handler runs: {result.dead_lettered:,}"
        + (f" ({', '.join(f'{k}={v}' for k, v in sorted(result.reasons.items()))})" if result.reasons else ""),
        f"read from the log: {result.read:,}; outside the window {result.outside:,}, not subscribed here "
        f"{result.unsubscribed:,}, repeated ids {result.repeated:,}",
        "retention gap: none" if result.gap is None else f"retention gap: {result.gap} of the window is gone "
                                                         "(the replay needs --allow-gap)",
    ]
    if result.already_run is None:
        lines.append("already run: unknown (the inbox cannot tell: idempotent handlers skip what they ran)")
    else:
        lines += [f"already run by {handler} (its inbox skips them): {count:,}"
                  for handler, count in sorted(result.already_run.items())]
    lines += [f"warning: {text}" for text in result.warnings]
    lines.append("events by routing key:")
    lines += [f"  {key}: {count:,}" for key, count in sorted(result.keys.items())]
    return "\n".join(lines)


def register_replay_command(cli: click.Group, with_connection: Decorator, load: Callable[..., PubSub],
                            run: Callable[[Callable[[], int | None]], None]) -> None:
    @cli.command(help="Run the service's handlers over the event log (event_log) from --since: a service that "
                      "starts late, a restored database, a rebuilt read model.")
    @with_connection
    @click.option("--since", required=True, help="7d, 12h, 30m, or an ISO 8601 time (2026-12-01T00:00Z)")
    @click.option("--until", default=None, help="the same forms (default: now)")
    @click.option("--pattern", "patterns", multiple=True, help="only the subscriptions of this pattern (repeatable)")
    @click.option("--dry-run", is_flag=True, help="run nothing: count what would run, the range, the gap")
    @click.option("--allow-gap", is_flag=True, help="replay what is left when retention dropped part of the window")
    @click.option("--rebuild", is_flag=True, help="run every event again: the inbox forgets what the idempotent "
                                                  "handlers replayed ran (stop the workers first)")
    @click.option("--force", is_flag=True, help="with --rebuild: even while workers consume")
    def replay(url: str | None, exchange: str | None, service: str | None, app_path: str | None, since: str,
               until: str | None, patterns: tuple[str, ...], dry_run: bool, allow_gap: bool, rebuild: bool,
               force: bool) -> None:
        def action() -> int:
            app = load(app_path, url, exchange, service)
            progress = ProgressLine(sys.stderr)
            try:
                result = app.replay(since, until, patterns or None, dry_run=dry_run, allow_gap=allow_gap,
                                    rebuild=rebuild, force=force, progress=None if dry_run else progress)
            except ReplayStopped as exc:
                progress.end()
                resume = exc.resume_from.isoformat(timespec="seconds") if exc.resume_from else since
                click.echo(f"error: {exc}\nresume with: --since {resume}", err=True)
                return 1
            progress.end()
            click.echo(describe_dry_run(result) if dry_run else str(result))
            for text in [] if dry_run else result.warnings:
                click.echo(f"warning: {text}", err=True)
            return 0

        run(action)
