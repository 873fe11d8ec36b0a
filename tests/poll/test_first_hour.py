"""mint-poll as a new user meets it (issue 13): one-line network errors, signals, status,
proxies, state that moved, and the words of --help."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mint_common.terminal import Terminal, terminal_override
from mint_poll.api import DistcompApi
from mint_poll.cli import main
from mint_poll.server import DistcompServer, free_port
from mint_poll.state import CalcRecord, CalcStore
from tests.helpers import BIN
from tests.poll.certs import make_tls_files
from tests.poll.conftest import SITE, TOKEN, register, write_config
from tests.poll.submit_fixtures import invoke, submit_args, workflow_config
from tests.poll.test_cli import poll, record_of, wait_for

LONG_ID = "3f2b8c1e-7a4d-4e5f-9b6a-0c1d2e3f4a5b"
SLOW_RETRIES = {"max_attempts": 5, "base_delay": 30, "jitter": False}


def start(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A real mint-poll process whose stderr goes to a file beside the config."""
    stderr = open(config.parent / "stderr.log", "w")  # noqa: SIM115 (the process owns it)
    try:
        return subprocess.Popen(
            [str(BIN / "mint-poll"), "--config", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    finally:
        stderr.close()


def stderr_of(config: Path) -> str:
    return (config.parent / "stderr.log").read_text()


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---- 8: one line for a network failure; a signal ends a retry pause ------------------------


@pytest.mark.parametrize("command", ["once", "run"])
def test_sigterm_during_a_retry_pause_ends_the_retries(tmp_path: Path, command: str) -> None:
    port = free_port()
    config = write_config(tmp_path, f"http://127.0.0.1:{port}", retry=SLOW_RETRIES)
    process = start(config, command)
    wait_for(lambda: "retrying in 30.0 s" in stderr_of(config))
    status = stop(process)
    log = stderr_of(config)
    assert "attempt 2" not in log, "no retry after the signal"
    assert f"cannot connect to 127.0.0.1:{port}: connection refused; retrying" in log
    if command == "once":
        assert status == 128 + signal.SIGTERM, log
        assert log.splitlines()[-1] == "mint-poll: error: interrupted by SIGTERM"
    else:
        assert status == 0, log
        heartbeat = json.loads((tmp_path / "state" / "agent.json").read_text())
        assert heartbeat["state"] == "stopped"


def test_check_names_the_refused_port_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = poll(write_config(tmp_path, f"http://127.0.0.1:{port}"), "check", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)["checks"]}
    assert rows["tcp"]["detail"] == f"cannot connect to 127.0.0.1:{port}: connection refused"


# ---- 7: a one-shot command stopped by SIGTERM exits 143, after winding down ----------------


def test_sigterm_while_once_runs_a_calculation_delivers_it_then_exits_143(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="sleep.sh")
    config = write_config(tmp_path, server.url, stop_grace=0.5)
    process = start(config, "once")
    wait_for(lambda: record_of(tmp_path, accept_id).get("pid") is not None)
    status = stop(process)
    assert status == 128 + signal.SIGTERM, stderr_of(config)
    record = record_of(tmp_path, accept_id)
    assert (record["step"], record["outcome"]) == ("done", "abnormal")
    assert workflow.calc_progress(accept_id) == "got return"


# ---- 10, 26: status shows whole ids, newest first; a wrong --state-dir is an error ---------


def _record(accept_id: str, accepted_at: str, step: str = "done") -> CalcRecord:
    return CalcRecord(
        accept_id=accept_id,
        site_id=SITE,
        workdir=f"/srv/calc/{accept_id}",
        staging_dir="",
        step=step,
        command="run.sh",
        outcome="completed" if step == "done" else None,
        accepted_at=accepted_at,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    store = CalcStore(tmp_path / "state")
    store.ensure()
    # an older release wrote UTC; at a site west of UTC the newer record's text sorts first
    store.save(_record("older-" + LONG_ID, "2026-11-30T00:30:00+00:00"))
    store.save(_record(LONG_ID, "2026-11-29T20:45:00-04:00"))
    return store.root


def test_status_on_a_narrow_terminal_shows_whole_ids(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    with terminal_override(Terminal(stdin_isatty=False, stdout_isatty=True, stderr_isatty=False)):
        result = CliRunner().invoke(main, ["status", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    assert "┃" in result.output, "a rich table on a terminal"
    lines = result.output.splitlines()
    newer = next(i for i, line in enumerate(lines) if f"│ {LONG_ID} " in line)
    older = next(i for i, line in enumerate(lines) if f"│ older-{LONG_ID} " in line)
    assert newer < older
    assert f"/srv/calc/{LONG_ID}" in result.output


def test_status_json_is_newest_first_with_iso_times(state_dir: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--json", "--state-dir", str(state_dir)])
    document = json.loads(result.stdout)
    ids = [entry["accept_id"] for entry in document["calculations"]]
    assert ids == [LONG_ID, "older-" + LONG_ID]
    for entry in document["calculations"]:
        assert datetime.fromisoformat(entry["accepted_at"]).utcoffset() is not None


def test_heartbeat_carries_beat_at_and_keeps_the_old_fields(tmp_path: Path) -> None:
    store = CalcStore(tmp_path / "state")
    store.ensure()
    store.beat("idle")
    result = CliRunner().invoke(main, ["status", "--json", "--state-dir", str(store.root)])
    agent = json.loads(result.stdout)["agent"]
    assert datetime.fromisoformat(agent["beat_at"]).utcoffset() is not None
    assert {"time", "epoch"} <= set(agent)


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_status_of_a_directory_without_agent_state_exits_66(tmp_path: Path, as_json: bool) -> None:
    typo = tmp_path / "typo"
    args = ["status", "--state-dir", str(typo), *(["--json"] if as_json else [])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 66
    assert f"no mint-poll agent state in {typo}" in result.stderr
    assert result.stdout == ""


# ---- 16: status needs neither requests nor the token ----------------------------------------


def test_status_works_without_requests_and_without_a_token(state_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "no-requests"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['requests'] = None\n")
    config = tmp_path / "local.yaml"
    config.write_text(f"state_dir: {state_dir}\ntoken_file: {tmp_path / 'missing-token'}\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    status = subprocess.run(
        [str(BIN / "mint-poll"), "--config", str(config), "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["calculations"][0]["accept_id"] == LONG_ID
    once = subprocess.run(
        [str(BIN / "mint-poll"), "--config", str(config), "once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert once.returncode == 69 and "mint-tools[poll]" in once.stderr


# ---- 12: the effective configuration, once at daemon start, else with -v --------------------


def test_effective_configuration_is_logged_only_by_the_daemon_or_with_v(
    server: DistcompServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, server.url)
    quiet = poll(config, "once")
    assert quiet.returncode == 0, quiet.stderr
    assert "effective configuration" not in quiet.stderr
    verbose = poll(config, "-v", "once")
    assert verbose.stderr.count("effective configuration") == 1
    process = start(config, "run")
    wait_for(lambda: "effective configuration" in stderr_of(config))
    assert stop(process) == 0
    line = next(s for s in stderr_of(config).splitlines() if "effective configuration" in s)
    view = json.loads(line.split("effective configuration: ", 1)[1])
    assert view["site_id"] == SITE and TOKEN not in line


def test_submit_logs_its_configuration_only_with_v(tmp_path: Path) -> None:
    config = workflow_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    work = tmp_path / "module"
    work.mkdir()
    quiet = invoke(config, *submit_args("copy.sh"), cwd=work)
    assert quiet.exit_code == 69
    assert "effective configuration" not in quiet.stderr
    verbose = invoke(config, "-v", *submit_args("copy.sh"), cwd=work)
    assert verbose.stderr.count("effective configuration") == 1


# ---- 15: durations, the state dir that moved ------------------------------------------------


def test_durations_in_environment_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mint_poll.config import load_poll_config

    monkeypatch.setenv("MINT_POLL_POLL_INTERVAL", "2m")
    monkeypatch.setenv("MINT_POLL_STOP_GRACE", "1m30s")
    config = load_poll_config(write_config(tmp_path, "https://mint.example.jp"))
    assert (config.poll_interval, config.stop_grace) == (120, 90)
    monkeypatch.setenv("MINT_POLL_POLL_INTERVAL", "often")
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "mint-poll.yaml"), "once"])
    assert result.exit_code == 78
    assert "environment variable MINT_POLL_POLL_INTERVAL" in result.stderr
    bad = CliRunner().invoke(main, ["submit", "--command", "x", "--timeout", "soon"])
    assert bad.exit_code == 2 and "--timeout" in bad.stderr and "30m" in bad.stderr
    zero = CliRunner().invoke(main, ["submit", "--command", "x", "--poll-interval", "0s"])
    assert zero.exit_code == 2 and "greater than 0" in zero.stderr


def test_submit_options_follow_the_conventions() -> None:
    options = {opt for param in main.commands["submit"].params for opt in param.opts}
    assert {"--input", "--result", "--out-dir", "--poll-interval", "--timeout"} <= options
    help_text = CliRunner().invoke(main, ["submit", "--help"]).output
    assert "--timeout DURATION" in help_text and "--poll-interval DURATION" in help_text


@pytest.mark.parametrize("command", ["once", "status"])
def test_the_old_state_dir_moves_and_its_unfinished_calculation_is_resumed(
    server: DistcompServer,
    workflow: DistcompApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    accept_id = register(workflow, tmp_path)
    xdg = tmp_path / "xdg"
    old = CalcStore(xdg / "mint-poll")
    old.ensure()
    unfinished = _record(accept_id, "2026-11-30T00:30:00+00:00", step="receiving")
    unfinished.workdir = str(tmp_path / "calc" / accept_id)
    unfinished.staging_dir = str(tmp_path / "calc" / f".staging-{accept_id}")
    old.save(unfinished)
    config = write_config(tmp_path, server.url)
    settings = yaml.safe_load(config.read_text())
    del settings["state_dir"]
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    env = {**os.environ, "XDG_STATE_HOME": str(xdg)}
    result = poll(config, command, env=env)
    assert result.returncode == 0, result.stderr
    new = xdg / "mint" / "poll"
    assert not (xdg / "mint-poll").exists()
    assert (new / "calcs" / f"{accept_id}.json").is_file()
    if command == "status":
        assert accept_id in result.stdout
        again = poll(config, "once", env=env)
        assert again.returncode == 0, again.stderr
        result = again
    assert f"resumed {accept_id}" in result.stdout
    assert f"calculation {accept_id}: delivered, completed" in result.stdout
    record = json.loads((new / "calcs" / f"{accept_id}.json").read_text())
    assert record["step"] == "done"


# ---- 14: check through a proxy, and which CA bundle ----------------------------------------


class _ConnectProxy(socketserver.StreamRequestHandler):
    """A tiny CONNECT proxy: records each tunnel asked for and relays the bytes."""

    server: _ProxyServer

    def handle(self) -> None:
        request = self.rfile.readline().decode("latin-1").split()
        while self.rfile.readline().strip():
            pass
        if len(request) < 2 or request[0] != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        self.server.tunnels.append(request[1])
        host, port = request[1].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as upstream:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            _relay(self.connection, upstream)


def _relay(left: socket.socket, right: socket.socket) -> None:
    while True:
        ready, _, _ = select.select([left, right], [], [], 10)
        if not ready:
            return
        for source in ready:
            data = source.recv(65536)
            if not data:
                return
            (right if source is left else left).sendall(data)


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    tunnels: list[str]


@pytest.fixture
def connect_proxy() -> Iterator[_ProxyServer]:
    proxy = _ProxyServer(("127.0.0.1", 0), _ConnectProxy)
    proxy.tunnels = []
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def _check_rows(config: Path, env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]]]:
    result = poll(config, "check", "--json", env=env)
    rows = {row["name"]: row for row in json.loads(result.stdout)["checks"]}
    return result.returncode, rows


def _clean_env(**extra: str) -> dict[str, str]:
    names = ("proxy", "ca_bundle")
    env = {k: v for k, v in os.environ.items() if not any(n in k.lower() for n in names)}
    return {**env, **extra}


def test_check_goes_through_the_https_proxy(
    tmp_path: Path, broker: Any, connect_proxy: _ProxyServer
) -> None:
    tls = make_tls_files(tmp_path)
    proxy = f"http://127.0.0.1:{connect_proxy.server_address[1]}"
    with DistcompServer(broker, TOKEN, tls_cert=tls.cert, tls_key=tls.key) as server:
        config = write_config(
            tmp_path,
            server.url,
            ca_bundle=str(tls.ca),
            min_free_mb=1,
            commands={"run.sh": "/bin/true"},
        )
        status, rows = _check_rows(config, _clean_env(HTTPS_PROXY=proxy))
        target = server.url.split("//", 1)[1].split("/", 1)[0]
        assert status == 0, rows
        assert "dns" not in rows and "tcp" not in rows
        assert rows["proxy"]["status"] == "pass"
        assert (
            f"through proxy 127.0.0.1:{connect_proxy.server_address[1]} (HTTPS_PROXY)"
            in (rows["proxy"]["detail"])
        )
        assert rows["api"]["status"] == "pass" and rows["site_id"]["status"] == "pass"
        assert f"({'ca_bundle'})" in rows["tls"]["detail"]
        assert connect_proxy.tunnels.count(target) >= 3, "proxy row, TLS row and API row"
        connect_proxy.tunnels.clear()
        status, rows = _check_rows(config, _clean_env(https_proxy=proxy, NO_PROXY="127.0.0.1"))
        assert status == 0, rows
        assert "proxy" not in rows and rows["tcp"]["status"] == "pass"
        assert connect_proxy.tunnels == []


def test_check_names_a_proxy_that_is_down(tmp_path: Path) -> None:
    closed = free_port()
    config = write_config(tmp_path, "https://mint.example.jp", min_free_mb=1)
    status, rows = _check_rows(config, _clean_env(HTTPS_PROXY=f"http://127.0.0.1:{closed}"))
    assert status == 1
    assert rows["proxy"]["status"] == "fail"
    assert (
        rows["proxy"]["detail"] == f"cannot connect to proxy 127.0.0.1:{closed}: connection refused"
    )
    assert rows["tls"]["status"] == "skip"


def test_check_shows_the_ca_bundle_from_requests_ca_bundle(tmp_path: Path, broker: Any) -> None:
    tls = make_tls_files(tmp_path)
    with DistcompServer(broker, TOKEN, tls_cert=tls.cert, tls_key=tls.key) as server:
        config = write_config(tmp_path, server.url, min_free_mb=1)
        _, rows = _check_rows(config, _clean_env(REQUESTS_CA_BUNDLE=str(tls.ca)))
        _, plain = _check_rows(config, _clean_env())
    assert rows["tls"]["status"] == "pass"
    assert f"{tls.ca} (REQUESTS_CA_BUNDLE)" in rows["tls"]["detail"]
    assert rows["api"]["status"] == "pass"
    assert plain["tls"]["status"] == "fail" and "certifi" in plain["tls"]["detail"]


# ---- 24: directories that do not exist yet ---------------------------------------------------


def test_check_warns_will_be_created_and_creates_nothing(
    server: DistcompServer, tmp_path: Path
) -> None:
    calc_base = tmp_path / "not-yet" / "calc"
    state = tmp_path / "not-yet" / "state"
    config = write_config(
        tmp_path,
        server.url,
        calc_base=str(calc_base),
        state_dir=str(state),
        min_free_mb=1,
        commands={"run.sh": "/bin/true"},
    )
    status, rows = _check_rows(config, _clean_env())
    assert status == 0, rows
    for name in ("calc_base", "state_dir"):
        assert rows[name]["status"] == "warn"
        assert "will be created" in rows[name]["detail"]
    assert not (tmp_path / "not-yet").exists()


# ---- 25: an unknown site is a configuration error, named ------------------------------------


def test_submit_to_an_unknown_site_names_it_and_exits_78(
    server: DistcompServer, tmp_path: Path
) -> None:
    config = workflow_config(tmp_path, server.url)
    work = tmp_path / "module"
    work.mkdir()
    result = invoke(config, *submit_args("run.sh", extra=["--site", "nosuch"]), cwd=work)
    assert result.exit_code == 78
    assert "does not know site 'nosuch'" in result.stderr
    assert "command" not in result.stderr.split("does not know", 1)[1].lower()


# ---- 17: the help speaks the user's words ---------------------------------------------------


def test_help_uses_no_words_only_this_project_knows() -> None:
    runner = CliRunner()
    texts = [runner.invoke(main, ["--help"]).output]
    texts += [runner.invoke(main, [name, "--help"]).output for name in main.commands]
    for text in texts:
        for word in ("seed", "quirk", "shared/protocols"):
            assert word not in text.lower(), text


def test_check_says_the_old_state_dir_will_be_moved_and_moves_nothing(
    server: DistcompServer, tmp_path: Path
) -> None:
    xdg = tmp_path / "xdg"
    CalcStore(xdg / "mint-poll").ensure()
    config = write_config(tmp_path, server.url, min_free_mb=1)
    settings = yaml.safe_load(config.read_text())
    del settings["state_dir"]
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    _, rows = _check_rows(config, _clean_env(XDG_STATE_HOME=str(xdg)))
    assert rows["state_dir"]["status"] == "warn"
    assert rows["state_dir"]["detail"] == (
        f"{xdg / 'mint-poll'} (state of an older release) will be moved to"
        f" {xdg / 'mint' / 'poll'} on first start"
    )
    assert (xdg / "mint-poll" / "calcs").is_dir() and not (xdg / "mint").exists()
