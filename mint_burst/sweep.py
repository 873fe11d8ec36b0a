"""What-if sweeps: replay one trace over a grid of settings and find the Pareto front.

`--sweep idle_timeout=5m,10m,20m --sweep max_nodes=8,16,32` is a 3x3 grid; each
combination is replayed once per policy. A row is on the front when no other row
is at least as good on both node-hours billed and mean wait and better on one:
those are the settings worth choosing between; every other row costs more for
the same wait, or waits longer for the same cost.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from mint_burst.simulate import Policy, SimResult, TraceJob, simulate
from mint_common.errors import UsageError
from mint_common.timeutil import format_duration, parse_duration

Value = Union[int, float]
MAX_COMBINATIONS = 1000


def _count(text: str) -> int:
    number = int(text)
    if not 1 <= number <= 100_000:
        raise ValueError(f"{number} is not between 1 and 100000")
    return number


def _duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds < 0:
        raise ValueError(f"{text!r} is negative")
    return seconds


def _positive_duration(text: str) -> float:
    seconds = _duration(text)
    if seconds == 0:
        raise ValueError("it must be above 0")
    return seconds


# The settings simulate() takes, each with the parser of one value on the command line.
SWEEP_KEYS: dict[str, Callable[[str], Value]] = {
    "idle_timeout": _duration,
    "max_nodes": _count,
    "boot_time": _duration,
    "poll_interval": _positive_duration,
}
DURATION_KEYS = frozenset({"idle_timeout", "boot_time", "poll_interval"})


def parse_sweeps(specs: Sequence[str]) -> dict[str, tuple[Value, ...]]:
    """`KEY=V1,V2,...` per `--sweep` option into {key: values}, in the order given."""
    grid: dict[str, tuple[Value, ...]] = {}
    for spec in specs:
        key, values = _parse_sweep(spec)
        if key in grid:
            raise UsageError(f"--sweep {key} is given twice; list all its values in one option")
        grid[key] = values
    combinations = 1
    for values in grid.values():
        combinations *= len(values)
    if combinations > MAX_COMBINATIONS:
        raise UsageError(
            f"--sweep asks for {combinations} combinations; at most {MAX_COMBINATIONS} per run"
        )
    return grid


def _parse_sweep(spec: str) -> tuple[str, tuple[Value, ...]]:
    allowed = ", ".join(SWEEP_KEYS)
    key, sep, text = spec.partition("=")
    key = key.strip()
    if not sep or not text.strip():
        raise UsageError(f"--sweep {spec!r}: expected KEY=V1,V2,... with KEY one of {allowed}")
    if key not in SWEEP_KEYS:
        raise UsageError(f"--sweep: unknown key {key!r}; use one of {allowed}")
    parse = SWEEP_KEYS[key]
    values: list[Value] = []
    for item in text.split(","):
        try:
            value = parse(item.strip())
        except ValueError as exc:
            raise UsageError(f"--sweep {key}: bad value {item.strip()!r}: {exc}") from None
        if value in values:
            raise UsageError(f"--sweep {key}: {item.strip()!r} is listed twice")
        values.append(value)
    return key, tuple(values)


def combinations(grid: dict[str, tuple[Value, ...]]) -> list[dict[str, Value]]:
    """Every combination of the grid, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, chosen)) for chosen in itertools.product(*grid.values())]


def display_value(key: str, value: Value) -> str:
    """A swept value as a user would type it: durations with units (`10m`)."""
    return format_duration(float(value)) if key in DURATION_KEYS else str(value)


def describe(settings: dict[str, Value]) -> str:
    """`idle_timeout=10m max_nodes=16`."""
    return " ".join(f"{k}={display_value(k, v)}" for k, v in settings.items())


@dataclass(frozen=True)
class SweepRow:
    settings: dict[str, Value]
    result: SimResult
    pareto: bool = False

    @property
    def label(self) -> str:
        return describe(self.settings)

    def to_json(self) -> dict[str, object]:
        return {**self.settings, **self.result.to_json(), "pareto": self.pareto}


def pareto_front(results: Sequence[SimResult]) -> list[bool]:
    """For each result: True when no other result dominates it on (node-hours, mean wait)."""

    def dominates(a: SimResult, b: SimResult) -> bool:
        return (
            a.node_hours_billed <= b.node_hours_billed
            and a.mean_wait_s <= b.mean_wait_s
            and (a.node_hours_billed < b.node_hours_billed or a.mean_wait_s < b.mean_wait_s)
        )

    return [not any(dominates(other, r) for other in results) for r in results]


def run_sweep(
    jobs: list[TraceJob],
    grid: dict[str, tuple[Value, ...]],
    policies: Literal["ours", "legacy", "both"],
    **base: Any,
) -> list[SweepRow]:
    """One replay per combination and policy; `base` holds the settings not swept."""
    chosen: tuple[Policy, ...] = ("ours", "legacy") if policies == "both" else (policies,)
    runs: list[tuple[dict[str, Value], SimResult]] = []
    for settings in combinations(grid):
        for policy in chosen:
            merged: dict[str, Any] = {**base, **settings}
            runs.append((settings, simulate(jobs, policy=policy, **merged)))
    front = pareto_front([result for _settings, result in runs])
    return [
        SweepRow(settings, result, on_front) for (settings, result), on_front in zip(runs, front)
    ]
