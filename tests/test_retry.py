"""The backoff every retry loop uses: doubling, capped, jittered, reset after a success."""

import pytest
import trio

from rtserver.backends.retry import Backoff, attempt_delay_s


async def test_pauses_double_up_to_the_cap_jittered_and_start_over_after_a_reset(autojump_clock):
    backoff = Backoff(min_s=0.1, max_s=1.0)
    nominal = []
    for _ in range(6):
        nominal.append(backoff.next_s)
        started = trio.current_time()
        await backoff.pause()
        assert 0.5 * nominal[-1] <= trio.current_time() - started <= 1.5 * nominal[-1]
    assert nominal == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next_s == 0.1


def test_a_delivery_attempt_waits_at_most_its_exponential_bound():
    for attempt, bound in ((2, 1.0), (3, 2.0), (4, 4.0), (12, 300.0)):
        delays = [attempt_delay_s(attempt, 1.0, 300.0) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays) and max(delays) > bound / 2
