"""check: the conditional-write probe fails on a store that ignores If-None-Match."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest

from mint_common.files import JsonState
from mint_common.heartbeat import Heartbeat
from mint_common.timeutil import Duration
from mint_s3job.check import _heartbeat, run_checks
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import state_dir
from mint_s3job.store import S3ObjectStore


class _IgnoresConditions:
    """A store that drops If-None-Match, as some S3-compatible servers do."""

    def __init__(self, inner: S3ObjectStore) -> None:
        self.inner = inner
        self.bucket = inner.bucket

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: Optional[str] = None
    ) -> bool:
        return self.inner.put_bytes(key, data)


def _results(runner: Any) -> dict[str, tuple[str, str]]:
    return {r.name: (r.status, r.detail) for r in runner.results}


def test_check_fails_when_conditional_writes_are_ignored(
    store: S3ObjectStore, config: S3JobConfig
) -> None:
    runner = run_checks(config, _IgnoresConditions(store), head_node=False)
    results = _results(runner)
    assert results["conditional write"][0] == "fail"
    assert "could submit the same job" in results["conditional write"][1]
    assert results["write"][0] == "pass" and results["sbatch"][0] == "skip"
    assert not runner.all_ok
    assert store.list_objects("") == []


def test_check_skips_what_depends_on_an_unreachable_bucket(
    config: S3JobConfig, tmp_path: Path
) -> None:
    missing = S3ObjectStore(config, "no-such-bucket-anywhere")
    results = _results(run_checks(config, missing, head_node=False))
    assert results["bucket reachable"][0] == "fail"
    assert "does not exist" in results["bucket reachable"][1]
    assert results["write"][0] == "skip" and results["conditional write"][0] == "skip"


def _beat_seconds_ago(config: S3JobConfig, seconds: float, *, legacy: bool = False) -> None:
    assert config.workdir is not None
    beat = Heartbeat(time.time() - seconds)
    value: Any = beat.to_json()["at"] if legacy else beat.to_json()
    state = {"heartbeat": value, "host": "head1", "pid": 4321}
    JsonState(state_dir(config.workdir) / "dispatch-state.json").save(state)


# Stalled after 3 intervals (stale_after): 5 s either side of it, so a slow machine
# cannot move a beat across the threshold.
@pytest.mark.parametrize(
    ("age", "status"),
    [(3 * 600 - 5, "pass"), (3 * 600 + 5, "warn")],
    ids=["just-under-three-intervals", "just-over-three-intervals"],
)
@pytest.mark.parametrize("legacy", [False, True], ids=["heartbeat-object", "iso-string"])
def test_dispatcher_heartbeat_is_stalled_after_three_watch_intervals(
    config: S3JobConfig, age: float, status: str, legacy: bool
) -> None:
    config = replace(config, watch_interval=Duration(600))
    _beat_seconds_ago(config, age, legacy=legacy)
    assert config.workdir is not None
    row = _heartbeat(config.workdir, config.watch_interval)
    assert row.status == status, row.detail
    assert "head1 (pid 4321)" in row.detail
    assert ("stalled" in row.detail) is (status == "warn")


def test_dispatcher_heartbeat_with_a_last_error_warns(config: S3JobConfig) -> None:
    _beat_seconds_ago(config, 1)
    assert config.workdir is not None
    path = state_dir(config.workdir) / "dispatch-state.json"
    state = JsonState(path).load()
    JsonState(path).save({**state, "last_error": "job job-1: boom"})
    row = _heartbeat(config.workdir, config.watch_interval)
    assert row.status == "warn" and row.detail.endswith("last error: job job-1: boom")


def test_dispatcher_heartbeat_missing_warns(config: S3JobConfig) -> None:
    assert config.workdir is not None
    row = _heartbeat(config.workdir, config.watch_interval)
    assert row.status == "warn" and "no heartbeat yet" in row.detail
