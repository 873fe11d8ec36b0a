"""The node table: node-hour accounting per UTC day, and its state-file round trip."""

from __future__ import annotations

import datetime as dt

import pytest

from mint_burst.model import BOOTING, JOINED, Instance, NodeRecord, NodeTable, utc_day
from mint_common.errors import InputError
from mint_common.heartbeat import Heartbeat


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def test_node_hours_are_split_at_utc_midnight_and_orphans_count() -> None:
    table = NodeTable(
        records={"c1": NodeRecord("c1", "10.0.0.1", JOINED, 0.0, 0.0, "i-1")},
        orphans=[Instance("i-9", "c9", "10.0.0.9", "running")],
    )
    table.account(at("2026-11-20T23:00:00"))
    table.account(at("2026-11-21T01:30:00"))
    assert table.node_hours_on("2026-11-20") == pytest.approx(2.0)
    assert table.node_hours_on("2026-11-21") == pytest.approx(3.0)


def test_only_the_last_seven_days_are_kept() -> None:
    table = NodeTable(records={"c1": NodeRecord("c1", "10.0.0.1", JOINED, 0.0, 0.0, "i-1")})
    start = at("2026-11-01T12:00:00")
    for day in range(10):
        table.account(start + day * 86400)
    assert len(table.node_seconds_by_day) == 7
    assert utc_day(start + 9 * 86400) in table.node_seconds_by_day


def test_state_round_trip_and_malformed_content() -> None:
    table = NodeTable(
        records={"c2": NodeRecord("c2", "10.0.0.2", BOOTING, 5.0, 6.0, "i-2", "tok")},
        orphans=[Instance("i-9", "c9", "10.0.0.9", "running", 3.0)],
        backoffs={"c5.large@subnet-1": 99.0},
        heartbeat=Heartbeat(7.0),
    )
    again = NodeTable.from_json(table.to_json(), "state.json")
    assert again == table
    broken = table.to_json()
    broken["nodes"][0]["phase"] = "exploded"
    with pytest.raises(InputError, match="unknown phase 'exploded'"):
        NodeTable.from_json(broken, "state.json")
    with pytest.raises(InputError, match="not a mint-burst state"):
        NodeTable.from_json({"version": 2}, "state.json")


def test_unservable_jobs_survive_the_state_file_round_trip() -> None:
    table = NodeTable(unservable={"8": "needs 8 node(s); partition 'cloud' allows 5"})
    again = NodeTable.from_json(table.to_json(), "state.json")
    assert again.unservable == table.unservable
    assert NodeTable.from_json({"version": 1}, "old-state.json").unservable == {}
