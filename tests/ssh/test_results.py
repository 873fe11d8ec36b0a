"""The shapes a finished thing takes: a remote command's result, a run's outcome, run states."""

from __future__ import annotations

from typing import Optional

import pytest

from mint_common.proc import CommandResult
from mint_ssh import records
from mint_ssh.connection import ExecResult
from mint_ssh.records import RunRecord
from mint_ssh.runner import RunOutcome
from mint_ssh.transfer import DownloadReport

SHARED = ("return_code", "ok", "failed", "stdout", "stderr")


@pytest.mark.parametrize(("code", "ok"), [(0, True), (1, False), (77, False), (-1, False)], ids=str)
def test_a_remote_result_answers_as_a_local_command_result(code: int, ok: bool) -> None:
    remote = ExecResult(code, b"out\n", b"err\n")
    local = CommandResult(("true",), code, "out\n", "err\n")
    assert [getattr(remote, name) == getattr(local, name) for name in SHARED[:3]] == [True] * 3
    assert (remote.return_code, remote.ok, remote.failed) == (code, ok, not ok)


@pytest.mark.parametrize(
    ("exit_status", "code", "ok"),
    [(0, 0, True), (3, 3, False), (None, -1, False)],
    ids=["zero", "non-zero", "unknown"],
)
def test_a_run_outcome_carries_the_remote_exit_status_as_its_return_code(
    exit_status: Optional[int], code: int, ok: bool
) -> None:
    record = RunRecord("ab" * 16, "node", ["true"], "/r", exit_status=exit_status)
    outcome = RunOutcome(record, DownloadReport(), kept_remote=False)
    assert (outcome.return_code, outcome.ok, outcome.failed) == (code, ok, not ok)


def test_the_state_constants_are_the_names_stored_in_run_records() -> None:
    assert (records.UPLOADING, records.RUNNING, records.DOWNLOADING) == (
        "uploading",
        "running",
        "downloading",
    )
    assert records.ENDED == (records.DONE, records.FAILED) == ("done", "failed")
    assert RunRecord("ab" * 16, "node", ["true"], "/r").state == "uploading"
