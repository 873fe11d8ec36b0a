"""Adaptive pacing of polls: quick after activity, backing off towards the interval when idle.

The agent asks the server for work, and `mint-poll submit` asks for its calculation's
progress, on one schedule. With `t` the time since the last activity (a calculation
found or delivered; for `submit`, a change of progress):

- while `t < hot` (HOT_WINDOW, 60 s): every `minimum` (`poll_min`, 2 s), so that the next
  calculation of a chain, registered seconds after the last one was delivered, is taken
  at once;
- then the n-th pause (n = 1, 2, ...) is `min(maximum, minimum * GROWTH**n)`: 4, 8, 16,
  32, then 60 s (`poll_interval`) with the defaults;
- each pause is shortened at random by up to `jitter` (`poll_jitter`) of itself, so that
  many agents started together drift apart, and is never shorter than `minimum` nor
  longer than `maximum`.

Requests in an idle hour, at worst (every pause shortened by the full jitter), with the
defaults: 30 in the hot minute, 4 while growing (54 s), then one per 54 s: 30 + 4 + 64
= 98 in the hour that starts with the last activity, 69 in the hour after the hot
minute and 66 in any later one, against the legacy client's 120 (one per 30 s); the
agent adds one poll right after it has taken a calculation. `idle_polls` counts them
for any setting.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional

#: How long after an activity the polls stay at their quickest.
HOT_WINDOW = 60.0
#: The factor by which each pause after the hot window grows, up to the interval.
GROWTH = 2.0
#: The default of `poll_min`: the quickest poll.
POLL_MIN = 2.0


class Pacer:
    """The pauses between polls (see the module docstring); thread-safe enough for one
    loop that asks `next_delay` and any thread that calls `activity`."""

    def __init__(
        self,
        minimum: float,
        maximum: float,
        *,
        jitter: float = 0.0,
        hot: float = HOT_WINDOW,
        growth: float = GROWTH,
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[random.Random] = None,
    ) -> None:
        if maximum <= 0 or minimum <= 0:
            raise ValueError("the pauses must be longer than 0 s")
        self.maximum = maximum
        # A poll_min above the interval (a fixed interval asked for) gives a fixed interval.
        self.minimum = min(minimum, maximum)
        self.jitter = jitter
        self.hot = hot
        self.growth = growth
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (poll jitter, not cryptography)
        self._last_activity = clock()
        self._backoff_steps = 0
        self.last_delay = self.minimum

    def activity(self) -> None:
        """Something happened: poll quickly again for the hot window."""
        self._last_activity = self._clock()
        self._backoff_steps = 0

    def next_delay(self) -> float:
        """The pause before the next poll."""
        if self._clock() - self._last_activity < self.hot:
            base = self.minimum
        else:
            base = min(self.maximum, self.minimum * self.growth ** (self._backoff_steps + 1))
            # The exponent stops at the cap, so that a long idle spell cannot overflow it.
            if base < self.maximum:
                self._backoff_steps += 1
        shortened = base * (1.0 - self.jitter * self._rng.random())
        self.last_delay = max(self.minimum, shortened)
        return self.last_delay


def idle_polls(pacer: Pacer, start: float, window: float, clock: SimulatedClock) -> int:
    """How many polls `pacer` makes in `(start, start + window]` after its last activity at
    `clock`'s present time, nothing being found (the clock is advanced by each pause)."""
    origin = clock.now
    count = 0
    while True:
        clock.now += pacer.next_delay()
        offset = clock.now - origin
        if offset > start + window:
            return count
        if offset > start:
            count += 1


class SimulatedClock:
    """A clock for `Pacer` whose time moves only when told (for schedules and tests)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
