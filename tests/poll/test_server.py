"""The rehearsal broker's rules: states, purge, cancel, ordering (what the real server does)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mint_poll.api import DistcompApi
from mint_poll.server import Broker
from tests.helpers import BIN
from tests.poll.conftest import SITE, TOKEN, write_token


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def call(broker: Broker, method: str, endpoint: str, body: Any = None, **query: str) -> tuple:
    status, document = broker.handle(method, endpoint, query, body)
    entry = document["errors"][0] if isinstance(document, dict) and "errors" in document else {}
    return status, entry.get("code"), entry, document


def add(broker: Broker, command: str = "run.sh", allow: bool = True) -> str:
    info = {
        "command": command,
        "remote-site": SITE,
        "parameters": "",
        "parameter_files": {},
        "result_files": {},
    }
    _, _, entry, _ = call(broker, "POST", "add-calcinfo", {"calc-info": info})
    if allow:
        call(broker, "POST", "allow-wait-calc", {"accept_id": entry["accept_id"]})
    return str(entry["accept_id"])


def progress(broker: Broker, accept_id: str) -> str:
    return str(call(broker, "GET", "calc-progress", accept_id=accept_id)[2]["message"])


def test_purge_drops_old_records_that_never_ran_and_keeps_running_ones() -> None:
    clock = Clock()
    broker = Broker({SITE: ["run.sh"]}, clock=clock)
    never_allowed = add(broker, allow=False)
    allowed_waiting = add(broker)
    running = add(broker)
    call(broker, "GET", "calc-params", accept_id=running, site_id=SITE)
    clock.now += 29 * 60
    call(broker, "GET", "get-calcinfo")
    assert broker.progress_of(never_allowed) == "not start"
    clock.now += 2 * 60
    call(broker, "GET", "get-calcinfo")
    assert broker.progress_of(never_allowed) is None
    assert broker.progress_of(allowed_waiting) is None
    assert broker.progress_of(running) == "sending params"


def test_calc_request_offers_the_oldest_pending_and_blocks_on_a_never_allowed_one() -> None:
    broker = Broker({SITE: ["run.sh"]})
    blocked = add(broker, allow=False)
    later = add(broker)
    status, code, entry, _ = call(broker, "GET", "calc-request", site_id=SITE)
    assert (status, code, entry.get("accept_id")) == (200, "400", None)
    call(broker, "POST", "allow-wait-calc", {"accept_id": blocked})
    assert call(broker, "GET", "calc-request", site_id=SITE)[2]["accept_id"] == blocked
    call(broker, "GET", "calc-params", accept_id=blocked, site_id=SITE)
    assert call(broker, "GET", "calc-request", site_id=SITE)[2]["accept_id"] == later


def test_allow_twice_or_after_start_is_http_400() -> None:
    broker = Broker({SITE: ["run.sh"]})
    accept_id = add(broker)
    assert call(broker, "POST", "allow-wait-calc", {"accept_id": accept_id})[0] == 400
    assert call(broker, "POST", "allow-wait-calc", {"accept_id": "nope"})[0] == 400


def test_steps_out_of_order_are_refused_and_progress_only_moves_forward() -> None:
    broker = Broker({SITE: ["run.sh"]})
    accept_id = add(broker)
    ids = {"accept_id": accept_id, "site_id": SITE}
    assert call(broker, "POST", "calc-start", ids)[1] == 400
    call(broker, "GET", "calc-params", **ids)
    assert call(broker, "POST", "calc-params-complete", ids)[1] == 200
    assert call(broker, "POST", "calc-start", ids)[1] == 200
    assert call(broker, "POST", "send-results", {**ids, "result_files": {}})[1] == 400
    assert call(broker, "POST", "calc-end", {**ids, "result": "calc end"})[1] == 200
    assert call(broker, "POST", "end-send", {**ids, "result": "end send"})[1] == 400
    assert call(broker, "POST", "send-results", {**ids, "result_files": {}})[1] == 200
    assert call(broker, "POST", "end-send", {**ids, "result": "end send"})[1] == 200
    assert progress(broker, accept_id) == "status:got return"
    assert call(broker, "GET", "calc-status", accept_id=accept_id)[2]["message"] == (
        "status:completed"
    )


def test_calc_params_for_another_site_is_refused() -> None:
    broker = Broker({SITE: ["run.sh"], "other": ["run.sh"]})
    accept_id = add(broker)
    status, code, _, document = call(
        broker, "GET", "calc-params", accept_id=accept_id, site_id="other"
    )
    assert (status, code) == (200, 400)
    assert "calc-info" not in document


@pytest.mark.parametrize(
    ("stage", "expected_status"),
    [("not start", 200), ("running", 400), ("abnormal", 200), ("got return", 200)],
    ids=["before-start", "running", "abnormal", "got-return"],
)
def test_cancel_without_force_only_before_start_or_after_the_end(
    stage: str, expected_status: int
) -> None:
    broker = Broker({SITE: ["run.sh"]})
    accept_id = add(broker)
    ids = {"accept_id": accept_id, "site_id": SITE}
    if stage != "not start":
        call(broker, "GET", "calc-params", **ids)
        call(broker, "POST", "calc-params-complete", ids)
        call(broker, "POST", "calc-start", ids)
    if stage == "abnormal":
        call(broker, "POST", "calc-end", {**ids, "result": "abnormal"})
    if stage == "got return":
        call(broker, "POST", "calc-end", {**ids, "result": "calc end"})
        call(broker, "POST", "send-results", {**ids, "result_files": {}})
        call(broker, "POST", "end-send", {**ids, "result": "end send"})
    assert call(broker, "POST", "cancel-wait-calc", {"accept_id": accept_id})[0] == expected_status


def test_serve_subprocess_checks_the_token_and_stops_on_sigterm(tmp_path: Path) -> None:
    token_file = write_token(tmp_path)
    process = subprocess.Popen(
        [
            str(BIN / "mint-poll"),
            "serve",
            "--port",
            "0",
            "--site",
            f"{SITE}=run.sh",
            "--token-file",
            str(token_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        with DistcompApi(url, TOKEN) as api:
            assert api.calc_request(SITE).code == 300
        with DistcompApi(url, "x" * 64) as wrong:
            from mint_common.errors import AuthError

            with pytest.raises(AuthError):
                wrong.calc_request(SITE)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert TOKEN not in stderr


def test_serve_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "mint-poll"), "serve", "--port", "0", "--site", f"{SITE}=run.sh"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--token-file" in result.stderr


def test_sites_come_from_options_and_a_yaml_file(tmp_path: Path) -> None:
    from mint_poll.serve import parse_sites

    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text("nims-dev: [a.sh, b.sh]\nother: [c.sh]\n")
    sites = parse_sites(["nims-dev=d.sh", "new=e.sh,f.sh"], sites_file)
    assert sites == {
        "nims-dev": ["a.sh", "b.sh", "d.sh"],
        "other": ["c.sh"],
        "new": ["e.sh", "f.sh"],
    }


@pytest.mark.parametrize(
    ("pairs", "content", "message"),
    [
        (["nocommands"], None, "SITE=COMMAND"),
        ([], None, "at least one"),
        ([], "site: just-a-string\n", "list of command strings"),
    ],
    ids=["no-equals", "nothing", "bad-file"],
)
def test_bad_site_options_are_refused(
    tmp_path: Path, pairs: list[str], content: Any, message: str
) -> None:
    from mint_common.errors import MintError
    from mint_poll.serve import parse_sites

    sites_file = None
    if content is not None:
        sites_file = tmp_path / "sites.yaml"
        sites_file.write_text(content)
    with pytest.raises(MintError, match=message):
        parse_sites(pairs, sites_file)


def test_chunked_request_bodies_are_understood(server: Any) -> None:
    import requests

    def body() -> Iterator[bytes]:
        yield b'{"calc-info": {"command": "run.sh", '
        yield '"remote-site": "nims-dev", "parameters": "日本"}}'.encode()

    reply = requests.post(
        f"{server.base_url}/add-calcinfo",
        data=body(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert reply.request.headers.get("Transfer-Encoding") == "chunked"
    assert reply.json()["errors"][0]["code"] == 200
