"""keep_days pruning deletes only what this agent made; an unfit accept_id touches no disk.

The server is the rehearsal broker on loopback; `RenamingBroker` makes it hostile by
offering a real calculation under a name the test chooses.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import pytest

from mint_common.errors import UnavailableError
from mint_poll.agent import Agent
from mint_poll.api import STD_NAMES, DistcompApi, PollAnswer
from mint_poll.server import Answer, Broker, DistcompServer
from mint_poll.state import CalcRecord, CalcStore
from mint_poll.workdirs import prune
from tests.poll.conftest import SERVER_COMMANDS, SITE, AgentFactory, fetch, register

KEEP_DAYS = 30
#: A moment when every record of a test is past keep_days.
LATER = (KEEP_DAYS + 1) * 86400.0


class RenamingBroker(Broker):
    """A hostile server: calc-request offers a calculation under the name the test put in
    `names[real accept_id]`, and every request naming it reaches the real record."""

    def __init__(self, sites: Mapping[str, list[str]]) -> None:
        super().__init__(sites)
        self.names: dict[str, str] = {}

    def handle(self, method: str, endpoint: str, query: Mapping[str, str], body: Any) -> Answer:
        real = {shown: accept_id for accept_id, shown in self.names.items()}
        query = {k: real.get(v, v) if k == "accept_id" else v for k, v in query.items()}
        if isinstance(body, dict) and body.get("accept_id") in real:
            body = {**body, "accept_id": real[body["accept_id"]]}
        status, document = super().handle(method, endpoint, query, body)
        entry = document["errors"][0] if endpoint == "calc-request" else {}
        if entry.get("accept_id") in self.names:
            entry["accept_id"] = self.names[entry["accept_id"]]
        return status, document


@pytest.fixture
def broker() -> RenamingBroker:
    return RenamingBroker({SITE: list(SERVER_COMMANDS)})


def prune_later(agent: Agent) -> list[str]:
    return prune(agent.store, KEEP_DAYS, agent.config.calc_base, now=time.time() + LATER)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.05)


class OfferedToBoth:
    """Both agents were offered the calculation; the other one fetched its parameters first
    (it is running the command when this agent asks for them)."""

    def __init__(self, api: DistcompApi, other_takes_it: Callable[[str], None]) -> None:
        self._api = api
        self._other_takes_it = other_takes_it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def calc_request(self, site_id: str) -> PollAnswer:
        answer = self._api.calc_request(site_id)
        if answer.accept_id is not None:
            self._other_takes_it(answer.accept_id)
        return answer


def test_a_calculation_another_agent_took_is_never_pruned_from_under_it(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    shared = tmp_path / "calc"
    go = tmp_path / "go"
    script = f"while [ ! -e {go} ]; do sleep 0.05; done; echo done > result.txt"
    runner = make_agent(
        directory=tmp_path / "b",
        calc_base=str(shared),
        commands={"run.sh": ["/bin/sh", "-c", script]},
    )
    accept_id = register(workflow, tmp_path)
    delivered: list[CalcRecord] = []
    thread = threading.Thread(target=lambda: delivered.append(runner.accept(accept_id)))

    def other_takes_it(offered: str) -> None:
        thread.start()
        wait_until(lambda: workflow.calc_progress(offered) == "running", "the other agent's run")

    late = make_agent(
        wrap=lambda api: OfferedToBoth(api, other_takes_it),
        directory=tmp_path / "a",
        calc_base=str(shared),
        keep_days=KEEP_DAYS,
    )
    try:
        taken = late.poll_once().record
        assert taken is not None and taken.step == "taken"
        assert prune_later(late) == []
        assert (shared / accept_id).is_dir()
        assert taken.workdir == "" and taken.created_dir is None
    finally:
        go.touch()
        if thread.ident is not None:
            thread.join(timeout=60)
    assert delivered[0].step == "done" and delivered[0].outcome == "completed"
    assert fetch(workflow, accept_id, tmp_path)["result.txt"] == b"done\n"


def test_a_server_naming_an_existing_directory_never_gets_it_deleted(
    make_agent: AgentFactory,
    workflow: DistcompApi,
    broker: RenamingBroker,
    server: DistcompServer,
    tmp_path: Path,
) -> None:
    victim = tmp_path / "calc" / "victim"
    victim.mkdir(parents=True)
    (victim / "data").write_text("precious")
    broker.names[register(workflow, tmp_path)] = "victim"
    server.fail_next("calc-params", status=400)
    agent = make_agent()
    record = agent.poll_once().record
    assert record is not None and record.accept_id == "victim" and record.step == "taken"
    assert prune_later(agent) == []
    assert (victim / "data").read_text() == "precious"


def test_a_directory_this_agent_made_is_pruned_when_due_without_following_links_inside(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    script = (
        f"mkdir -p deep/er; echo r > deep/er/f; ln -s {outside} deep/dirlink;"
        f" ln -s {outside}/keep filelink; mkfifo pipe; mkdir -p ro/sub; chmod 0555 ro/sub ro;"
        " echo done > result.txt"
    )
    register(workflow, tmp_path)
    agent = make_agent(commands={"run.sh": ["/bin/sh", "-c", script]})
    record = agent.poll_once().record
    assert record is not None and record.outcome == "completed"
    workdir = Path(record.workdir)
    assert prune(agent.store, KEEP_DAYS, agent.config.calc_base) == []
    assert workdir.is_dir()
    assert prune_later(agent) == [str(workdir)]
    assert not workdir.exists()
    assert [p.name for p in outside.iterdir()] == ["keep"]
    assert (outside / "keep").read_text() == "x"
    assert agent.store.load(record.accept_id).pruned  # type: ignore[union-attr]
    assert prune_later(agent) == []


def test_the_staging_dir_of_a_calculation_lost_mid_fetch_is_pruned(
    make_agent: AgentFactory,
    workflow: DistcompApi,
    broker: Broker,
    server: DistcompServer,
    tmp_path: Path,
) -> None:
    register(workflow, tmp_path)
    agent = make_agent()
    server.fail_next("calc-params", count=3, status=503)
    with pytest.raises(UnavailableError):
        agent.poll_once()
    broker.restart()
    (lost,) = agent.resume_unfinished()
    assert lost.step == "lost" and Path(lost.staging_dir).is_dir()
    assert not Path(lost.workdir).exists()
    assert prune_later(agent) == [lost.staging_dir]
    assert list((tmp_path / "calc").iterdir()) == []


@pytest.mark.parametrize(
    "how",
    ["another-directory", "symlink-to-the-moved-original", "calc-base-is-now-a-symlink"],
)
def test_a_working_dir_replaced_after_the_run_is_left_alone(
    make_agent: AgentFactory,
    workflow: DistcompApi,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    register(workflow, tmp_path)
    agent = make_agent()
    record = agent.poll_once().record
    assert record is not None and record.step == "done"
    workdir = Path(record.workdir)
    if how == "another-directory":
        # On ext4 the new directory gets the very inode number the deleted one had.
        shutil.rmtree(workdir)
        workdir.mkdir()
        keep = workdir / "theirs"
    elif how == "symlink-to-the-moved-original":
        workdir.rename(tmp_path / "moved")
        workdir.symlink_to(tmp_path / "moved")
        keep = tmp_path / "moved" / "theirs"
    else:
        calc_base = workdir.parent
        calc_base.rename(tmp_path / "old-calc")
        (tmp_path / "elsewhere" / workdir.name).mkdir(parents=True)
        calc_base.symlink_to(tmp_path / "elsewhere")
        keep = tmp_path / "elsewhere" / workdir.name / "theirs"
    keep.write_text("theirs")
    with caplog.at_level(logging.WARNING, logger="mint_poll"):
        assert prune_later(agent) == []
    assert keep.read_text() == "theirs"
    kept = agent.store.load(record.accept_id)
    assert kept is not None and not kept.pruned
    assert "no longer the directory this agent made" in (kept.prune_skipped or "")
    assert f"not pruning the working dir of calculation {record.accept_id}" in caplog.text


def test_a_record_written_before_the_proof_keeps_its_directory_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calc_base = tmp_path / "calc"
    workdir = calc_base / "0b1c9a6e-6f5e-4a43-9d9e-3b0d6f1e2a77"
    workdir.mkdir(parents=True)
    (workdir / "result.txt").write_text("old")
    store = CalcStore(tmp_path / "state")
    store.ensure()
    # What mint-poll wrote before it kept a proof of creation: no created_dir.
    old_record = {
        "accept_id": workdir.name,
        "site_id": SITE,
        "workdir": str(workdir),
        "staging_dir": str(calc_base / f".mint-poll-{workdir.name}.k2j4x9q1"),
        "step": "done",
        "command": "run.sh",
        "outcome": "completed",
        "accepted_at": "2026-01-01T00:00:00+00:00",
        "delivered_at": "2026-01-01T00:01:00+00:00",
        "updated_at": "2026-01-01T00:01:00+00:00",
        "pruned": False,
    }
    (store.calcs / f"{workdir.name}.json").write_text(json.dumps(old_record))
    with caplog.at_level(logging.WARNING, logger="mint_poll"):
        assert prune(store, KEEP_DAYS, calc_base) == []
        assert prune(store, KEEP_DAYS, calc_base) == []
    assert (workdir / "result.txt").read_text() == "old"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and workdir.name in lines[0] and "older mint-poll" in lines[0]
    assert "older mint-poll" in (store.load(workdir.name).prune_skipped or "")  # type: ignore[union-attr]


def test_a_calculation_still_in_progress_is_never_pruned(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    register(workflow, tmp_path)
    register(workflow, tmp_path)
    agent = make_agent()
    finished, unfinished = (agent.poll_once().record for _ in range(2))
    assert finished is not None and unfinished is not None
    unfinished.step = "started"
    agent.store.save(unfinished)
    assert prune_later(agent) == [finished.workdir]
    assert Path(unfinished.workdir).is_dir()


@pytest.mark.parametrize(
    "shown",
    ["a/../../x", ".", "..", "../x", ".mint-poll-a", "a\nb", "x" * 300],
    ids=["inner-dotdot", "dot", "dotdot", "parent", "staging-name", "newline", "too-long"],
)
def test_an_accept_id_unfit_for_a_directory_name_is_refused_before_any_mkdir(
    make_agent: AgentFactory,
    workflow: DistcompApi,
    broker: RenamingBroker,
    tmp_path: Path,
    shown: str,
) -> None:
    # A directory an earlier hostile offer could have left: `a/../../x` would climb from it.
    (tmp_path / "calc" / ".mint-poll-a").mkdir(parents=True)
    accept_id = register(workflow, tmp_path, results=("result.txt",))
    broker.names[accept_id] = shown
    agent = make_agent()
    agent.beat("idle")
    before = sorted(tmp_path.rglob("*"))
    record = agent.poll_once().record
    assert sorted(tmp_path.rglob("*")) == before
    assert record is not None and record.step == "done" and record.outcome == "abnormal"
    assert "refused accept_id" in (record.reason or "")
    assert workflow.calc_status(accept_id) == "abnormal"
    result = workflow.get_calc_result(accept_id, tmp_path / "received")
    assert {f.name for f in result.missing} == {"result.txt", *STD_NAMES}
    assert all("refused accept_id" in (f.error or "") for f in result.missing)
