"""mint-poll against a hostile rehearsal server (`DistcompServer.hostile`): every poisoned
reply is refused with bounded memory, and the agent logs it, records it and carries on."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from mint_common.errors import ConfigError, InputError, MintError, UnavailableError
from mint_common.retry import RetryPolicy
from mint_poll.agent import QUARANTINE_AFTER, Agent
from mint_poll.api import ApiRefusal, DistcompApi, normalize_code
from mint_poll.cli import main
from mint_poll.server import (
    Broker,
    DistcompServer,
    Hostile,
    absurd_id,
    calc_info,
    deep_nesting,
    huge_number,
    many_strings,
    many_values,
    reply_code,
    slow,
)
from mint_poll.state import CalcRecord
from mint_poll.stream import JsonLimitError, JsonLimits
from tests.helpers import run_tool
from tests.poll.conftest import SITE, TOKEN, AgentFactory, register, write_config

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, jitter=False)
MIB = 1024 * 1024


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def looping(agent: Agent) -> Iterator[threading.Thread]:
    """`run_forever` in a thread; stopped (and joined) when the block ends."""
    thread = threading.Thread(target=agent.run_forever, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        agent.stop.set()
        thread.join(timeout=30)


def heartbeat(agent: Agent) -> dict[str, Any]:
    return agent.store.heartbeat() or {}


@pytest.mark.parametrize("code", ["²", "٣", "1" * 40, "", "2 0 0", None, True, [200]], ids=repr)
def test_odd_reply_codes_are_no_code_not_a_crash(code: Any) -> None:
    assert normalize_code(code) is None


@pytest.mark.parametrize(
    ("scenario", "error", "message"),
    [
        (deep_nesting(1_000_000), JsonLimitError, "nested too deeply"),
        (reply_code("²", accept_id="x"), ApiRefusal, "no code"),
        (
            Hostile(lambda: [b'{"errors": [{"code": 200, "accept_id": "\\udc80"}]}']),
            UnavailableError,
            "lone surrogate",
        ),
    ],
    ids=["deep-nesting", "superscript-code", "surrogate-id"],
)
def test_poisoned_small_replies_are_refused_as_mint_errors(
    server: DistcompServer, scenario: Hostile, error: type[MintError], message: str
) -> None:
    server.hostile("calc-request", scenario)
    with DistcompApi(server.url, TOKEN, retry=FAST) as api, pytest.raises(error, match=message):
        api.calc_request(SITE)


SURROGATE_NAME = {
    "command": "run.sh",
    "parameter_files": {"\udc80.txt": [base64.b64encode(b"hi").decode(), "text/plain;", "x"]},
    "result_files": {"result.txt": {"content": ""}},
}


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (calc_info(SURROGATE_NAME), "lone surrogate"),
        (many_strings(100, MIB), "too much text held"),
        (huge_number(100_000_000), "token too long"),
        (deep_nesting(10_000_000), "nested too deeply"),
        (many_values(10_000_000), "too many values"),
    ],
    ids=[
        "surrogate-file-name",
        "many-large-strings-100MB",
        "number-100MB",
        "nesting-10MB",
        "values-20MB",
    ],
)
def test_poisoned_calc_params_are_refused_early_with_default_bounds(
    server: DistcompServer,
    workflow: DistcompApi,
    tmp_path: Path,
    scenario: Hostile,
    message: str,
) -> None:
    accept_id = register(workflow, tmp_path)
    server.hostile("calc-params", scenario)
    work = tmp_path / "work"
    work.mkdir()
    with DistcompApi(server.url, TOKEN, retry=FAST) as api, pytest.raises(InputError) as info:
        api.calc_params(accept_id, SITE, work)
    assert message in str(info.value)
    assert list(work.iterdir()) == []


def test_injected_small_bounds_refuse_what_the_defaults_allow(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path)
    server.hostile("calc-params", many_strings(50, 2000))
    small = JsonLimits(held=64 * 1024)
    api = DistcompApi(server.url, TOKEN, retry=FAST, limits=small)
    with api, pytest.raises(JsonLimitError, match="limit 65536"):
        api.calc_params(accept_id, SITE, tmp_path)


def test_a_two_line_token_never_reaches_a_header() -> None:
    with pytest.raises(ConfigError, match="2 lines") as info:
        DistcompApi("http://127.0.0.1:9", "tok-line-one-0123\ntok-line-two-4567")
    assert "tok-line" not in str(info.value)


def test_run_survives_poisoned_offers_and_then_delivers(
    make_agent: AgentFactory,
    server: DistcompServer,
    workflow: DistcompApi,
    broker: Broker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for scenario in (
        deep_nesting(1_000_000),
        absurd_id("a/../../x"),
        absurd_id("."),
        absurd_id("x" * 4 * MIB),
        absurd_id("line\nbreak"),
        reply_code("²", accept_id="x"),
    ):
        server.hostile("calc-request", scenario)
    accept_id = register(workflow, tmp_path)
    agent = make_agent()
    with caplog.at_level(logging.ERROR), looping(agent) as thread:
        wait_for(lambda: broker.progress_of(accept_id) == "got return", "the delivery")
        assert thread.is_alive()
    assert workflow.calc_status(accept_id) == "completed"
    assert "nested too deeply" in caplog.text
    assert not (tmp_path / "x").exists() and not (tmp_path / "calc" / "x").exists()
    assert sorted(p.name for p in (tmp_path / "calc").iterdir()) == [accept_id]
    assert "calc-request refused" in heartbeat(agent)["last_error"]["message"]


@pytest.mark.parametrize(
    "scenario",
    [calc_info(SURROGATE_NAME), many_strings(100, MIB)],
    ids=["surrogate-file-name", "many-large-strings"],
)
def test_a_poisoned_calculation_is_reported_abnormal_and_the_next_one_runs(
    make_agent: AgentFactory,
    server: DistcompServer,
    workflow: DistcompApi,
    broker: Broker,
    tmp_path: Path,
    scenario: Hostile,
) -> None:
    poisoned = register(workflow, tmp_path)
    server.hostile("calc-params", scenario)
    healthy = register(workflow, tmp_path)
    agent = make_agent()
    with looping(agent) as thread:
        wait_for(lambda: broker.progress_of(healthy) == "got return", "the second calculation")
        assert thread.is_alive()
    assert workflow.calc_status(poisoned) == "abnormal"
    assert workflow.calc_status(healthy) == "completed"


class Surprise(Exception):
    """An exception type no code of the agent expects."""


class SurpriseAt:
    """Wraps the API: `endpoint` raises Surprise for the poisoned accept_id (or for the first
    `times` calls when no accept_id is given)."""

    def __init__(self, api: DistcompApi, endpoint: str, accept_id: str = "", times: int = 0):
        self._api = api
        self._endpoint = endpoint
        self._accept_id = accept_id
        self._left = times
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._api, name)
        if name != self._endpoint:
            return target

        def call(*args: Any) -> Any:
            poisoned = (args[0] == self._accept_id) if self._accept_id else self._left > 0
            if poisoned:
                self._left -= 1
                self.raised += 1
                raise Surprise(f"injected into {name}")
            return target(*args)

        return call


@pytest.mark.parametrize("parallel", [1, 2], ids=["in-loop", "worker-threads"])
def test_an_unexpected_exception_quarantines_one_calculation_and_others_go_on(
    make_agent: AgentFactory, workflow: DistcompApi, broker: Broker, tmp_path: Path, parallel: int
) -> None:
    poisoned = register(workflow, tmp_path)
    healthy = register(workflow, tmp_path)
    wrappers: list[SurpriseAt] = []

    def wrap(api: DistcompApi) -> SurpriseAt:
        wrappers.append(SurpriseAt(api, "calc_start", accept_id=poisoned))
        return wrappers[-1]

    agent = make_agent(wrap=wrap, max_parallel=parallel)
    with looping(agent) as thread:
        wait_for(lambda: broker.progress_of(healthy) == "got return", "the healthy calculation")
        wait_for(
            lambda: (record := agent.store.load(poisoned)) is not None and record.quarantined,
            "the quarantine",
        )
        time.sleep(0.3)  # more loops: a quarantined calculation is not tried again
        assert thread.is_alive()
    assert wrappers[0].raised == QUARANTINE_AFTER
    record = agent.store.load(poisoned)
    assert record is not None and record.step == "failed" and record.terminal
    assert record.failures == QUARANTINE_AFTER
    assert record.message == (
        f"quarantined after {QUARANTINE_AFTER} identical failures:"
        " Surprise: injected into calc_start"
    )
    assert "Surprise: injected into calc_start" in heartbeat(agent)["last_error"]["message"]
    assert workflow.calc_status(healthy) == "completed"


def test_an_unexpected_exception_outside_any_calculation_is_logged_and_polling_goes_on(
    make_agent: AgentFactory, workflow: DistcompApi, broker: Broker, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path)
    agent = make_agent(wrap=lambda api: SurpriseAt(api, "calc_request", times=2))
    with looping(agent) as thread:
        wait_for(lambda: broker.progress_of(accept_id) == "got return", "the delivery")
        assert thread.is_alive()
    assert "Surprise: injected into calc_request" in heartbeat(agent)["last_error"]["message"]


def test_the_catch_all_does_not_swallow_an_exit(make_agent: AgentFactory) -> None:
    class ExitAtPoll:
        def __init__(self, api: DistcompApi) -> None:
            self._api = api

        def __getattr__(self, name: str) -> Any:
            if name == "calc_request":
                raise SystemExit(130)
            return getattr(self._api, name)

    agent = make_agent(wrap=ExitAtPoll)
    with pytest.raises(SystemExit):
        agent.run_forever()


def test_slow_replies_time_out_and_polling_goes_on(
    make_agent: AgentFactory,
    server: DistcompServer,
    workflow: DistcompApi,
    broker: Broker,
    tmp_path: Path,
) -> None:
    server.hostile("calc-request", slow(5.0), times=None)
    accept_id = register(workflow, tmp_path)
    agent = make_agent(read_timeout=0.2, retry={"max_attempts": 1})
    with looping(agent) as thread:
        wait_for(lambda: "last_error" in heartbeat(agent), "the timeout to be recorded")
        server.calm("calc-request")
        wait_for(lambda: broker.progress_of(accept_id) == "got return", "the delivery")
        assert thread.is_alive()
    assert "calc-request" in heartbeat(agent)["last_error"]["message"]


def test_status_shows_the_last_error(make_agent: AgentFactory) -> None:
    agent = make_agent()
    agent.note_error("calc-request refused (HTTP 200, no code): poisoned")
    agent.beat("idle")
    result = CliRunner().invoke(
        main, ["status", "--state-dir", str(agent.store.root)], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert "last error" in result.output
    assert "calc-request refused (HTTP 200, no code): poisoned" in result.output
    as_json = CliRunner().invoke(
        main, ["status", "--json", "--state-dir", str(agent.store.root)], catch_exceptions=False
    )
    assert "poisoned" in json.loads(as_json.output)["agent"]["last_error"]["message"]


def test_a_missing_command_program_is_a_config_error_before_the_loop(
    server: DistcompServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, server.url, commands={"run.sh": str(tmp_path / "nonexistent" / "run.sh")}
    )
    result = run_tool("mint-poll", "--config", str(config), "run", timeout=60)
    assert result.returncode == 78
    assert "'run.sh'" in result.stderr and "not found" in result.stderr


def test_a_two_line_token_file_exits_78_and_leaks_nowhere(
    server: DistcompServer, tmp_path: Path
) -> None:
    token = tmp_path / "two-line-token"
    token.write_text(TOKEN + "\nsecond-line-of-the-secret\n")
    token.chmod(0o600)
    config = write_config(tmp_path, server.url, token_file=str(token))
    log_file = tmp_path / "agent.log"
    result = run_tool(
        "mint-poll", "--config", str(config), "--log-file", str(log_file), "once", timeout=60
    )
    assert result.returncode == 78
    assert str(token) in result.stderr and "2 lines" in result.stderr
    state = tmp_path / "state"
    texts = [result.stdout, result.stderr, log_file.read_text() if log_file.exists() else ""]
    texts += [p.read_text() for p in state.rglob("*.json")] if state.exists() else []
    for text in texts:
        assert TOKEN not in text and "second-line-of-the-secret" not in text


def test_record_messages_are_saved_with_secrets_masked(make_agent: AgentFactory) -> None:
    agent = make_agent()
    quoted = repr(f"Bearer {TOKEN}")
    record = CalcRecord(
        "abc", SITE, workdir="", staging_dir="", message=quoted, reason=quoted, refusals=[quoted]
    )
    agent.store.save(record)
    text = (agent.store.calcs / "abc.json").read_text()
    assert TOKEN not in text
    assert json.loads(text)["message"] == "'Bearer ********'"
