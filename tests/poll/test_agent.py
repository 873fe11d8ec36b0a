"""The agent end to end against the rehearsal server on loopback (in-process agent)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from mint_common.errors import UnavailableError
from mint_poll.agent import Agent, RetryPause, StoppedWhileWaiting, build_agent
from mint_poll.api import STDERR_NAME, STDOUT_NAME, DistcompApi, Reply
from mint_poll.config import build_api
from mint_poll.mime import BINARY_WORDS, mime_words
from mint_poll.runner import run_command_in
from mint_poll.server import Broker, DistcompServer, Hostile, free_port
from mint_poll.state import CalcRecord, CalcStore
from tests.poll.conftest import SITE, AgentFactory, fetch, load, register

BINARY = bytes(range(256)) * 4


def test_happy_path_text_binary_and_japanese_names(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    files = {
        "input.txt": "こんにちは MInt\n".encode(),
        "データ/バイナリ.bin": BINARY,
    }
    accept_id = register(
        workflow,
        tmp_path,
        files=files,
        results=("result.txt", "データ/バイナリ.bin"),
        parameters="温度=300",
    )
    agent = make_agent()
    outcome = agent.poll_once()
    assert outcome.delivered
    record = outcome.record
    assert record is not None and record.outcome == "completed"
    workdir = Path(record.workdir)
    assert workdir == tmp_path / "calc" / accept_id
    assert workdir.stat().st_mode & 0o777 == 0o700
    assert workflow.calc_status(accept_id) == "completed"
    received = fetch(workflow, accept_id, tmp_path)
    assert received["result.txt"] == files["input.txt"]
    assert received["データ/バイナリ.bin"] == BINARY
    stdout = received[STDOUT_NAME].decode()
    assert stdout == f"stdout 標準出力 温度=300 in {workdir}\n"
    assert received[STDERR_NAME].decode() == "stderr 標準エラー\n"
    assert agent.poll_once().record is None


def test_command_not_in_the_allowlist_is_refused_and_reported(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="unlisted.sh")
    record = make_agent().poll_once().record
    assert record is not None and record.step == "done" and record.outcome == "abnormal"
    assert workflow.calc_status(accept_id) == "abnormal"
    received = fetch(workflow, accept_id, tmp_path)
    assert "'unlisted.sh' is not in this site's allowlist" in received[STDERR_NAME].decode()
    assert received[STDOUT_NAME] == b""


def test_allow_any_command_runs_the_string_in_a_shell(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="sh", results=())
    record = make_agent(allow_any_command=True, commands={}).poll_once().record
    assert record is not None and record.outcome == "completed"
    assert workflow.calc_status(accept_id) == "completed"


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("fail.sh", "exited with status 3"),
        ("nofiles.sh", "none of the requested result files exists"),
    ],
    ids=["non-zero-exit", "no-result-files"],
)
def test_abnormal_runs_still_deliver_their_logs(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path, command: str, reason: str
) -> None:
    accept_id = register(workflow, tmp_path, command=command)
    record = make_agent().poll_once().record
    assert record is not None and record.step == "done"
    assert record.outcome == "abnormal" and reason in (record.reason or "")
    assert workflow.calc_status(accept_id) == "abnormal"
    received = fetch(workflow, accept_id, tmp_path)
    assert STDOUT_NAME in received and STDERR_NAME in received
    assert "result.txt" not in received


def test_missing_result_file_is_sent_as_an_error_entry(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, results=("result.txt", "never-made.dat"))
    record = make_agent().poll_once().record
    assert record is not None and record.outcome == "completed"
    result = workflow.get_calc_result(accept_id, tmp_path / "r")
    missing = {f.name: f for f in result.missing}
    assert set(missing) == {"never-made.dat"}
    assert missing["never-made.dat"].mimetype1 == "Error"
    assert "never-made.dat" in (missing["never-made.dat"].error or "")


@pytest.mark.parametrize(
    "name", ["../x", "/etc/x", "a/../../x"], ids=["dotdot", "absolute", "inner"]
)
def test_traversal_parameter_names_make_the_run_abnormal_and_write_nothing_outside(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path, name: str
) -> None:
    accept_id = register(workflow, tmp_path, files={name: b"evil", "input.txt": b"ok"})
    record = make_agent().poll_once().record
    assert record is not None and record.outcome == "abnormal"
    assert "refused parameter files" in (record.reason or "")
    assert not (tmp_path / "x").exists() and not (tmp_path / "calc" / "x").exists()
    received = fetch(workflow, accept_id, tmp_path)
    assert name in received[STDERR_NAME].decode()
    runs = tmp_path / "runs.log"
    assert not runs.exists()


def test_command_timeout_kills_the_process_group(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="sleep.sh")
    agent = make_agent(
        commands={"sleep.sh": {"run": ["/bin/sh", "-c", "sleep 30 & sleep 30"], "timeout": 0.5}}
    )
    record = agent.poll_once().record
    assert record is not None and record.outcome == "abnormal"
    assert "time limit of 0.5 s" in (record.reason or "")
    assert "time limit" in fetch(workflow, accept_id, tmp_path)[STDERR_NAME].decode()


def test_result_file_over_the_2_gib_base64_limit_is_refused_not_sent(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    script = "truncate -s 1700000000 big.dat; echo ok > result.txt"
    accept_id = register(workflow, tmp_path, results=("result.txt", "big.dat"))
    record = make_agent(commands={"run.sh": ["/bin/sh", "-c", script]}).poll_once().record
    assert record is not None and record.step == "done" and record.outcome == "abnormal"
    assert "2 GiB" in (record.reason or "")
    result = workflow.get_calc_result(accept_id, tmp_path / "r")
    assert [f.name for f in result.missing] == ["big.dat"]
    assert "2 GiB" in (result.missing[0].error or "")
    assert [r.name for r in record.results if r.too_large] == ["big.dat"]
    assert str(tmp_path) not in (record.reason or ""), "the server is told the name, not a path"


def test_a_missing_result_whose_name_mentions_2_gib_is_not_taken_for_an_oversized_one(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    register(workflow, tmp_path, results=("result.txt", "over 2 GiB.txt"))
    script = "echo ok > result.txt"
    record = make_agent(commands={"run.sh": ["/bin/sh", "-c", script]}).poll_once().record
    assert record is not None and record.step == "done"
    assert record.outcome == "completed", record.reason
    assert not any(r.too_large for r in record.results)


class RestartBeforeCalcEnd:
    """Wraps the API: the server restarts (loses every record) just before calc-end."""

    def __init__(self, api: DistcompApi, broker: Broker) -> None:
        self._api = api
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def calc_end(self, accept_id: str, site_id: str, result: str) -> Reply:
        self._broker.restart()
        return self._api.calc_end(accept_id, site_id, result)


def test_server_restart_mid_sequence_marks_the_calculation_lost_and_polling_goes_on(
    make_agent: AgentFactory, workflow: DistcompApi, broker: Broker, tmp_path: Path
) -> None:
    register(workflow, tmp_path)
    agent = make_agent(wrap=lambda api: RestartBeforeCalcEnd(api, broker))
    record = agent.poll_once().record
    assert record is not None and record.step == "lost"
    assert Path(record.workdir).is_dir()
    assert (Path(record.workdir) / "result.txt").exists()
    accept_id = register(workflow, tmp_path)
    make_agent().poll_once()
    assert workflow.calc_status(accept_id) == "completed"


class SilentCalcEnd:
    """Quirk 4 seen from the client: the first calc-end answers 200 but changes nothing."""

    def __init__(self, api: DistcompApi) -> None:
        self._api = api
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def calc_end(self, accept_id: str, site_id: str, result: str) -> Reply:
        self.calls += 1
        if self.calls == 1:
            return Reply("calc-end", 200, 200, "ok", {"code": 200}, {})
        return self._api.calc_end(accept_id, site_id, result)


def test_calc_end_that_changed_nothing_is_repeated(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path)
    wrappers: list[SilentCalcEnd] = []
    agent = make_agent(wrap=lambda api: wrappers.append(SilentCalcEnd(api)) or wrappers[-1])
    record = agent.poll_once().record
    assert record is not None and record.step == "done"
    assert wrappers[0].calls == 2
    assert workflow.calc_status(accept_id) == "completed"


class DieAt:
    """The agent "dies" (an exception nobody handles) when it reaches `endpoint`."""

    def __init__(self, api: DistcompApi, endpoint: str) -> None:
        self._api = api
        self._endpoint = endpoint

    def __getattr__(self, name: str) -> Any:
        if name == self._endpoint:
            raise SystemExit(137)
        return getattr(self._api, name)


@pytest.mark.parametrize(
    "endpoint",
    ["calc_end", "send_results", "end_send"],
    ids=["before-calc-end", "before-send", "before-end-send"],
)
def test_resume_after_a_crash_does_not_rerun_and_delivers_once(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path, endpoint: str
) -> None:
    accept_id = register(workflow, tmp_path, command="count.sh")
    with pytest.raises(SystemExit):
        make_agent(wrap=lambda api: DieAt(api, endpoint)).poll_once()
    restarted = make_agent()
    resumed = restarted.resume_unfinished()
    assert [r.step for r in resumed] == ["done"]
    runs = (tmp_path / "runs.log").read_text().splitlines()
    assert len(runs) == 1
    assert fetch(workflow, accept_id, tmp_path)["result.txt"] == b"done\n"
    assert restarted.poll_once().record is None


@pytest.mark.parametrize(
    ("progress", "step"),
    [("status:flying", "failed"), ("status:got return", "done")],
    ids=["unknown", "known"],
)
def test_resume_fails_a_calculation_whose_server_progress_is_unknown(
    make_agent: AgentFactory,
    workflow: DistcompApi,
    server: DistcompServer,
    tmp_path: Path,
    progress: str,
    step: str,
) -> None:
    register(workflow, tmp_path, command="count.sh")
    with pytest.raises(SystemExit):
        make_agent(wrap=lambda api: DieAt(api, "calc_start")).poll_once()
    answer = json.dumps({"errors": [{"code": 200, "message": progress}]}).encode()
    server.hostile("calc-progress", Hostile(lambda: [answer], process=False))
    (record,) = make_agent().resume_unfinished()
    assert record.step == step
    if step == "failed":
        assert record.message == "the server reports an unknown progress 'flying'"


def test_crash_while_the_command_runs_reports_abnormal_on_resume(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="count.sh")
    agent = make_agent()
    store = agent.store
    record = CalcRecord(accept_id, SITE, str(tmp_path / "calc" / accept_id), "", step="receiving")
    store.save(record)
    (tmp_path / "calc" / accept_id).mkdir(mode=0o700)
    info = workflow.calc_params(accept_id, SITE, tmp_path / "calc" / accept_id)
    workflow.calc_params_complete(accept_id, SITE)
    workflow.calc_start(accept_id, SITE)
    record.step, record.command, record.result_names = (
        "started",
        "count.sh",
        list(info.result_names),
    )
    store.save(record)
    (resumed,) = make_agent().resume_unfinished()
    assert resumed.step == "done" and resumed.outcome == "abnormal"
    assert "stopped while the command was running" in (resumed.reason or "")
    assert not (tmp_path / "runs.log").exists()
    assert workflow.calc_status(accept_id) == "abnormal"
    received = fetch(workflow, accept_id, tmp_path)
    assert b"stopped while the command was running" in received[STDERR_NAME]


def test_stop_during_a_run_kills_after_the_grace_and_reports_abnormal(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, command="sleep.sh")
    agent = make_agent(stop_grace=0.2)
    agent.store.ensure()
    timer = threading.Timer(0.5, agent.stop.set)
    timer.start()
    record = agent.poll_once().record
    timer.join()
    assert record is not None and record.step == "done" and record.outcome == "abnormal"
    received = fetch(workflow, accept_id, tmp_path)
    assert received[STDOUT_NAME] == b"sleeping\n"
    assert "asked to stop" in received[STDERR_NAME].decode()


def test_two_agents_on_one_site_run_each_calculation_exactly_once(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_ids = [register(workflow, tmp_path, command="count.sh") for _ in range(6)]
    counter = tmp_path / "runs.log"
    agents = [
        make_agent(
            directory=tmp_path / name,
            commands={
                "count.sh": ["/bin/sh", "-c", f'echo "$CALC_DIR" >> {counter}; echo x > result.txt']
            },
        )
        for name in ("a", "b")
    ]
    errors: list[BaseException] = []

    def drain(agent: Agent) -> None:
        try:
            for _ in range(30):
                if all(workflow.calc_progress(a) == "got return" for a in accept_ids):
                    return
                agent.poll_once()
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    runs = [Path(line).name for line in counter.read_text().splitlines()]
    assert sorted(runs) == sorted(accept_ids)
    assert all(workflow.calc_status(a) == "completed" for a in accept_ids)


def test_state_is_saved_at_each_step_without_secrets(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path)
    agent = make_agent()
    seen: list[str] = []
    real_save = agent.store.save

    def spy(record: CalcRecord) -> None:
        real_save(record)
        seen.append(record.step)

    agent.store.save = spy  # type: ignore[method-assign]
    agent.poll_once()
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == [
        "receiving",
        "params",
        "complete",
        "started",
        "ran",
        "ended",
        "sent",
        "done",
    ]
    text = (tmp_path / "state" / "calcs" / f"{accept_id}.json").read_text()
    assert "0123456789abcdef" not in text
    assert (tmp_path / "state" / "calcs" / f"{accept_id}.json").stat().st_mode & 0o077 == 0


def test_https_end_to_end_with_the_site_ca(tmp_path: Path, broker: Broker) -> None:
    from tests.poll.certs import make_tls_files
    from tests.poll.conftest import TOKEN, load

    tls = make_tls_files(tmp_path)
    server = DistcompServer(broker, TOKEN, tls_cert=tls.cert, tls_key=tls.key)
    with server, DistcompApi(server.url, TOKEN, verify=tls.ca) as wf:
        accept_id = register(wf, tmp_path)
        config = load(tmp_path, server.url, ca_bundle=str(tls.ca))
        store = CalcStore(config.state_dir)
        store.ensure()
        record = Agent(config, build_api(config), store).poll_once().record
        assert record is not None and record.outcome == "completed"
        assert fetch(wf, accept_id, tmp_path)["result.txt"] == b"hello\n"


def test_run_forever_with_max_parallel_runs_calculations_side_by_side(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    log = tmp_path / "overlap.log"
    script = (
        f'echo "start $CALC_DIR" >> {log}; sleep 1; echo "end $CALC_DIR" >> {log}; : > result.txt'
    )
    accept_ids = [register(workflow, tmp_path, command="count.sh") for _ in range(2)]
    agent = make_agent(max_parallel=2, commands={"count.sh": ["/bin/sh", "-c", script]})
    loop = threading.Thread(target=agent.run_forever)
    loop.start()
    try:
        for _ in range(400):
            if all(workflow.calc_progress(a) == "got return" for a in accept_ids):
                break
            threading.Event().wait(0.05)
    finally:
        agent.stop.set()
        loop.join(timeout=30)
    events = [line.split()[0] for line in log.read_text().splitlines()]
    assert events[:2] == ["start", "start"], events
    assert all(workflow.calc_status(a) == "completed" for a in accept_ids)
    assert agent.store.heartbeat()["state"] == "stopped"  # type: ignore[index]


def test_command_environment_has_calc_vars_and_none_of_the_agents_settings(
    make_agent: AgentFactory,
    workflow: DistcompApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MINT_POLL_STOP_GRACE", "2")
    accept_id = register(workflow, tmp_path, parameters="a b  'c'")
    agent = make_agent(
        commands={"run.sh": {"run": ["/bin/sh", "-c", "env > result.txt"], "env": {"X": "1"}}}
    )
    agent.poll_once()
    lines = fetch(workflow, accept_id, tmp_path)["result.txt"].decode().splitlines()
    assert f"CALC_DIR={tmp_path / 'calc' / accept_id}" in lines
    assert "CALC_PARAMETERS=a b  'c'" in lines
    assert "X=1" in lines
    assert not [line for line in lines if line.startswith("MINT_POLL_")]


def test_a_corrupt_record_is_skipped_by_status_and_left_untouched(tmp_path: Path) -> None:
    store = CalcStore(tmp_path / "state")
    store.ensure()
    store.save(CalcRecord("good", SITE, str(tmp_path), ""))
    broken = store.calcs / "broken.json"
    broken.write_text("{not json")
    assert [r.accept_id for r in store.all()] == ["good"]
    assert broken.read_text() == "{not json"


def test_parameters_never_fetched_are_released_and_picked_up_again(
    make_agent: AgentFactory, workflow: DistcompApi, server: DistcompServer, tmp_path: Path
) -> None:
    from mint_common.errors import UnavailableError

    accept_id = register(workflow, tmp_path)
    agent = make_agent()
    server.fail_next("calc-params", count=3, status=503)
    with pytest.raises(
        UnavailableError,
        match=r"GET calc-params: the server answered HTTP 503 \(after 3 attempts\)",
    ):
        agent.poll_once()
    assert agent.store.load(accept_id).step == "receiving"  # type: ignore[union-attr]
    (released,) = agent.resume_unfinished()
    assert released.step == "released" and released.outcome is None
    assert [p.name for p in (tmp_path / "calc").iterdir()] == []
    record = agent.poll_once().record
    assert record is not None and record.step == "done" and record.outcome == "completed"
    assert record.workdir == str(tmp_path / "calc" / accept_id)
    assert fetch(workflow, accept_id, tmp_path)["result.txt"] == b"hello\n"


@pytest.mark.parametrize(
    ("script", "return_code", "ok"),
    [("exit 0", 0, True), ("exit 3", 3, False), ("kill -9 $$", -9, False)],
    ids=["success", "non-zero", "signal"],
)
def test_a_run_result_has_the_command_result_field_names(
    tmp_path: Path, script: str, return_code: int, ok: bool
) -> None:
    result = run_command_in(
        ["/bin/sh", "-c", script],
        tmp_path,
        stdout_path=tmp_path / "out",
        stderr_path=tmp_path / "err",
        env={},
        timeout=30,
        stop=threading.Event(),
        grace=1,
    )
    assert (result.return_code, result.ok, result.failed) == (return_code, ok, not ok)


def test_mime_words_come_from_file_and_fall_back_to_binary(tmp_path: Path) -> None:
    text = tmp_path / "note.txt"
    text.write_text("plain words\n")
    assert mime_words(text) == ("text/plain;", "charset=us-ascii")
    # `file` exits 0 for a missing path but prints no mime pair: described as binary
    assert mime_words(tmp_path / "absent") == BINARY_WORDS


def test_a_retry_pause_beats_through_its_length_and_ends_on_stop() -> None:
    stop = threading.Event()
    pause = RetryPause(stop, every=0.01)
    beats: list[None] = []
    pause.on_wait = lambda: beats.append(None)
    pause(0.05)
    assert len(beats) >= 2, "a pause longer than `every` beats more than once"
    stop.set()
    beats.clear()
    with pytest.raises(StoppedWhileWaiting):
        pause(60)
    assert len(beats) == 1


def test_the_agent_beats_while_it_waits_to_retry(tmp_path: Path) -> None:
    config = load(tmp_path, f"http://127.0.0.1:{free_port()}")
    agent = build_agent(config, threading.Event(), daemon=False)
    with pytest.raises(UnavailableError):
        agent.poll_once()
    assert agent.store.heartbeat()["state"] == "retrying"  # type: ignore[index]
