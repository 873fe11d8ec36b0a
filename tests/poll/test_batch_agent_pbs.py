"""The agent with `runner: pbs`, through the fakes of tests/poll/fakes/pbs.

No PBS server can run here: the fakes' qsub, qstat -f, qselect and qdel outputs are
written from the Torque 6.1 documentation, not captured. The job script itself is real
(the fake runs it with /bin/sh, as a MOM would), and the server is the loopback one.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mint_poll.agent import PollOutcome
from mint_poll.api import STDERR_NAME, STDOUT_NAME, DistcompApi
from mint_poll.state import CalcStore
from tests.poll.conftest import AgentFactory, fetch, register
from tests.poll.test_batch_pbs import FAKES, FakePbs
from tests.poll.test_cli import wait_for

SCRIPT = 'echo "on $PBS_JOBID"; printf %s "$CALC_PARAMETERS" > params.txt; cp input.txt result.txt'
HOSTILE = 'p=$(touch pwned)\'\n`touch pwned`; "$HOME"'


@pytest.fixture
def pbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePbs:
    monkeypatch.setenv("PATH", f"{FAKES}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_PBS_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_PBS_STATE", str(tmp_path / "pbs.json"))
    return FakePbs(tmp_path / "pbs.json")


def test_a_calculation_becomes_one_pbs_job_and_calc_start_waits_for_it(
    pbs: FakePbs, make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    agent = make_agent(
        runner="pbs",
        batch={"partition": "batch", "qsub_args": ["-A", "proj"], "watch_interval": 0.1},
        commands={
            "run.sh": {
                "run": ["/bin/sh", "-c", SCRIPT],
                "timeout": "90s",
                "qsub_args": ["-l", "nodes=1:ppn=4"],
            }
        },
    )
    assert agent.config.max_parallel == 16  # DEFAULT_MAX_IN_FLIGHT for a scheduler
    accept_id = register(
        workflow, tmp_path, files={"input.txt": b"pbs input\n"}, parameters=HOSTILE
    )
    outcome: list[PollOutcome] = []
    worker = threading.Thread(target=lambda: outcome.append(agent.poll_once()))
    worker.start()
    try:
        wait_for(lambda: pbs.state.exists() and pbs.read()["submitted"])
        (argv,) = pbs.read()["submitted"]
        for option in (["-q", "batch"], ["-l", "walltime=00:01:30"], ["-A", "proj"]):
            assert any(argv[i : i + 2] == option for i in range(len(argv)))
        assert argv[argv.index("-A") :][:4] == ["-A", "proj", "-l", "nodes=1:ppn=4"]
        store = CalcStore(agent.config.state_dir)

        def job_id() -> object:
            record = store.load(accept_id)
            return record and record.batch_job and record.batch_job.job_id

        wait_for(lambda: job_id() == "1.fakeserver")  # saved the moment qsub printed it
        # Queued, not running: calc-start has not been sent.
        assert workflow.calc_progress(accept_id) == "complete send"
        pbs.control("run", "1.fakeserver")
    finally:
        worker.join(timeout=30)
    assert outcome and outcome[0].delivered
    assert outcome[0].record is not None and outcome[0].record.outcome == "completed"
    files = fetch(workflow, accept_id, tmp_path)
    assert files["result.txt"] == b"pbs input\n"
    assert files[STDOUT_NAME] == b"on 1.fakeserver\n"  # written by the job itself
    saved: dict[str, Any] = json.loads(
        (agent.config.state_dir / "calcs" / f"{accept_id}.json").read_text()
    )
    assert saved["batch_job"]["job_id"] == "1.fakeserver"
    assert saved["batch_job"]["last_state"] == "C"
    assert len(pbs.read()["submitted"]) == 1
    # The server's parameters reach the command as one value, never as shell text.
    workdir = Path(saved["workdir"])
    assert (workdir / "params.txt").read_text() == HOSTILE
    assert not (workdir / "pwned").exists()


def test_a_job_the_scheduler_refuses_is_reported_abnormal_with_its_word(
    pbs: FakePbs, make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    agent = make_agent(runner="pbs", batch={"partition": "nosuch"})
    accept_id = register(workflow, tmp_path)
    outcome = agent.poll_once()
    assert outcome.delivered and outcome.record is not None
    assert outcome.record.outcome == "abnormal"
    assert outcome.record.reason == (
        "the scheduler refused the job: qsub: submit error (Unknown queue MSG=cannot locate queue)"
    )
    assert workflow.calc_progress(accept_id) == "got return"
    assert (
        fetch(workflow, accept_id, tmp_path)[STDERR_NAME]
        .decode()
        .startswith("mint-poll: the scheduler refused the job")
    )
