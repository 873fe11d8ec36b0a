from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mint_common.errors import AuthError, ConfigError, InputError, UnavailableError
from mint_common.retry import RetryPolicy


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(clock: FakeClock, **kwargs: object) -> RetryPolicy:
    return RetryPolicy(clock=clock, sleep=clock.sleep, rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


class Flaky:
    def __init__(self, failures: int, exc: BaseException | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.exc = exc or UnavailableError("connection refused")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def test_exponential_backoff_without_jitter() -> None:
    clock = FakeClock()
    flaky = Flaky(4)
    result = policy(clock, max_attempts=5, base_delay=1, backoff=2, max_delay=5, jitter=False).call(
        flaky
    )
    assert result == "ok"
    assert flaky.calls == 5
    assert clock.sleeps == [1, 2, 4, 5]


def test_full_jitter_stays_within_each_ceiling() -> None:
    clock = FakeClock()
    flaky = Flaky(5)
    policy(clock, max_attempts=6, base_delay=2, backoff=3, max_delay=30).call(flaky)
    ceilings = [2, 6, 18, 30, 30]
    assert len(clock.sleeps) == 5
    for slept, ceiling in zip(clock.sleeps, ceilings):
        assert 0 <= slept <= ceiling
    assert len(set(clock.sleeps)) > 1


def test_exhaustion_raises_unavailable_naming_attempts() -> None:
    clock = FakeClock()
    flaky = Flaky(10, ConnectionError("reset by peer"))
    retry = policy(clock, max_attempts=3, base_delay=1, jitter=False, retry_on=(ConnectionError,))
    with pytest.raises(
        UnavailableError, match=r"fetch failed after 3 attempt\(s\): reset by peer"
    ) as info:
        retry.call(flaky, what="fetch")
    assert flaky.calls == 3
    assert isinstance(info.value.__cause__, ConnectionError)
    assert info.value.exit_status == 69


def test_non_retryable_error_propagates_at_once() -> None:
    clock = FakeClock()
    flaky = Flaky(3, InputError("bad json"))
    with pytest.raises(InputError):
        policy(clock).call(flaky)
    assert flaky.calls == 1
    assert clock.sleeps == []


def test_retryable_error_of_other_kind_keeps_its_exit_status() -> None:
    clock = FakeClock()
    flaky = Flaky(5, AuthError("token refused"))
    with pytest.raises(AuthError):
        policy(clock, max_attempts=2, retry_on=(AuthError,)).call(flaky)
    assert flaky.calls == 2


def test_deadline_stops_retrying_before_it_would_be_passed() -> None:
    clock = FakeClock()
    flaky = Flaky(100)
    retry = policy(clock, max_attempts=100, base_delay=10, backoff=1, jitter=False, deadline=35)
    with pytest.raises(UnavailableError):
        retry.call(flaky)
    assert clock.sleeps == [10, 10, 10]
    assert flaky.calls == 4


def test_decorator_form_passes_arguments() -> None:
    clock = FakeClock()
    calls: list[int] = []

    @policy(clock, jitter=False)
    def add(a: int, b: int) -> int:
        calls.append(a)
        if len(calls) < 2:
            raise UnavailableError("busy")
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"
    assert clock.sleeps == [1.0]


def test_loop_form_and_retry_callback() -> None:
    clock = FakeClock()
    flaky = Flaky(2)
    seen: list[tuple[int, str, float]] = []
    retry = policy(clock, base_delay=5, backoff=1, jitter=False)
    for attempt in retry.attempts("poll", on_retry=lambda n, e, d: seen.append((n, str(e), d))):
        with attempt:
            value = flaky()
    assert value == "ok"
    assert seen == [(1, "connection refused", 5.0), (2, "connection refused", 5.0)]


def test_retry_logs_each_failure(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with caplog.at_level("WARNING"):
        policy(clock, jitter=False).call(Flaky(1), what="calc-request")
    assert (
        "calc-request failed (attempt 1 of 5): connection refused; retrying in 1.0 s" in caplog.text
    )


@pytest.mark.parametrize(
    ("text", "attempts", "delay"),
    [
        ("retry:5,60", 6, 60.0),
        ("retry:0,1", 1, 1.0),
        ("retry:3,2.5", 4, 2.5),
        (" retry:1,0 ", 2, 0.0),
    ],
    ids=["default", "no-retries", "float-interval", "spaces"],
)
def test_legacy_notation(text: str, attempts: int, delay: float) -> None:
    parsed = RetryPolicy.parse_legacy(text)
    assert parsed.max_attempts == attempts
    assert (parsed.base_delay, parsed.max_delay, parsed.backoff, parsed.jitter) == (
        delay,
        delay,
        1.0,
        False,
    )


def test_legacy_five_retries_sixty_seconds_apart_with_fake_clock() -> None:
    clock = FakeClock()
    retry = RetryPolicy.parse_legacy("retry:5,60", clock=clock, sleep=clock.sleep)
    flaky = Flaky(100)
    with pytest.raises(UnavailableError):
        retry.call(flaky)
    assert flaky.calls == 6
    assert clock.sleeps == [60.0] * 5


@pytest.mark.parametrize("text", ["retry:5", "retry:a,1", "retry:-1,5", "5,60", "retry:5,60,1", ""])
def test_legacy_notation_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="retry:<count>,<interval>"):
        RetryPolicy.parse_legacy(text)


@given(count=st.integers(0, 1000), interval=st.integers(0, 100000))
def test_legacy_round_trip(count: int, interval: int) -> None:
    parsed = RetryPolicy.parse_legacy(f"retry:{count},{interval}")
    assert parsed.max_attempts == count + 1
    assert parsed.delay_for(1) == interval


def test_from_config_accepts_mapping_and_policy() -> None:
    parsed = RetryPolicy.from_config({"max_attempts": 3, "base_delay": 0.5, "deadline": 10})
    assert (parsed.max_attempts, parsed.base_delay, parsed.deadline) == (3, 0.5, 10)
    assert RetryPolicy.from_config(parsed, max_attempts=9).max_attempts == 9


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"attempts": 3}, "unknown retry setting 'attempts'"),
        ({"max_attempts": 0}, "at least 1"),
        (42, "expected 'retry:<count>,<interval>' or a mapping"),
        ({"backoff": 0.5}, "backoff"),
        ({"base_delay": -1}, "negative"),
    ],
    ids=["unknown", "zero-attempts", "wrong-type", "backoff", "negative"],
)
def test_from_config_errors_name_source_and_key(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy.from_config(value, source="/etc/mint/mint-poll.yaml", key="retry")
    assert "/etc/mint/mint-poll.yaml: key 'retry'" in str(info.value)
    assert fragment in str(info.value)
