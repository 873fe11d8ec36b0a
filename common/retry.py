"""Retry policy: exponential backoff with full jitter, a deadline, and the legacy `retry:N,S` form.

Usable as a decorator (`@policy`), a call (`policy.call(fn)`) or a loop:

    for attempt in policy.attempts():
        with attempt:
            do_the_thing()

Clock, sleep and random source are injectable so tests never sleep.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar

from mint_common.errors import ConfigError, MintError, UnavailableError

T = TypeVar("T")
log = logging.getLogger(__name__)

_LEGACY = re.compile(r"^retry:(\d+),(\d+(?:\.\d+)?)$")
#: What the legacy clients do when not told otherwise (MInt manual 1.0.1, 4.6.1): 5 retries
#: after the first try, 60 s apart, no backoff or jitter, so 6 attempts. `retry:5,60` on a
#: legacy command line means the same policy.
LEGACY_DEFAULT_RETRY = "retry:5,60"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    `max_attempts` counts the first try. Delay before retry n (n = 1, 2, ...) is
    `min(max_delay, base_delay * backoff ** (n - 1))`, drawn uniformly from
    [0, that] when `jitter` is on ("full jitter"). `deadline` caps the total
    time in seconds: no retry starts that could not begin before it.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    backoff: float = 2.0
    jitter: bool = True
    deadline: Optional[float] = None
    retry_on: tuple[type[BaseException], ...] = (UnavailableError,)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.backoff < 1:
            raise ValueError(f"backoff must be at least 1, got {self.backoff}")

    @classmethod
    def parse_legacy(cls, text: str, **overrides: Any) -> RetryPolicy:
        """Parse the legacy `retry:<count>,<interval>`: count retries after the first try,
        a fixed interval in seconds apart, no backoff and no jitter (as the legacy clients do)."""
        match = _LEGACY.match(text.strip())
        if not match:
            raise ValueError(f"expected retry:<count>,<interval> (e.g. retry:5,60), got {text!r}")
        retries, interval = int(match.group(1)), float(match.group(2))
        settings: dict[str, Any] = {
            "max_attempts": retries + 1,
            "base_delay": interval,
            "max_delay": interval,
            "backoff": 1.0,
            "jitter": False,
        }
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def legacy_default(cls) -> RetryPolicy:
        """The legacy clients' default (`LEGACY_DEFAULT_RETRY`), for mint-ssh and mint-poll."""
        return cls.parse_legacy(LEGACY_DEFAULT_RETRY)

    @classmethod
    def from_config(
        cls, value: Any, *, source: str = "config", key: str = "retry", **overrides: Any
    ) -> RetryPolicy:
        """Build a policy from a config value: `retry:N,S` or a mapping of this class's fields."""
        try:
            if isinstance(value, RetryPolicy):
                return replace(value, **overrides)
            if isinstance(value, str):
                return cls.parse_legacy(value, **overrides)
            if isinstance(value, Mapping):
                allowed = {
                    "max_attempts",
                    "base_delay",
                    "max_delay",
                    "backoff",
                    "jitter",
                    "deadline",
                }
                unknown = sorted(set(value) - allowed)
                if unknown:
                    raise ValueError(
                        f"unknown retry setting {unknown[0]!r}; known: {', '.join(sorted(allowed))}"
                    )
                return cls(**{**dict(value), **overrides})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: key {key!r}: {exc}") from exc
        raise ConfigError(
            f"{source}: key {key!r}: expected 'retry:<count>,<interval>' or a mapping,"
            f" got {value!r}"
        )

    def delay_for(self, retry_number: int) -> float:
        """The pause before retry number `retry_number` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * self.backoff ** (retry_number - 1))
        return self.rng.uniform(0, ceiling) if self.jitter else ceiling

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retry_on)

    def attempts(
        self,
        what: str = "operation",
        on_retry: Optional[Callable[[int, BaseException, float], None]] = None,
    ) -> Iterator[Attempt]:
        """Yield attempts until one succeeds; raise when attempts or time run out."""
        start = self.clock()
        number = 0
        while True:
            number += 1
            attempt = Attempt(number, self)
            yield attempt
            if attempt.failure is None:
                return
            delay = self.delay_for(number)
            elapsed = self.clock() - start
            out_of_attempts = number >= self.max_attempts
            out_of_time = self.deadline is not None and elapsed + delay > self.deadline
            if out_of_attempts or out_of_time:
                raise _exhausted(what, number, attempt.failure)
            if on_retry is not None:
                on_retry(number, attempt.failure, delay)
            else:
                log.warning(
                    "%s failed (attempt %d of %d): %s; retrying in %.1f s",
                    what,
                    number,
                    self.max_attempts,
                    attempt.failure,
                    delay,
                )
            self.sleep(delay)

    def call(
        self, fn: Callable[..., T], *args: Any, what: Optional[str] = None, **kwargs: Any
    ) -> T:
        """Call `fn` under this policy and return its result."""
        label = what or str(getattr(fn, "__name__", "operation"))
        for attempt in self.attempts(label):
            with attempt:
                return fn(*args, **kwargs)
        raise AssertionError("unreachable: attempts() either returns a success or raises")

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, **kwargs)

        return wrapper


class Attempt:
    """One try; as a context manager it swallows retryable errors and records them."""

    def __init__(self, number: int, policy: RetryPolicy) -> None:
        self.number = number
        self.policy = policy
        self.failure: Optional[BaseException] = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        if exc is not None and self.policy.is_retryable(exc):
            self.failure = exc
            return True
        return False


def _exhausted(what: str, attempts: int, last: BaseException) -> BaseException:
    # A retryable error of another kind (say an AuthError a caller chose to retry) keeps its
    # exit status; everything else becomes "unavailable after retries".
    if isinstance(last, MintError) and last.exit_status != UnavailableError.exit_status:
        return last
    error = UnavailableError(f"{what} failed after {attempts} attempt(s): {last}")
    error.__cause__ = last
    return error
