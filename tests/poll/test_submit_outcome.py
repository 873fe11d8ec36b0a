"""Exit statuses, messages and the `--json` summary of `mint-poll submit`; its status display."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any, Optional

import pytest

from mint_poll.config import load_poll_config
from mint_poll.submit import (
    COMPLETED,
    INTERRUPTED,
    TIMEOUT,
    SkippedFile,
    SubmitOutcome,
    WrittenFile,
    config_view,
    sha256_of,
    signal_name,
)
from mint_poll.submit_args import LOG_NAMES, SubmitRequest

REQUEST = SubmitRequest(
    site_id="nims-dev",
    command="run.sh",
    inputs=(),
    results=("out.dat",),
    out_dir=Path("results"),
    timeout=30.0,
)
ACCEPT_ID = "6f1c1f0e-0000-4000-8000-000000000001"


def outcome(**changes: Any) -> SubmitOutcome:
    settings: dict[str, Any] = {
        "request": REQUEST,
        "accept_id": ACCEPT_ID,
        "status": COMPLETED,
        "last_progress": "got return",
        "elapsed": 12.3456,
    }
    settings.update(changes)
    return SubmitOutcome(**settings)


OUT_MISSING = SkippedFile("out.dat", "out.dat が見つかりません")
LOG_MISSING = SkippedFile(LOG_NAMES[0], "not sent", required=False)
HOSTILE = SkippedFile("../x", "refusing file name '../x': it contains '..'")


@pytest.mark.parametrize(
    ("changes", "status", "message"),
    [
        ({}, 0, None),
        ({"missing": (LOG_MISSING,)}, 0, None),
        ({"status": "abnormal"}, 1, "ended 'abnormal'"),
        ({"missing": (OUT_MISSING,)}, 1, "requested result file(s) missing: out.dat"),
        ({"status": "none"}, 1, "ended 'none'"),
        ({"refused": (HOSTILE,), "status": "abnormal"}, 65, "refused unsafe result file"),
        ({"status": TIMEOUT, "cancelled": True}, 75, "no result within 30 s"),
        (
            {"status": INTERRUPTED, "cancelled": True, "signal_number": signal.SIGTERM},
            143,
            "interrupted by SIGTERM",
        ),
        (
            {"status": INTERRUPTED, "cancelled": True, "signal_number": signal.SIGINT},
            130,
            "interrupted by SIGINT",
        ),
        (
            {"status": TIMEOUT, "cancelled": False, "cancel_error": "HTTP 503"},
            75,
            "force-cancelling the registration failed (HTTP 503); it may remain",
        ),
    ],
    ids=[
        "completed",
        "log-file-missing-only",
        "abnormal",
        "result-missing",
        "odd-status",
        "unsafe-names",
        "timeout",
        "sigterm",
        "sigint",
        "cancel-failed",
    ],
)
def test_exit_status_and_message_follow_the_outcome(
    changes: dict[str, Any], status: int, message: Optional[str]
) -> None:
    result = outcome(**changes)
    assert result.exit_status == status
    text = result.failure_message()
    if message is None:
        assert text is None
    else:
        assert text is not None and message in text
        assert ACCEPT_ID in text or "refused" in text or "missing" in text


def test_cancelled_outcomes_say_so() -> None:
    text = outcome(status=TIMEOUT, cancelled=True, last_progress="running").failure_message()
    assert text == (
        f"no result within 30 s (calculation {ACCEPT_ID} was at 'running');"
        " the registration was force-cancelled on the server"
    )


def test_summary_lists_files_with_sizes_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "out.dat"
    path.write_bytes(b"\x00\xff" * 1000)
    written = WrittenFile("out.dat", path, 2000, sha256_of(path))
    summary = outcome(written=(written,), missing=(LOG_MISSING,)).summary()
    assert summary == {
        "accept_id": ACCEPT_ID,
        "status": "completed",
        "exit_status": 0,
        "site_id": "nims-dev",
        "command": "run.sh",
        "progress": "got return",
        "elapsed_seconds": 12.346,
        "out_dir": "results",
        "files": [
            {
                "name": "out.dat",
                "path": str(path),
                "size": 2000,
                "sha256": hashlib.sha256(b"\x00\xff" * 1000).hexdigest(),
            }
        ],
        "missing": [{"name": LOG_NAMES[0], "message": "not sent", "required": False}],
        "refused": [],
        "unrequested": [],
        "cancelled": False,
    }


def test_sha256_of_a_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (signal.SIGTERM, "SIGTERM"),
        (signal.SIGINT, "SIGINT"),
        (None, "a signal"),
        (999, "signal 999"),
    ],
    ids=["term", "int", "none", "unknown"],
)
def test_signal_names(number: Optional[int], name: str) -> None:
    assert signal_name(number) == name


@pytest.mark.parametrize(
    ("retry", "shown"),
    [
        ("retry:4,60", "5 attempts, 60 s apart"),
        ({"max_attempts": 3, "base_delay": 2, "max_delay": 30}, "3 attempts, 2 s up to 30 s apart"),
    ],
    ids=["legacy-form", "backoff"],
)
def test_start_up_config_line_masks_the_token_and_shows_the_retry_policy(
    retry: Any, shown: str
) -> None:
    token = "9" * 64
    config = load_poll_config(
        None, {"url": "https://mint.example", "site_id": "s", "token": token, "retry": retry}
    )
    view = config_view(config)
    assert token not in json.dumps(view)
    assert view["token"] == "********"
    assert view["retry"] == shown
    assert set(view) == {
        "url",
        "site_id",
        "token",
        "ca_bundle",
        "verify",
        "connect_timeout",
        "read_timeout",
        "poll_min",
        "poll_jitter",
        "retry",
    }
