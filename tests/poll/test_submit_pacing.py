"""How often `Submission` reads the progress: quick after each change, backing off to
`--poll-interval` (mint_poll.pacing), on a simulated clock."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from mint_poll.api import GOT_RETURN, NOT_START, RUNNING, DistcompApi
from mint_poll.pacing import SimulatedClock
from mint_poll.submit import TIMEOUT, Submission
from mint_poll.submit_args import build_request
from tests.poll.conftest import SITE, AgentFactory
from tests.poll.test_pacing import RecordingPacer
from tests.poll.test_submit_flow import RecordedServer


class PausingStop:
    """A StopRequest that never fires; each pause is recorded and moves the clock on."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.stop_requested = threading.Event()
        self.signal_number: Optional[int] = None
        self.clock = clock
        self.pauses: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        self.clock.now += seconds
        return False


def submit(tmp_path: Path, progress: list[str], **request: Any) -> tuple[PausingStop, Any]:
    clock = SimulatedClock(500.0)
    stop = PausingStop(clock)
    settings: dict[str, Any] = {
        "site_id": "nims-dev",
        "command": "run.sh",
        "inputs": [],
        "results": [],
        "out_dir": tmp_path / "out",
        "poll_interval": 10.0,
        "cwd": tmp_path,
        **request,
    }
    server = RecordedServer(progress, {})
    outcome = Submission(server, build_request(**settings), stop=stop, clock=clock).run()
    return stop, outcome


def test_progress_is_read_quickly_after_each_change_and_backs_off_while_it_stays(
    tmp_path: Path,
) -> None:
    progress = [NOT_START] * 35 + [RUNNING] * 2 + [GOT_RETURN]
    stop, outcome = submit(tmp_path, progress)
    assert outcome.exit_status == 0
    # every 2 s (poll_min) for the minute after allowing, then 4, 8 and the 10 s interval;
    # the change to running makes it quick again
    assert stop.pauses == [2.0] * 30 + [4.0, 8.0, 10.0, 10.0, 10.0] + [2.0, 2.0]


def test_a_short_calculation_is_collected_at_the_first_quick_look(tmp_path: Path) -> None:
    stop, outcome = submit(tmp_path, [NOT_START, RUNNING, GOT_RETURN])
    assert outcome.exit_status == 0
    assert stop.pauses == [2.0, 2.0]


def test_a_poll_interval_below_poll_min_is_kept_as_a_fixed_pace(tmp_path: Path) -> None:
    stop, _outcome = submit(tmp_path, [NOT_START] * 5 + [GOT_RETURN], poll_interval=0.5)
    assert stop.pauses == [0.5] * 5


def test_the_last_pause_is_cut_to_the_timeout(tmp_path: Path) -> None:
    stop, outcome = submit(tmp_path, [NOT_START], timeout=7.0)
    assert outcome.status == TIMEOUT
    assert stop.pauses == [2.0, 2.0, 2.0, 1.0]


def test_a_chained_calculation_on_a_real_server_is_collected_at_the_quickest_pace(
    make_agent: AgentFactory, workflow: DistcompApi, tmp_path: Path
) -> None:
    """Against the rehearsal server and a polling agent: every pause of the submission is
    poll_min, where a fixed pace would wait its --poll-interval (30 s) between reads."""
    agent = make_agent(poll_min=0.05)
    loop = threading.Thread(target=agent.run_forever)
    loop.start()
    try:
        request = build_request(
            site_id=SITE,
            command="run.sh",
            inputs=[],
            results=["result.txt"],
            out_dir=tmp_path / "out",
            poll_interval=30.0,
            cwd=tmp_path,
        )
        submission = Submission(workflow, request, poll_min=0.05)
        pacer = RecordingPacer(0.05, 30.0)
        submission.pacer = pacer
        outcome = submission.run()
    finally:
        agent.stop.set()
        loop.join(timeout=30)
    assert outcome.exit_status == 0
    assert (tmp_path / "out" / "result.txt").read_text() == "made\n"
    assert pacer.delays and set(pacer.delays) == {0.05}
