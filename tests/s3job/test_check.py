"""check: the conditional-write probe fails on a store that ignores If-None-Match."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from mint_s3job.check import run_checks
from mint_s3job.config import S3JobConfig
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
