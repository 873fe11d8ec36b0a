from __future__ import annotations

from typing import Any

import pytest

from mint_common.checks import PASS, WARN
from mint_common.heartbeat import (
    STALE_AFTER_INTERVALS,
    Heartbeat,
    heartbeat_check,
    stale_after,
)
from mint_common.timeutil import iso_from_epoch


def test_stale_exactly_after_three_intervals() -> None:
    assert STALE_AFTER_INTERVALS == 3
    assert stale_after(60) == 180
    beat = Heartbeat(1000.0)
    assert not beat.stale(stale_after(60), now=1180.0)
    assert beat.stale(stale_after(60), now=1180.5)
    assert beat.age(now=1180.0) == 180.0


def test_beat_uses_the_clock_and_round_trips() -> None:
    beat = Heartbeat.beat(clock=lambda: 1_700_000_000.25)
    stored = beat.to_json()
    assert stored == {"at": iso_from_epoch(1_700_000_000.25), "epoch": 1_700_000_000.25}
    assert Heartbeat.from_json(stored) == beat


@pytest.mark.parametrize(
    ("stored", "epoch"),
    [
        (1_700_000_000.0, 1_700_000_000.0),
        ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
        ({"time": "2023-11-14T22:13:20+00:00", "epoch": 1_700_000_000.0}, 1_700_000_000.0),
        ({"time": "2023-11-15T07:13:20+09:00"}, 1_700_000_000.0),
        ({"at": "2023-11-14T22:13:20Z"}, 1_700_000_000.0),
    ],
)
def test_older_forms_are_read(stored: Any, epoch: float) -> None:
    assert Heartbeat.from_json(stored) == Heartbeat(epoch)


@pytest.mark.parametrize("stored", [None, True, "yesterday", {"pid": 3}, [1], float("nan")])
def test_unreadable_heartbeats_are_none(stored: Any) -> None:
    assert Heartbeat.from_json(stored) is None


def test_check_rows_at_the_threshold() -> None:
    fresh = heartbeat_check("hb", Heartbeat(1000.0), interval=10, where="s.json", now=1030.0)
    assert fresh.status == PASS and "last beat 30s ago" in fresh.detail
    stalled = heartbeat_check("hb", Heartbeat(1000.0), interval=10, where="s.json", now=1031.0)
    assert stalled.status == WARN and "stalled" in stalled.detail
    assert stalled.data["stale"] is True
    never = heartbeat_check("hb", None, interval=10, where="s.json")
    assert never.status == WARN and "no heartbeat yet" in never.detail
