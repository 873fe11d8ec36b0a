"""mint-poll as users run it: real processes, real exit codes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mint_common.files import SingleInstanceLock
from mint_poll.api import STDERR_NAME, STDOUT_NAME, DistcompApi
from mint_poll.cli import main
from mint_poll.config import load_poll_config
from mint_poll.server import DistcompServer, free_port
from tests.helpers import BIN, run_tool
from tests.poll.certs import make_tls_files
from tests.poll.conftest import SITE, TOKEN, fetch, register, write_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mint-poll"


def poll(config: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run_tool("mint-poll", "--config", str(config), *args, **kwargs)


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def record_of(tmp_path: Path, accept_id: str) -> dict[str, Any]:
    path = tmp_path / "state" / "calcs" / f"{accept_id}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def live_members_of_group(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (PID 1 here may not reap them)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_once_delivers_a_calculation_and_exits_0(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path)
    config = write_config(tmp_path, server.url)
    result = poll(config, "-vv", "once")
    assert result.returncode == 0, result.stderr
    assert f"calculation {accept_id}: delivered, completed" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert "calc-end" in result.stderr
    nothing = poll(config, "once", "--json")
    assert nothing.returncode == 0
    assert json.loads(nothing.stdout) == {"message": "nothing to do", "calculations": []}
    status = json.loads(poll(config, "status", "--json").stdout)
    (entry,) = status["calculations"]
    assert (entry["accept_id"], entry["step"], entry["outcome"]) == (accept_id, "done", "completed")
    assert entry["workdir"] == str(tmp_path / "calc" / accept_id)
    assert status["agent"]["state"] == "idle"
    table = poll(config, "status")
    assert accept_id in table.stdout and "done: completed" in table.stdout


def test_once_exits_69_when_the_server_stays_down(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, f"http://127.0.0.1:{port}", retry="retry:1,0.1")
    result = poll(config, "once")
    assert result.returncode == 69
    assert result.stderr.splitlines()[-1] == (
        f"mint-poll: error: cannot connect to 127.0.0.1:{port}: connection refused"
        " (after 2 attempts)"
    )


def test_once_exits_75_at_once_when_another_run_holds_the_lock(
    server: DistcompServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, server.url)
    lock = tmp_path / "state" / "agent.lock"
    with SingleInstanceLock(lock):
        result = poll(config, "once")
    assert result.returncode == 75
    assert str(lock) in result.stderr and f"pid {os.getpid()}" in result.stderr


def test_once_with_an_unknown_site_id_is_a_config_error(
    server: DistcompServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, server.url, site_id="unknown-site")
    result = poll(config, "once")
    assert result.returncode == 78
    assert "unknown-site" in result.stderr


def test_once_exits_69_when_the_calculation_is_lost(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="sleep.sh")
    config = write_config(
        tmp_path,
        server.url,
        commands={"sleep.sh": ["/bin/sh", "-c", "sleep 1; echo x > result.txt"]},
    )
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), "once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: record_of(tmp_path, accept_id).get("step") == "started")
    server.broker.restart()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 69
    assert "no longer knows" in stderr
    assert record_of(tmp_path, accept_id)["step"] == "lost"
    assert (tmp_path / "calc" / accept_id / "result.txt").exists()


def test_sigterm_during_a_run_finishes_the_sequence_and_exits_0(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="sleep.sh")
    config = write_config(tmp_path, server.url, stop_grace=0.5)
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: record_of(tmp_path, accept_id).get("pid") is not None)
    child = record_of(tmp_path, accept_id)["pid"]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    record = record_of(tmp_path, accept_id)
    assert (record["step"], record["outcome"]) == ("done", "abnormal")
    assert live_members_of_group(child) == []
    received = fetch(workflow, accept_id, tmp_path)
    assert received[STDOUT_NAME] == b"sleeping\n"
    assert b"asked to stop" in received[STDERR_NAME]
    heartbeat = json.loads((tmp_path / "state" / "agent.json").read_text())
    assert heartbeat["state"] == "stopped"


def test_second_sigterm_exits_at_once_and_the_next_run_finishes_the_job(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="sleep.sh")
    config = write_config(tmp_path, server.url, stop_grace=60)
    log_file = tmp_path / "agent.log"
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), "--log-file", str(log_file), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: record_of(tmp_path, accept_id).get("pid") is not None)
    child = record_of(tmp_path, accept_id)["pid"]
    process.send_signal(signal.SIGTERM)
    wait_for(lambda: "letting the command finish" in log_file.read_text())
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert record_of(tmp_path, accept_id)["step"] == "started"
    assert live_members_of_group(child) == []
    again = poll(config, "once")
    assert again.returncode == 0, again.stderr
    assert record_of(tmp_path, accept_id)["outcome"] == "abnormal"
    assert workflow.calc_status(accept_id) == "abnormal"


def test_sigkill_after_the_command_finished_then_restart_delivers_once(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="count.sh")
    config = write_config(tmp_path, server.url)
    hold = server.hold_next("calc-end")
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), "once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: record_of(tmp_path, accept_id).get("step") == "ran")
        process.kill()
        process.wait(timeout=10)
    finally:
        hold.release.set()
    assert process.returncode == -signal.SIGKILL
    assert workflow.calc_progress(accept_id) == "running"
    again = poll(config, "once")
    assert again.returncode == 0, again.stderr
    assert f"resumed {accept_id}: done completed" in again.stdout
    assert len((tmp_path / "runs.log").read_text().splitlines()) == 1
    assert fetch(workflow, accept_id, tmp_path)["result.txt"] == b"done\n"
    assert poll(config, "once").stdout.strip() == "nothing to do"


def test_run_keeps_polling_after_retries_are_exhausted(tmp_path: Path, broker: Any) -> None:
    port = free_port()
    config = write_config(tmp_path, f"http://127.0.0.1:{port}", retry="retry:1,0.05")
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (tmp_path / "state" / "agent.json").exists())
        wait_for(lambda: "error" in (tmp_path / "state" / "agent.json").read_text())
        with (
            DistcompServer(broker, TOKEN, port=port) as server,
            DistcompApi(server.url, TOKEN) as wf,
        ):
            accept_id = register(wf, tmp_path)
            wait_for(lambda: record_of(tmp_path, accept_id).get("step") == "done")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert f"cannot connect to 127.0.0.1:{port}: connection refused (after 2 attempts)" in stderr


def test_legacy_command_line_polls_like_run(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path)
    settings = write_config(tmp_path, server.url)
    config = load_poll_config(settings)
    host_port = server.url.rsplit(":", 1)
    env = {**os.environ, "MINT_SYSTEM_CONFIG_DIR": str(tmp_path / "etc")}
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "mint-poll.yaml").write_text(
        f"state_dir: {config.state_dir}\npoll_interval: 0.05\ncommands:\n"
        f"  run.sh: [/bin/sh, -c, 'echo legacy > result.txt']\n"
    )
    process = subprocess.Popen(
        [
            str(BIN / "mint-poll"),
            "legacy",
            SITE,
            host_port[0],
            TOKEN,
            "retry:2,0.1",
            f"port:{host_port[1]}",
            f"calc_base:{tmp_path / 'calc'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for(lambda: record_of(tmp_path, accept_id).get("step") == "done")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "command line, where every user" in stderr
    assert TOKEN not in stderr
    assert fetch(workflow, accept_id, tmp_path)["result.txt"] == b"legacy\n"


def test_legacy_login_form_is_refused_clearly() -> None:
    result = CliRunner().invoke(main, ["legacy", SITE, "https://h", "login"])
    assert result.exit_code == 2
    assert "'login' form" in result.output


def check_json(config: Path) -> tuple[int, dict[str, str]]:
    result = poll(config, "check", "--json")
    document = json.loads(result.stdout)
    return result.returncode, {c["name"]: c["status"] for c in document["checks"]}


def test_check_passes_everything_over_https_with_the_ca_bundle(tmp_path: Path, broker: Any) -> None:
    tls = make_tls_files(tmp_path)
    with DistcompServer(broker, TOKEN, tls_cert=tls.cert, tls_key=tls.key) as server:
        config = write_config(
            tmp_path,
            server.url,
            ca_bundle=str(tls.ca),
            min_free_mb=1,
            commands={"run.sh": "/bin/true"},
        )
        status, checks = check_json(config)
        detail = json.loads(poll(config, "check", "--json").stdout)["checks"]
    assert status == 0, checks
    assert {name for name, s in checks.items() if s != "pass"} == {"state_dir", "heartbeat"}
    assert checks["state_dir"] == checks["heartbeat"] == "warn", "no agent has run yet"
    tls_detail = next(c["detail"] for c in detail if c["name"] == "tls")
    assert str(tls.ca) in tls_detail and "expires" in tls_detail


@pytest.mark.parametrize(
    ("failing", "overrides"),
    [
        ("config", {"poll_interval": -1}),
        ("tcp", {"url": "http://127.0.0.1:{closed}"}),
        ("token", {"token_file": None}),
        ("site_id", {"site_id": "unknown-site"}),
        ("calc_base", {"calc_base": "/etc/hostname/calc"}),
        ("commands", {"commands": {"run.sh": "/nonexistent/run.sh"}}),
        ("commands", {"commands": {}}),
        ("tls", {"url": "https"}),
        ("state_dir", {"state_dir": "/proc/version/state"}),
        ("calc_base", {"min_free_mb": 1 << 40}),
    ],
    ids=[
        "config",
        "tcp",
        "token",
        "site",
        "calc-base",
        "command-missing",
        "no-commands",
        "tls",
        "state-dir",
        "no-free-space",
    ],
)
def test_check_fails_for_each_broken_piece(
    server: DistcompServer, tmp_path: Path, failing: str, overrides: dict[str, Any]
) -> None:
    settings: dict[str, Any] = {"min_free_mb": 1, "commands": {"run.sh": "/bin/true"}}
    settings.update(overrides)
    url = server.url
    if settings.get("url") == "https":
        tls = make_tls_files(tmp_path)
        tls_server = DistcompServer(server.broker, TOKEN, tls_cert=tls.cert, tls_key=tls.key)
        tls_server.start()
        url = tls_server.url
        settings.pop("url")
    if "url" in settings:
        url = settings.pop("url").format(closed=free_port())
    if "token_file" in settings:
        settings.pop("token_file")
        bad = tmp_path / "bad-token"
        bad.write_text("not-the-token")
        bad.chmod(0o600)
        settings["token_file"] = str(bad)
    try:
        status, checks = check_json(write_config(tmp_path, url, **settings))
    finally:
        if url.startswith("https"):
            tls_server.shutdown()
    assert status == 1
    assert checks[failing] == "fail", checks
    assert [name for name, s in checks.items() if s == "fail"] == [failing]


def test_check_fails_the_api_row_when_something_else_answers(
    tmp_path: Path, html_proxy_url: str
) -> None:
    status, checks = check_json(write_config(tmp_path, html_proxy_url, min_free_mb=1))
    assert status == 1
    assert checks["api"] == "fail" and checks["token"] == "skip" and checks["site_id"] == "skip"


def test_check_reports_an_unresolvable_host(tmp_path: Path) -> None:
    status, checks = check_json(write_config(tmp_path, "https://no-such-host.invalid"))
    assert status == 1
    assert checks["dns"] == "fail" and checks["tcp"] == "skip"


def test_example_config_loads_with_the_tools_loader(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    text = (
        (EXAMPLES / "mint-poll.yaml").read_text().replace("/etc/mint/mint-poll.token", str(token))
    )
    copy = tmp_path / "mint-poll.yaml"
    copy.write_text(text)
    config = load_poll_config(copy)
    assert config.site_id == "nims-dev"
    assert config.retry.max_attempts == 6 and config.retry.base_delay == 60
    assert config.commands["run_fem.sh"].timeout == 86400
    assert config.commands["run_fem.sh"].env == {"OMP_NUM_THREADS": "8"}


def test_missing_extra_gives_exit_69_with_the_pip_hint(base_only_venv: Path) -> None:
    result = subprocess.run(
        [str(base_only_venv.parent / "mint-poll"), "once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 69
    assert "mint-tools[poll]" in result.stderr
    help_text = subprocess.run(
        [str(base_only_venv.parent / "mint-poll"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_text.returncode == 0 and "once" in help_text.stdout


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name in ("run", "once", "check", "status", "serve", "legacy"):
        result = runner.invoke(main, [name, "--help"], catch_exceptions=False)
        assert result.exit_code == 0
        assert len(result.output.splitlines()) > 5
