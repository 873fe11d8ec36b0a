from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from mint_common import errors
from mint_common.exitcodes import EXIT_TABLE, ExitStatus, describe, exit_status_for, report_error
from mint_common.logging import register_secret

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.JobFailed("remote exited 3", job_exit_status=3), 1),
        (errors.UsageError("bad flag"), 2),
        (errors.InputError("bad json"), 65),
        (errors.UnsafePathError("../x"), 65),
        (errors.NoInputError("missing in.dat"), 66),
        (errors.UnavailableError("server down"), 69),
        (errors.MissingExtraError("no paramiko"), 69),
        (errors.CantCreateError("read-only"), 73),
        (errors.TransferError("size mismatch"), 74),
        (errors.TryAgainLater("timeout"), 75),
        (errors.LockHeld("/run/x.lock", 42), 75),
        (errors.AuthError("host key changed"), 77),
        (errors.ConfigError("bad key"), 78),
        (KeyboardInterrupt(), 130),
        (FileNotFoundError(2, "No such file"), 66),
        (PermissionError(13, "denied"), 77),
        (OSError(5, "I/O error"), 74),
        (RuntimeError("bug"), 1),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_every_error_maps_to_its_exit_status(exc: BaseException, status: int) -> None:
    assert exit_status_for(exc) == status
    assert exit_status_for(exc).value == status


def test_lock_held_message_names_file_and_pid() -> None:
    assert (
        str(errors.LockHeld("/run/a.lock", 42)) == "another run holds the lock /run/a.lock (pid 42)"
    )
    assert "unknown process" in str(errors.LockHeld("/run/a.lock", None))


def test_report_error_prints_one_line_and_hint() -> None:
    stream = io.StringIO()
    exc = errors.ConfigError(
        "/etc/mint/mint-poll.yaml: key 'url': expected a string", hint="fix it"
    )
    status = report_error(exc, "mint-poll", stream=stream)
    assert status == ExitStatus.CONFIG
    assert stream.getvalue() == (
        "mint-poll: error: /etc/mint/mint-poll.yaml: key 'url': expected a string\n"
        "mint-poll: hint: fix it\n"
    )


def test_report_error_traceback_only_when_verbose() -> None:
    def fail() -> None:
        raise errors.TransferError("checksum mismatch for out.dat")

    for verbose in (False, True):
        stream = io.StringIO()
        try:
            fail()
        except errors.TransferError as exc:
            report_error(exc, "mint-ssh", verbose=verbose, stream=stream)
        assert ("Traceback" in stream.getvalue()) is verbose
        assert stream.getvalue().endswith("mint-ssh: error: checksum mismatch for out.dat\n")


def test_messages_are_one_line_and_redacted() -> None:
    register_secret("sekrit-token-123")
    assert describe(errors.UnavailableError("HTTP 503\nfrom proxy sekrit-token-123\n")) == (
        "HTTP 503; from proxy ********"
    )
    assert describe(ValueError("oops")) == "ValueError: oops"
    assert describe(KeyboardInterrupt()) == "interrupted"
    assert describe(errors.MintError("")) == "MintError"


def test_job_failed_keeps_the_job_status() -> None:
    assert errors.JobFailed("exit 3", job_exit_status=3).job_exit_status == 3


def test_readme_and_developers_table_match_the_code() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+|128\+N) \| (.+?) \|$", readme, flags=re.MULTILINE))
    # The README states signals once as 128+N; the code's table names SIGINT's 130.
    codes = sorted(130 if code == "128+N" else int(code) for code in rows)
    assert codes == sorted(int(s) for s, _ in EXIT_TABLE)
    assert "143 for SIGTERM" in rows["128+N"]
