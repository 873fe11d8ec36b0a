"""The adaptive poll schedule (mint_poll.pacing), on a simulated clock and a fixed rng."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from mint_common.errors import ConfigError
from mint_poll.api import DistcompApi
from mint_poll.pacing import HOT_WINDOW, Pacer, SimulatedClock, idle_polls
from tests.poll.conftest import AgentFactory, load, register
from tests.poll.submit_fixtures import wait_for


class FixedRandom(random.Random):
    """An rng whose every draw is `value` (0: no shortening; just below 1: the most)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


MOST_JITTER = FixedRandom(1 - 1e-12)
NO_JITTER = FixedRandom(0.0)


def pacer(clock: SimulatedClock, rng: random.Random = NO_JITTER, *, jitter: float = 0.1) -> Pacer:
    return Pacer(2, 60, jitter=jitter, clock=clock, rng=rng)


def schedule(pacer: Pacer, clock: SimulatedClock, count: int) -> list[float]:
    """The next `count` pauses, the clock moved on by each."""
    pauses = []
    for _ in range(count):
        pauses.append(pacer.next_delay())
        clock.now += pauses[-1]
    return pauses


def test_quick_for_the_hot_window_after_activity_then_backs_off_to_the_interval() -> None:
    clock = SimulatedClock(1000.0)
    pauses = schedule(pacer(clock), clock, 36)
    assert pauses[:30] == [2.0] * 30  # the hot minute
    assert pauses[30:] == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_capped_at_the_interval_and_never_below_the_minimum_with_any_jitter() -> None:
    for seed in range(20):
        clock = SimulatedClock()
        pauses = schedule(pacer(clock, random.Random(seed), jitter=1.0), clock, 200)
        assert min(pauses) >= 2.0
        assert max(pauses) <= 60.0
    clock = SimulatedClock()
    shortest = schedule(pacer(clock, MOST_JITTER), clock, 40)
    assert shortest[:30] == [2.0] * 30
    assert shortest[30:34] == pytest.approx([3.6, 7.2, 14.4, 28.8])
    assert shortest[-1] == pytest.approx(54.0)


def test_activity_resets_the_schedule_to_the_minimum() -> None:
    clock = SimulatedClock()
    paced = pacer(clock)
    schedule(paced, clock, 40)
    assert paced.next_delay() == 60.0
    clock.now += 10
    paced.activity()
    assert schedule(paced, clock, 30) == [2.0] * 30
    assert paced.next_delay() == 4.0


def test_a_minimum_above_the_interval_gives_a_fixed_interval() -> None:
    clock = SimulatedClock()
    fixed = Pacer(30, 10, clock=clock)
    assert schedule(fixed, clock, 12) == [10.0] * 12


def test_an_idle_hour_costs_fewer_requests_than_the_legacy_client() -> None:
    """Worst case: every pause shortened by the whole poll_jitter (0.1 by default)."""
    hour = 3600.0
    clock = SimulatedClock()
    assert idle_polls(Pacer(30, 30, clock=clock), 0.0, hour, clock) == 120  # legacy
    clock = SimulatedClock()
    # the hour that starts with the last activity, hot minute included
    assert idle_polls(pacer(clock, MOST_JITTER), 0.0, hour, clock) == 98
    clock = SimulatedClock()
    # an hour after the hot window
    assert idle_polls(pacer(clock, MOST_JITTER), HOT_WINDOW, hour, clock) == 69
    clock = SimulatedClock()
    # a later idle hour: one poll per 54 s at worst
    assert idle_polls(pacer(clock, MOST_JITTER), 5 * hour, hour, clock) == 66
    for seed in range(10):
        clock = SimulatedClock()
        assert idle_polls(pacer(clock, random.Random(seed)), 0.0, hour, clock) <= 98


def test_pauses_must_be_positive() -> None:
    with pytest.raises(ValueError, match="longer than 0"):
        Pacer(0, 60)


class RecordingPacer(Pacer):
    """A Pacer that keeps every pause it hands out."""

    def __init__(self, *args: object, **options: object) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.delays: list[float] = []

    def next_delay(self) -> float:
        self.delays.append(super().next_delay())
        return self.delays[-1]


@pytest.mark.parametrize("max_parallel", [1, 2])
def test_agent_takes_the_next_calculation_of_a_chain_at_the_quickest_pace(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path, max_parallel: int
) -> None:
    """The agent has been idle for an hour (its pacer's clock says so) when the first
    calculation comes; after it, every pause until the second one is taken is poll_min,
    where a fixed schedule would wait up to poll_interval (30 s) for it."""
    agent = make_agent(poll_min=0.05, poll_interval=30, max_parallel=max_parallel)
    clock = SimulatedClock(1000.0)
    pacer = RecordingPacer(0.05, 30, jitter=0.1, clock=clock)
    clock.now += 3600
    agent.pacer = pacer
    first = register(workflow, tmp_path)
    loop = threading.Thread(target=agent.run_forever)
    loop.start()
    try:
        wait_for(lambda: workflow.calc_progress(first) == "got return", "the first delivery")
        polls_before = len(pacer.delays)
        # Only once the agent is idle again between polls does the chain's next one come.
        wait_for(lambda: len(pacer.delays) > polls_before, "a pause after the first delivery")
        second = register(workflow, tmp_path)
        wait_for(lambda: workflow.calc_progress(second) == "got return", "the second delivery")
    finally:
        agent.stop.set()
        loop.join(timeout=30)
    assert not loop.is_alive()
    assert pacer.delays, "the loop never paused"
    assert set(pacer.delays) == {0.05}
    assert workflow.calc_status(second) == "completed"


def test_poll_min_is_a_duration_above_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(tmp_path, "http://127.0.0.1:9", poll_min="1m").poll_min == 60.0
    assert load(tmp_path, "http://127.0.0.1:9").poll_min == 2.0
    monkeypatch.setenv("MINT_POLL_POLL_MIN", "0")
    with pytest.raises(ConfigError, match="MINT_POLL_POLL_MIN"):
        load(tmp_path, "http://127.0.0.1:9")
