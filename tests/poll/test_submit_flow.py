"""`Submission` against server behaviours our rehearsal server cannot produce.

The real flow is tested end to end in test_submit.py. Here a small recorded
stand-in answers like a server that leaves out the stdout/stderr entries, or
whose cancel endpoint is down, to cover how submit copes with those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest

from mint_common.errors import UnavailableError
from mint_poll.api import STDOUT_NAME, CalcResult, ReceivedResult, UnknownCalculation
from mint_poll.submit import TIMEOUT, Submission
from mint_poll.submit_args import LOG_NAMES, build_request

ACCEPT_ID = "11111111-2222-4333-8444-555555555555"


class RecordedServer:
    """Answers the workflow-side calls from a script of progress states and one result map."""

    def __init__(
        self,
        progress: Sequence[str],
        results: Mapping[str, Optional[bytes]],
        cancel_error: Optional[Exception] = None,
    ) -> None:
        self.progress = list(progress)
        self.results = results
        self.cancel_error = cancel_error
        self.calls: list[str] = []

    def add_calcinfo(self, command: str, site_id: str, **options: Any) -> str:
        self.calls.append(f"add-calcinfo {command} {sorted(options['result_names'])}")
        return ACCEPT_ID

    def allow_wait_calc(self, accept_id: str) -> None:
        self.calls.append("allow-wait-calc")

    def calc_progress(self, accept_id: str) -> str:
        return self.progress.pop(0) if len(self.progress) > 1 else self.progress[0]

    def calc_status(self, accept_id: str) -> str:
        return "completed"

    def get_calc_result(self, accept_id: str, dest_dir: Path, **options: Any) -> CalcResult:
        self.calls.append("get-calc-result")
        files = []
        for name, content in self.results.items():
            if content is None:
                files.append(ReceivedResult(name, None, 0, "Error", "", error=f"{name} missing"))
            else:
                (dest_dir / name).write_bytes(content)
                files.append(ReceivedResult(name, dest_dir / name, len(content), "", ""))
        return CalcResult(accept_id, tuple(files))

    def cancel_wait_calc(self, accept_id: str, *, force: bool = False) -> None:
        self.calls.append(f"cancel-wait-calc force={force}")
        if self.cancel_error is not None:
            raise self.cancel_error


def run(tmp_path: Path, server: RecordedServer, **request: Any) -> Any:
    settings: dict[str, Any] = {
        "site_id": "nims-dev",
        "command": "run.sh",
        "inputs": [],
        "results": ["out.dat"],
        "out_dir": tmp_path / "out",
        "poll_interval": 0.01,
        "cwd": tmp_path,
    }
    settings.update(request)
    return Submission(server, build_request(**settings)).run()


def test_log_files_are_written_even_when_the_server_sends_no_entry_for_them(
    tmp_path: Path,
) -> None:
    server = RecordedServer(["running", "got return"], {"out.dat": None})
    outcome = run(tmp_path, server)
    for name in LOG_NAMES:
        assert (tmp_path / "out" / name).read_bytes() == b""
    assert outcome.exit_status == 1
    assert [(m.name, m.required) for m in outcome.missing] == [
        ("out.dat", True),
        (LOG_NAMES[0], False),
        (LOG_NAMES[1], False),
    ]
    assert outcome.missing[0].message == "out.dat missing"
    assert server.calls[0] == f"add-calcinfo run.sh {sorted(['out.dat', *LOG_NAMES])}"


def test_only_log_files_missing_is_still_success(tmp_path: Path) -> None:
    server = RecordedServer(["got return"], {"out.dat": b"ok", STDOUT_NAME: b"log"})
    outcome = run(tmp_path, server)
    assert outcome.exit_status == 0
    assert (tmp_path / "out" / STDOUT_NAME).read_bytes() == b"log"
    assert {f.name: f.size for f in outcome.written} == {
        "out.dat": 2,
        STDOUT_NAME: 3,
        LOG_NAMES[1]: 0,
    }


@pytest.mark.parametrize(
    ("error", "cancelled", "note"),
    [
        (None, True, "force-cancelled on the server"),
        (UnknownCalculation("cancel-wait-calc", "gone"), True, "force-cancelled on the server"),
        (UnavailableError("POST cancel-wait-calc: HTTP 503"), False, "it may remain on the server"),
    ],
    ids=["cancelled", "already-gone", "cancel-failed"],
)
def test_timeout_force_cancels_and_reports_whether_that_worked(
    tmp_path: Path, error: Optional[Exception], cancelled: bool, note: str
) -> None:
    server = RecordedServer(["running"], {}, cancel_error=error)
    outcome = run(tmp_path, server, timeout=0.05)
    assert outcome.status == TIMEOUT and outcome.exit_status == 75
    assert outcome.cancelled is cancelled
    assert server.calls[-1] == "cancel-wait-calc force=True"
    assert "get-calc-result" not in server.calls
    message = outcome.failure_message()
    assert message is not None and note in message
