"""SIGKILL of a real `mint-poll` process at every step of its main flow, then a restart.

Each kill point is found without sleeps: the rehearsal server parks the request of
one endpoint (before the broker handles it, or after, so only the reply is lost) and
says when it is there, or the command itself leaves a marker file. After the kill the
process runs again; the calculation must be delivered exactly once with its results
(or, where the kill lost what cannot be had again, reported abnormal once, with the
reason), the command never run twice, and nothing left behind on the server.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Callable, Optional

import pytest

from mint_poll.api import STDERR_NAME, STDOUT_NAME, DistcompApi
from mint_poll.server import DistcompServer, Hold
from mint_poll.submit import JOURNAL_NAME
from tests.helpers import BIN, run_tool
from tests.poll.conftest import fetch, register, write_config
from tests.poll.submit_fixtures import (
    running_agent,
    server_table,
    submit_args,
    summary_of,
    workflow_config,
)
from tests.poll.test_cli import live_members_of_group, poll, record_of, wait_for

INPUT = b"input bytes \x00\xff\n"


def commands(tmp_path: Path) -> dict[str, list[str]]:
    """run.sh counts its runs and copies its input; sleep.sh says it started, then blocks."""
    runs = tmp_path / "runs.log"
    started = tmp_path / "started"
    return {
        "run.sh": ["/bin/sh", "-c", f'echo "$CALC_DIR" >> {runs}; cp input.txt result.txt'],
        "sleep.sh": [
            "/bin/sh",
            "-c",
            f'echo "$CALC_DIR" >> {runs}; echo begun; echo $$ > {started}.new;'
            f" mv {started}.new {started}; exec sleep 60",
        ],
    }


def runs(tmp_path: Path) -> int:
    path = tmp_path / "runs.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def kill_once_at(config: Path, hold: Optional[Hold], reached: Callable[[], bool]) -> None:
    """Run `mint-poll once`; SIGKILL it when `reached()` holds, then let `hold` go."""
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), "once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(reached)
        process.kill()
        process.wait(timeout=10)
    finally:
        if hold is not None:
            hold.release.set()
    assert process.returncode == -signal.SIGKILL


def restart_delivers(
    config: Path, workflow: DistcompApi, accept_id: str, tmp_path: Path
) -> tuple[str, dict[str, bytes]]:
    """Restart; the calculation is delivered once and, once fetched, gone from the server."""
    again = poll(config, "once")
    assert again.returncode == 0, again.stderr
    assert record_of(tmp_path, accept_id)["step"] == "done"
    status = workflow.calc_status(accept_id)
    files = fetch(workflow, accept_id, tmp_path)
    assert workflow.get_calcinfo()["errors"][0]["table"] == {}
    final = poll(config, "once")
    assert final.returncode == 0, final.stderr
    assert final.stdout.strip() == "nothing to do"
    return status, files


# (endpoint parked, whether the server handled it first, the server's progress at the kill)
COMPLETING_KILLS = [
    pytest.param("calc-request", True, "not start", id="poll-offer-lost"),
    pytest.param("calc-params", False, "not start", id="accept-before-params"),
    pytest.param("calc-params-complete", False, "sending params", id="after-workdir-set-up"),
    pytest.param("calc-params-complete", True, "complete send", id="params-complete-reply-lost"),
    pytest.param("calc-start", False, "complete send", id="before-command-start"),
    pytest.param("calc-start", True, "running", id="command-start-reply-lost"),
    pytest.param("calc-end", True, "calc end", id="calc-end-reply-lost"),
    pytest.param("send-results", False, "calc end", id="before-result-upload"),
    pytest.param("send-results", True, "getting return", id="result-upload-reply-lost"),
    pytest.param("end-send", False, "getting return", id="before-end-send"),
    pytest.param("end-send", True, "got return", id="end-send-reply-lost"),
]


@pytest.mark.parametrize(("endpoint", "processed", "progress"), COMPLETING_KILLS)
def test_sigkill_then_restart_delivers_the_full_results_exactly_once(
    server: DistcompServer,
    workflow: DistcompApi,
    tmp_path: Path,
    endpoint: str,
    processed: bool,
    progress: str,
) -> None:
    config = write_config(tmp_path, server.url, commands=commands(tmp_path))
    accept_id = register(workflow, tmp_path, files={"input.txt": INPUT})
    hold = server.hold_next(endpoint, processed=processed)
    kill_once_at(config, hold, hold.arrived.is_set)
    assert workflow.calc_progress(accept_id) == progress
    status, files = restart_delivers(config, workflow, accept_id, tmp_path)
    assert status == "completed"
    assert files["result.txt"] == INPUT
    assert files[STDERR_NAME] == b""
    assert runs(tmp_path) == 1


def test_sigkill_while_the_parameters_come_reports_abnormal_once_and_never_runs(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    """The server sends calc-params once (it moved on): what was lost cannot be run."""
    config = write_config(tmp_path, server.url, commands=commands(tmp_path))
    accept_id = register(workflow, tmp_path, files={"input.txt": INPUT})
    hold = server.hold_next("calc-params", processed=True)
    kill_once_at(config, hold, hold.arrived.is_set)
    assert workflow.calc_progress(accept_id) == "sending params"
    status, files = restart_delivers(config, workflow, accept_id, tmp_path)
    assert status == "abnormal"
    assert "parameter transfer was interrupted" in files[STDERR_NAME].decode()
    assert "result.txt" not in files
    assert runs(tmp_path) == 0


def test_sigkill_while_the_command_runs_kills_it_and_reports_abnormal_once(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    """A command orphaned by the kill is killed on restart, never run again, and its
    output so far is delivered with the reason."""
    config = write_config(tmp_path, server.url, commands=commands(tmp_path))
    accept_id = register(workflow, tmp_path, command="sleep.sh", files={"input.txt": INPUT})
    started = tmp_path / "started"
    kill_once_at(
        config,
        None,
        lambda: started.exists() and record_of(tmp_path, accept_id).get("pid") is not None,
    )
    pid = record_of(tmp_path, accept_id)["pid"]
    assert live_members_of_group(pid), "the orphaned command runs on until the restart"
    status, files = restart_delivers(config, workflow, accept_id, tmp_path)
    assert live_members_of_group(pid) == []
    assert status == "abnormal"
    assert files[STDOUT_NAME] == b"begun\n"
    assert "the agent stopped while the command was running" in files[STDERR_NAME].decode()
    assert runs(tmp_path) == 1


# ---- the workflow side: `mint-poll submit` -------------------------------------------------

SUBMIT = submit_args("run.sh", inputs=["input.txt"], results=["result.txt"])


def kill_submit_at(config: Path, work: Path, hold: Hold) -> None:
    """Run `mint-poll submit`; SIGKILL it when `hold` has its request, then let that go."""
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), *SUBMIT],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(hold.arrived.is_set)
        process.kill()
        process.wait(timeout=10)
    finally:
        hold.release.set()
    assert process.returncode == -signal.SIGKILL


# (endpoint parked, whether the server handled it first, how many runs the rerun ends with)
SUBMIT_KILLS = [
    pytest.param("add-calcinfo", False, 1, id="registration-and-upload"),
    pytest.param("allow-wait-calc", False, 1, id="allow-before-it-is-handled"),
    pytest.param("allow-wait-calc", True, 1, id="allow-reply-lost"),
    pytest.param("calc-progress", True, 1, id="waiting"),
    pytest.param("get-calc-result", False, 1, id="before-result-download"),
    # get-calc-result deletes the record: the results went down with the killed run.
    pytest.param("get-calc-result", True, 2, id="result-download-reply-lost"),
]


@pytest.mark.parametrize(("endpoint", "processed", "expected_runs"), SUBMIT_KILLS)
def test_sigkilled_submit_rerun_ends_correctly_with_nothing_left_on_the_server(
    server: DistcompServer,
    tmp_path: Path,
    endpoint: str,
    processed: bool,
    expected_runs: int,
) -> None:
    work = tmp_path / "module"
    work.mkdir()
    (work / "input.txt").write_bytes(INPUT)
    config = workflow_config(tmp_path, server.url)
    with running_agent(tmp_path, server.url, commands=commands(tmp_path)):
        kill_submit_at(config, work, server.hold_next(endpoint, processed=processed))
        rerun = run_tool("mint-poll", "--config", str(config), *SUBMIT, cwd=work)
    assert rerun.returncode == 0, rerun.stderr
    assert summary_of(rerun.stdout)["status"] == "completed"
    assert (work / "result.txt").read_bytes() == INPUT
    assert server_table(server) == {}
    assert runs(tmp_path) == expected_runs
    assert not (work / JOURNAL_NAME).exists()
    if expected_runs == 2:
        assert "gone from the server" in rerun.stderr


def test_rerun_of_a_different_submission_cancels_the_one_left_in_the_out_dir(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    work = tmp_path / "module"
    work.mkdir()
    (work / "input.txt").write_bytes(INPUT)
    left = register(workflow, tmp_path, allow=False)
    (work / JOURNAL_NAME).write_text(json.dumps({"accept_id": left, "request": {"x": 1}}))
    config = workflow_config(tmp_path, server.url)
    with running_agent(tmp_path, server.url, commands=commands(tmp_path)):
        rerun = run_tool("mint-poll", "--config", str(config), *SUBMIT, cwd=work)
    assert rerun.returncode == 0, rerun.stderr
    assert f"force-cancelling calculation {left}" in rerun.stderr
    assert (work / "result.txt").read_bytes() == INPUT
    assert server_table(server) == {}
    assert runs(tmp_path) == 1


def test_sigkill_as_the_command_starts_kills_the_orphan_though_its_pid_was_not_saved(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    """The record as a kill between the command's start and the saving of its pid leaves it."""
    config = write_config(tmp_path, server.url, commands=commands(tmp_path))
    accept_id = register(workflow, tmp_path, command="sleep.sh", files={"input.txt": INPUT})
    started = tmp_path / "started"
    kill_once_at(config, None, started.exists)
    pid = int(started.read_text())
    path = tmp_path / "state" / "calcs" / f"{accept_id}.json"
    path.write_text(json.dumps({**record_of(tmp_path, accept_id), "pid": None}))
    assert live_members_of_group(pid), "the orphaned command runs on until the restart"
    status, files = restart_delivers(config, workflow, accept_id, tmp_path)
    assert live_members_of_group(pid) == []
    assert status == "abnormal"
    assert "the agent stopped while the command was running" in files[STDERR_NAME].decode()
    assert runs(tmp_path) == 1
