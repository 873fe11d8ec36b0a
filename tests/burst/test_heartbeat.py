"""The daemon's heartbeat as `status` and `check` judge it: stalled only past
`mint_common.heartbeat.stale_after(poll_interval)`, older state files still read."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mint_burst.cli import main
from mint_burst.model import Instance, NodeTable
from mint_burst.state import FileStore
from mint_common.heartbeat import Heartbeat, stale_after
from tests.burst.conftest import FakeScheduler
from tests.burst.test_cli import command_config

POLL = 60.0
# Far below the threshold's own size, far above the few seconds a test takes.
MARGIN = 10.0


def _config(tmp_path: Path, hosts_file: Path) -> Path:
    return command_config(tmp_path, hosts_file, poll_interval=POLL)


def _state_file(config: Path) -> Path:
    return Path(yaml.safe_load(config.read_text())["state_file"])


def _beat_aged(config: Path, age: float) -> float:
    epoch = time.time() - age
    FileStore(_state_file(config)).save(NodeTable(heartbeat=Heartbeat(epoch)))
    return epoch


def _status(config: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        main, ["status", "--json", "--no-scheduler", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _state_row(config: Path) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["check", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    rows = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    row: dict[str, Any] = rows["state file"]
    return row


@pytest.mark.parametrize(
    ("age", "stale"),
    [(stale_after(POLL) - MARGIN, False), (stale_after(POLL) + MARGIN, True)],
    ids=["just-within", "just-past"],
)
def test_status_and_check_call_a_heartbeat_stalled_only_past_three_intervals(
    fake_scheduler: FakeScheduler, tmp_path: Path, hosts_file: Path, age: float, stale: bool
) -> None:
    config = _config(tmp_path, hosts_file)
    epoch = _beat_aged(config, age)
    document = _status(config)
    assert document["stale"] is stale
    assert document["heartbeat"] == pytest.approx(epoch)
    assert document["heartbeat_age_s"] == pytest.approx(age, abs=MARGIN / 2)
    row = _state_row(config)
    assert row["status"] == ("warn" if stale else "pass"), row
    assert ("stalled" in row["detail"]) is stale
    text = CliRunner().invoke(main, ["status", "--no-scheduler", "--config", str(config)]).output
    assert ("(STALE)" in text) is stale


def test_a_heartbeat_exactly_at_the_threshold_is_not_yet_stalled(
    tmp_path: Path, hosts_file: Path
) -> None:
    from mint_burst.service import StatusView

    now = 1_800_000_000.0
    table = NodeTable(heartbeat=Heartbeat(now - stale_after(POLL)))
    assert not StatusView(table=table, now=now, stale_after=stale_after(POLL)).stale
    table.heartbeat = Heartbeat(now - stale_after(POLL) - 0.001)
    assert StatusView(table=table, now=now, stale_after=stale_after(POLL)).stale


def test_the_engine_stores_the_shared_heartbeat_form(
    fake_scheduler: FakeScheduler, tmp_path: Path, hosts_file: Path
) -> None:
    config = _config(tmp_path, hosts_file)
    before = time.time()
    result = CliRunner().invoke(main, ["once", "--config", str(config)])
    assert result.exit_code == 0, result.output
    stored = json.loads(_state_file(config).read_text())["heartbeat"]
    assert set(stored) == {"at", "epoch"} and stored["epoch"] >= before - 1
    assert Heartbeat.from_json(stored) == Heartbeat(stored["epoch"])


def test_a_state_file_with_the_old_float_heartbeat_still_loads(
    tmp_path: Path, hosts_file: Path
) -> None:
    config = _config(tmp_path, hosts_file)
    path = _state_file(config)
    path.parent.mkdir(parents=True)
    old = time.time() - stale_after(POLL) - MARGIN
    path.write_text(json.dumps({"version": 1, "heartbeat": old, "nodes": []}))
    document = _status(config)
    assert document["heartbeat"] == pytest.approx(old) and document["stale"] is True


def test_check_warns_of_orphans_beside_a_fresh_heartbeat(
    fake_scheduler: FakeScheduler, tmp_path: Path, hosts_file: Path
) -> None:
    config = _config(tmp_path, hosts_file)
    table = NodeTable(
        heartbeat=Heartbeat(time.time()),
        orphans=[Instance("i-9", "c9", "10.0.1.19", "running", 3.0)],
    )
    FileStore(_state_file(config)).save(table)
    row = _state_row(config)
    assert row["status"] == "warn", row
    assert "1 tagged instance(s) without a record" in row["detail"]
    assert "stalled" not in row["detail"]
