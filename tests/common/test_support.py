"""checks, output, extras, proc, signals and progress."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mint_common.checks import FAIL, PASS, SKIP, WARN, CheckResult, CheckRunner
from mint_common.errors import MissingExtraError, UnavailableError
from mint_common.exitcodes import ExitStatus
from mint_common.extras import require_extra
from mint_common.output import emit_json, emit_table
from mint_common.proc import kill_process_group, run_command
from mint_common.progress import transfer_progress
from mint_common.signals import GracefulStop


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_check_runner_pass_warn_fail_skip() -> None:
    runner = CheckRunner()
    runner.run("config", lambda: "valid")
    runner.run("tls", lambda: (WARN, "certificate expires in 10 days"))
    runner.run("dns", lambda: (_ for _ in ()).throw(UnavailableError("no such host nims.example")))
    runner.run("api", lambda: "answers", requires="dns")
    runner.run("custom", lambda: CheckResult("custom", PASS, "made by hand", {"ms": 3}))
    statuses = [(r.name, r.status) for r in runner.results]
    assert statuses == [
        ("config", PASS),
        ("tls", WARN),
        ("dns", FAIL),
        ("api", SKIP),
        ("custom", PASS),
    ]
    assert runner.results[2].detail == "no such host nims.example"
    assert not runner.all_ok
    stream = io.StringIO()
    assert runner.render(as_json=True, title="t", stream=stream) == ExitStatus.JOB_FAILED
    document = json.loads(stream.getvalue())
    assert document["ok"] is False
    assert document["checks"][4]["data"] == {"ms": 3}


def test_check_runner_all_ok_renders_plain_table() -> None:
    runner = CheckRunner()
    runner.run("config", lambda: "valid")
    stream = io.StringIO()
    assert runner.render(as_json=False, title="mint-x check", stream=stream) == ExitStatus.OK
    assert stream.getvalue() == "check\tresult\tdetail\nconfig\tPASS\tvalid\n"


def test_table_is_rich_on_a_terminal() -> None:
    stream = TtyStringIO()
    emit_table(("a", "b"), [("1", None)], title="T", stream=stream)
    assert "┃" in stream.getvalue() or "│" in stream.getvalue()


def test_emit_json_handles_paths_and_dataclasses() -> None:
    stream = io.StringIO()
    emit_json({"p": Path("/x"), "r": CheckResult("n", PASS), "名": "値"}, stream=stream)
    document = json.loads(stream.getvalue())
    assert document == {
        "p": "/x",
        "r": {"name": "n", "status": "pass", "detail": "", "data": {}},
        "名": "値",
    }


def test_require_extra_names_the_pip_command() -> None:
    require_extra("mint-x", "x", ["json", "os"])
    with pytest.raises(MissingExtraError) as info:
        require_extra("mint-ssh", "ssh", ["json", "no_such_module_here"])
    assert info.value.exit_status == 69
    assert "mint-ssh needs the 'ssh' extra" in str(info.value)
    assert "no_such_module_here" in str(info.value)
    assert info.value.hint == "pip install 'mint-tools[ssh]'"


def test_run_command_captures_output_and_status() -> None:
    result = run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.return_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.failed and not result.ok
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.describe() == "sh exited with status 3: err"
    assert run_command(["cat"], timeout=10, input_text="in").stdout == "in"
    assert run_command(["sh", "-c", "echo $X"], timeout=10, env={"X": "y"}).stdout == "y\n"


def test_command_result_tail_and_cwd(tmp_path: Path) -> None:
    result = run_command(
        ["sh", "-c", "pwd; printf 'a\\n\\nb\\nc\\n' >&2"], timeout=10, cwd=str(tmp_path)
    )
    assert result.ok and result.stdout.strip() == str(tmp_path)
    assert result.tail() == "c"
    assert result.tail(2) == "b | c"
    assert result.tail(0) == ""
    assert result.tail(stream="stdout") == str(tmp_path)
    quiet = run_command(["sh", "-c", "echo only-out; exit 2"], timeout=10)
    assert quiet.describe() == "sh exited with status 2: only-out"
    with pytest.raises(UnavailableError, match="no directory"):
        run_command(["true"], timeout=10, cwd=str(tmp_path / "missing"))


def test_run_command_missing_program_or_timeout_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="command not found: no-such-squeue"):
        run_command(["no-such-squeue"], timeout=5)
    script = tmp_path / "not-exec"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(UnavailableError, match="not executable"):
        run_command([str(script)], timeout=5)
    with pytest.raises(UnavailableError, match=r"did not answer within 0\.2 s"):
        run_command(["sleep", "5"], timeout=0.2)


def test_kill_process_group_kills_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    process = subprocess.Popen(
        ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], start_new_session=True
    )
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    status = kill_process_group(process, grace=2)
    assert status == -signal.SIGTERM
    assert _gone_or_zombie(grandchild)


def _gone_or_zombie(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for a parent (pid 1 here may not reap)."""
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_kill_process_group_escalates_to_sigkill() -> None:
    process = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], start_new_session=True
    )
    time.sleep(0.3)
    assert kill_process_group(process, grace=0.3) == -signal.SIGKILL


STOPPER = textwrap.dedent(
    """
    import sys, time
    from mint_common.signals import GracefulStop
    with GracefulStop(on_first=lambda s: print("first", s, flush=True)) as stop:
        print("ready", flush=True)
        while not stop.wait(0.05):
            pass
        print("stopping gracefully", flush=True)
        if sys.argv[1] == "linger":
            time.sleep(30)
    """
)


@pytest.mark.parametrize(
    ("mode", "signals", "status"),
    [("exit", 1, 0), ("linger", 2, 128 + signal.SIGTERM)],
    ids=["first-signal-stops-loop", "second-signal-exits-at-once"],
)
def test_graceful_stop(mode: str, signals: int, status: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", STOPPER, mode], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.stdout.readline().strip() == f"first {int(signal.SIGTERM)}"
    assert process.stdout.readline().strip() == "stopping gracefully"
    if signals == 2:
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == status


def test_graceful_stop_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert signal.getsignal(signal.SIGTERM) != before
        assert stop.wait(0) is False
    assert signal.getsignal(signal.SIGTERM) == before


def test_progress_is_silent_without_a_terminal() -> None:
    stream = io.StringIO()
    with transfer_progress("upload in.dat", 100, stream=stream) as advance:
        advance(60)
        advance(40)
    assert stream.getvalue() == ""


def test_progress_draws_on_a_terminal() -> None:
    stream = TtyStringIO()
    with transfer_progress("upload in.dat", 100, stream=stream) as advance:
        advance(100)
    assert "upload in.dat" in stream.getvalue()
