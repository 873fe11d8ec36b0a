"""Fixtures for mint-poll: a real rehearsal server on loopback, configs, agents, a workflow client."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml

from mint_poll.agent import Agent
from mint_poll.api import DistcompApi, RemoteSideApi
from mint_poll.config import PollConfig, build_api, load_poll_config
from mint_poll.server import Broker, DistcompServer
from mint_poll.state import CalcStore

TOKEN = "0123456789abcdef" * 4
SITE = "nims-dev"
#: Command strings the server accepts for SITE (the agent's allowlist is separate).
SERVER_COMMANDS = ("run.sh", "fail.sh", "nofiles.sh", "sleep.sh", "count.sh", "unlisted.sh", "sh")

RUN_SCRIPT = """
cat input.txt > result.txt 2>/dev/null || echo made > result.txt
echo "stdout 標準出力 $CALC_PARAMETERS in $CALC_DIR"
echo "stderr 標準エラー" >&2
"""


def write_token(directory: Path, token: str = TOKEN) -> Path:
    path = directory / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def agent_settings(tmp_path: Path, url: str, **overrides: Any) -> dict[str, Any]:
    calc_base = tmp_path / "calc"
    calc_base.mkdir(exist_ok=True)
    counter = tmp_path / "runs.log"
    settings: dict[str, Any] = {
        "url": url,
        "site_id": SITE,
        "token_file": str(write_token(tmp_path)),
        "calc_base": str(calc_base),
        "state_dir": str(tmp_path / "state"),
        "poll_interval": 0.05,
        "retry": {"max_attempts": 3, "base_delay": 0.05, "jitter": False},
        "stop_grace": 1,
        "commands": {
            "run.sh": ["/bin/sh", "-c", RUN_SCRIPT],
            "fail.sh": ["/bin/sh", "-c", "echo failing >&2; exit 3"],
            "nofiles.sh": ["/bin/sh", "-c", "echo nothing made"],
            "sleep.sh": {"run": ["/bin/sh", "-c", "echo sleeping; sleep 30"], "timeout": 60},
            "count.sh": [
                "/bin/sh",
                "-c",
                f'echo "$CALC_DIR" >> {counter}; echo done > result.txt',
            ],
        },
    }
    settings.update(overrides)
    return settings


def write_config(tmp_path: Path, url: str, **overrides: Any) -> Path:
    path = tmp_path / "mint-poll.yaml"
    path.write_text(yaml.safe_dump(agent_settings(tmp_path, url, **overrides), allow_unicode=True))
    return path


def load(tmp_path: Path, url: str, **overrides: Any) -> PollConfig:
    return load_poll_config(write_config(tmp_path, url, **overrides))


@pytest.fixture
def broker() -> Broker:
    return Broker({SITE: list(SERVER_COMMANDS), "other-site": ["run.sh"]})


@pytest.fixture
def server(broker: Broker) -> Iterator[DistcompServer]:
    with DistcompServer(broker, TOKEN) as running:
        yield running


@pytest.fixture
def workflow(server: DistcompServer) -> Iterator[DistcompApi]:
    with DistcompApi(server.url, TOKEN) as api:
        yield api


AgentFactory = Callable[..., Agent]


@pytest.fixture
def make_agent(tmp_path: Path, server: DistcompServer) -> AgentFactory:
    """`make_agent(wrap=None, directory=None, **config overrides)` -> an Agent on `server`."""

    def factory(
        wrap: Optional[Callable[[DistcompApi], RemoteSideApi]] = None,
        directory: Optional[Path] = None,
        **overrides: Any,
    ) -> Agent:
        base = directory or tmp_path
        base.mkdir(exist_ok=True)
        config = load(base, server.url, **overrides)
        api = build_api(config)
        store = CalcStore(config.state_dir)
        store.ensure()
        return Agent(config, wrap(api) if wrap else api, store)

    return factory


def register(
    workflow: DistcompApi,
    tmp_path: Path,
    command: str = "run.sh",
    files: Optional[Mapping[str, bytes]] = None,
    results: tuple[str, ...] = ("result.txt",),
    parameters: str = "p=1",
    allow: bool = True,
) -> str:
    """Register a calculation as the workflow side does; returns its accept_id."""
    source = tmp_path / "wf-inputs"
    source.mkdir(exist_ok=True)
    paths: dict[str, Optional[Path]] = {}
    for index, (name, content) in enumerate((files or {"input.txt": b"hello\n"}).items()):
        path = source / f"in-{index}"
        path.write_bytes(content)
        paths[name] = path
    accept_id = workflow.add_calcinfo(
        command, SITE, parameters=parameters, parameter_files=paths, result_names=results
    )
    if allow:
        workflow.allow_wait_calc(accept_id)
    return accept_id


def fetch(workflow: DistcompApi, accept_id: str, tmp_path: Path) -> dict[str, bytes]:
    """get-calc-result into a fresh directory; returns name -> bytes of the files received."""
    dest = tmp_path / f"results-{accept_id[:8]}"
    result = workflow.get_calc_result(accept_id, dest)
    return {f.name: f.path.read_bytes() for f in result.files if f.path is not None}


def poll_env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1"}


class _HtmlPage(http.server.BaseHTTPRequestHandler):
    """What a captive or corporate proxy answers: HTTP 200 with an HTML page, not JSON."""

    def do_GET(self) -> None:
        body = b"<html>corporate proxy login</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def html_proxy_url() -> Iterator[str]:
    """The URL of a loopback server that answers every GET with an HTML page."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _HtmlPage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
