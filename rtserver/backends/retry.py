"""Waiting between attempts: the one backoff every retry loop of rtserver uses.

``Backoff`` paces the loops that keep something going through an outage (the Redis bus's
connection, the outbox relay's PostgreSQL session, a consumer group's reads, the schedule
projector): from ``RETRY_MIN_S``, doubling up to ``RETRY_MAX_S``, each pause jittered
±50 % so that many processes coming back at once do not retry in step. ``attempt_delay_s``
spaces the attempts at one delivery (a webhook, a push): exponential with full jitter.
"""

from __future__ import annotations

import random

import trio

#: Shortest and longest pause of a ``Backoff``, seconds.
RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0


class Backoff:
    """Pauses that double from ``min_s`` up to ``max_s``; ``reset`` once it worked again."""

    def __init__(self, min_s: float = RETRY_MIN_S, max_s: float = RETRY_MAX_S) -> None:
        self.min_s = min_s
        self.max_s = max_s
        #: The next pause, before its jitter (what a log line announces).
        self.next_s = min_s

    def reset(self) -> None:
        self.next_s = self.min_s

    async def pause(self) -> None:
        """Sleep the next pause, jittered ±50 %; the one after is twice as long (capped)."""
        await trio.sleep(self.next_s * random.uniform(0.5, 1.5))
        self.next_s = min(self.next_s * 2, self.max_s)


def attempt_delay_s(attempt: int, initial_s: float, max_s: float) -> float:
    """The pause before attempt number ``attempt`` (2 or more) of one delivery: exponential
    from ``initial_s``, capped at ``max_s``, with full jitter."""
    return random.uniform(0, min(max_s, initial_s * 2 ** (attempt - 2)))
