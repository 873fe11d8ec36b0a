"""Helpers for the `mint-poll submit` tests: a real agent process and workflow-side configs.

The server is `mint_poll.server.DistcompServer` on loopback, in the test
process (so a test can look at its table or switch on hostile replies); the
agent is a real `mint-poll run` process polling it, and `submit` runs either
in-process (CliRunner) or as a real process where exit codes and signals matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import yaml
from click.testing import CliRunner, Result

from mint_poll.api import DistcompApi
from mint_poll.cli import main
from mint_poll.server import Broker
from tests.helpers import BIN
from tests.poll.conftest import SITE, TOKEN, write_token

#: Bytes of every value, to prove the transfer is binary-exact both ways.
ALL_BYTES = bytes(range(256)) * 3
JAPANESE_INPUT = "日本語 ファイル.txt"
JAPANESE_RESULT = "結果/出力データ.txt"

#: What the agent runs for each command string (argv lists: nothing goes through a shell
#: string that came from the server).
AGENT_COMMANDS: dict[str, Any] = {
    "copy.sh": [
        "/bin/sh",
        "-c",
        'mkdir -p 結果 && cp "日本語 ファイル.txt" 結果/出力データ.txt && cp bin.dat bin.out'
        ' && cp input.txt result.txt; echo "標準出力 $CALC_PARAMETERS"; echo "標準エラー" >&2',
    ],
    "fail.sh": [
        "/bin/sh",
        "-c",
        "echo partial > result.txt; echo 'failing on purpose' >&2; exit 3",
    ],
    "partial.sh": ["/bin/sh", "-c", "echo one > one.txt"],
    "sleep.sh": {"run": ["/bin/sh", "-c", "echo sleeping; exec sleep 20"], "timeout": 40},
}
#: What the server allows for SITE; `unknown.sh` is missing on purpose (refused at registration).
SERVER_COMMANDS = ("copy.sh", "fail.sh", "partial.sh", "sleep.sh")


def make_broker(**options: Any) -> Broker:
    return Broker({SITE: list(SERVER_COMMANDS)}, **options)


def workflow_config(tmp_path: Path, url: str, **overrides: Any) -> Path:
    """A workflow-side mint-poll.yaml: url, site, token file, quick retries (None drops a key)."""
    settings: dict[str, Any] = {
        "url": url,
        "site_id": SITE,
        "token_file": str(write_token(tmp_path)),
        "retry": {"max_attempts": 2, "base_delay": 0.05, "jitter": False},
    }
    settings.update(overrides)
    settings = {key: value for key, value in settings.items() if value is not None}
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True))
    return path


@contextmanager
def running_agent(tmp_path: Path, url: str, **overrides: Any) -> Iterator[subprocess.Popen[str]]:
    """`mint-poll run` polling `url` every 50 ms until the block ends (then SIGTERM)."""
    home = tmp_path / "agent"
    (home / "calc").mkdir(parents=True, exist_ok=True)
    settings = {
        "url": url,
        "site_id": SITE,
        "token_file": str(write_token(home)),
        "calc_base": str(home / "calc"),
        "state_dir": str(home / "state"),
        "poll_interval": 0.05,
        "retry": {"max_attempts": 3, "base_delay": 0.05, "jitter": False},
        "stop_grace": 1,
        "commands": AGENT_COMMANDS,
        **overrides,
    }
    config = home / "agent.yaml"
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    log = open(home / "agent.log", "w")  # noqa: SIM115 (closed after the process ends)
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "--config", str(config), "--log-format", "plain", "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def invoke(config: Path, *args: str, cwd: Optional[Path] = None) -> Result:
    """`mint-poll --config CONFIG <args>` in-process; stdout and stderr kept apart."""
    runner = CliRunner()
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    finally:
        os.chdir(old)


@dataclass(frozen=True)
class ServeProcess:
    """A `mint-poll serve` process on loopback; `url` like DistcompServer.url."""

    url: str
    process: subprocess.Popen[str]


@contextmanager
def serve_process() -> Iterator[ServeProcess]:
    """`mint-poll serve --port 0` for SITE with SERVER_COMMANDS, stopped with SIGTERM."""
    site = f"{SITE}={','.join(SERVER_COMMANDS)}"
    process = subprocess.Popen(
        [str(BIN / "mint-poll"), "-q", "serve", "--port", "0", "--site", site],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "MINT_POLL_SERVE_TOKEN": TOKEN},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on "), line
        base = line.removeprefix("listening on ")
        yield ServeProcess(base.removesuffix("/mi-distcomp-api"), process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class HasUrl(Protocol):
    @property
    def url(self) -> str: ...


def server_table(server: HasUrl, ca: Optional[Path] = None) -> dict[str, Any]:
    """The server's debug listing (GET /get-calcinfo): accept_id -> record summary."""
    with DistcompApi(server.url, TOKEN, verify=ca if ca is not None else True) as api:
        body = api.get_calcinfo()
    table = body["errors"][0]["table"]
    assert isinstance(table, dict)
    return table


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def summary_of(stdout: str) -> dict[str, Any]:
    document = json.loads(stdout)
    assert isinstance(document, dict)
    return document


def submit_args(
    command: str,
    *,
    inputs: Sequence[str] = (),
    results: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    args = ["submit", "--command", command, "--poll-interval", "0.1", "--json"]
    for name in inputs:
        args += ["--input", name]
    for name in results:
        args += ["--result", name]
    return [*args, *extra]
