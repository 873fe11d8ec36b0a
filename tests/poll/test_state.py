"""The agent's local state: records, the heartbeat and how `status`/`check` judge them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mint_common.heartbeat import Heartbeat, stale_after
from mint_poll.checks import heartbeat_row
from mint_poll.cli import main
from mint_poll.state import STOPPED, CalcRecord, CalcStore, Step
from mint_poll.status import heartbeat_lines

INTERVAL = 60.0


@pytest.fixture
def store(tmp_path: Path) -> CalcStore:
    store = CalcStore(tmp_path / "state")
    store.ensure()
    return store


def write_beat(store: CalcStore, epoch: float, state: str = "idle") -> None:
    document = {**Heartbeat(epoch).to_json(), "pid": 4242, "state": state}
    store.heartbeat_file.write_text(json.dumps(document))


def local_config(tmp_path: Path, **settings: Any) -> Path:
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), **settings}))
    return path


def test_the_heartbeat_is_the_shared_one_with_the_agents_details_beside_it(
    store: CalcStore,
) -> None:
    before = time.time()
    store.beat("running", accept_id="abc", running=1)
    document = json.loads(store.heartbeat_file.read_text())
    beat = Heartbeat.from_json(document)
    assert beat is not None and before <= beat.epoch <= time.time()
    assert document["at"] == beat.to_json()["at"]
    # the names of the release before, kept for one release
    assert document["time"] == document["beat_at"] == document["at"]
    assert document["state"] == "running" and document["accept_id"] == "abc"
    assert document["running"] == 1 and isinstance(document["pid"], int)


@pytest.mark.parametrize(
    ("interval", "age", "status", "stale"),
    [
        (INTERVAL, stale_after(INTERVAL), "pass", False),
        (INTERVAL, stale_after(INTERVAL) + 1, "warn", True),
        (INTERVAL / 100, stale_after(INTERVAL / 100) + 1, "warn", True),
        (INTERVAL * 100, stale_after(INTERVAL), "pass", False),
    ],
    ids=["at-the-threshold", "just-past-it", "short-interval", "long-interval"],
)
def test_check_judges_the_heartbeat_by_three_poll_intervals(
    store: CalcStore, interval: float, age: float, status: str, stale: bool
) -> None:
    write_beat(store, 1_000_000.0)
    row = heartbeat_row(store, interval, now=1_000_000.0 + age)
    assert (row.name, row.status) == ("heartbeat", status)
    assert row.data["stale"] is stale
    assert str(store.heartbeat_file) in row.detail


def test_check_warns_for_an_agent_that_never_ran_or_stopped(store: CalcStore) -> None:
    never = heartbeat_row(store, INTERVAL)
    assert never.status == "warn" and "no heartbeat yet" in never.detail
    write_beat(store, 1_000_000.0, state=STOPPED)
    stopped = heartbeat_row(store, INTERVAL, now=1_000_000.0 + 10 * INTERVAL)
    assert stopped.status == "warn" and "the agent stopped at" in stopped.detail


def test_status_marks_a_stalled_agent_at_the_same_threshold(store: CalcStore) -> None:
    write_beat(store, 1_000_000.0)
    document = store.heartbeat()
    at_limit = heartbeat_lines(document, INTERVAL, now=1_000_000.0 + stale_after(INTERVAL))
    past = heartbeat_lines(document, INTERVAL, now=1_000_000.0 + stale_after(INTERVAL) + 1)
    assert not any("stalled" in line for line in at_limit)
    assert any(line.startswith("agent stalled: ") for line in past)
    write_beat(store, 1_000_000.0, state=STOPPED)
    stopped = heartbeat_lines(store.heartbeat(), INTERVAL, now=1_000_000.0 + 100 * INTERVAL)
    assert not any("stalled" in line for line in stopped), "a stopped agent is not stalled"


@pytest.mark.parametrize(("age", "stale"), [(20.0, False), (40.0, True)], ids=["fresh", "stale"])
def test_status_json_uses_the_configured_poll_interval(
    tmp_path: Path, store: CalcStore, age: float, stale: bool
) -> None:
    write_beat(store, time.time() - age)
    config = local_config(tmp_path, poll_interval=10)
    result = CliRunner().invoke(main, ["--config", str(config), "status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["agent"]["stale"] is stale


def test_check_cli_reads_the_heartbeat(tmp_path: Path, store: CalcStore) -> None:
    write_beat(store, time.time() - 3600)
    config = local_config(
        tmp_path, url="http://127.0.0.1:9", site_id="s", token="t" * 16, poll_interval=10
    )
    result = CliRunner().invoke(main, ["--config", str(config), "check", "--json"])
    rows = {row["name"]: row for row in json.loads(result.stdout)["checks"]}
    assert rows["heartbeat"]["status"] == "warn"
    assert "stalled" in rows["heartbeat"]["detail"]


def save(store: CalcStore, accept_id: str, accepted_at: str) -> None:
    record = CalcRecord(accept_id, "site", workdir=f"/w/{accept_id}", staging_dir="")
    record.accepted_at, record.step = accepted_at, Step.DONE
    store.save(record)


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_status_lists_the_readable_records_names_the_corrupt_one_and_exits_65(
    tmp_path: Path, store: CalcStore, as_json: bool
) -> None:
    save(store, "good-1", "2026-01-02T00:00:00+00:00")
    save(store, "good-2", "2026-01-01T00:00:00+00:00")
    corrupt = store.calcs / "broken.json"
    corrupt.write_text('{"accept_id": "bro')
    args = ["--config", str(local_config(tmp_path)), "status", *(["--json"] if as_json else [])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 65
    if as_json:
        ids = [c["accept_id"] for c in json.loads(result.stdout)["calculations"]]
        assert ids == ["good-1", "good-2"]
    else:
        assert "good-1" in result.stdout and "good-2" in result.stdout
    warning = next(line for line in result.stderr.splitlines() if "skipping" in line)
    assert str(corrupt) in warning
    assert result.stderr.splitlines()[-2] == (
        f"mint-poll: error: 1 calculation record(s) could not be read: {corrupt}"
    )


def test_listing_of_a_clean_store_is_not_an_error(store: CalcStore) -> None:
    save(store, "good-1", "2026-01-02T00:00:00+00:00")
    listing = store.read_all()
    assert [r.accept_id for r in listing.records] == ["good-1"] and listing.unreadable == []
    listing.check()
