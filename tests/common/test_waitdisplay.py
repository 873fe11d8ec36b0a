"""The one wait display: a live line on a terminal, one log line per state change elsewhere."""

from __future__ import annotations

import logging

import pytest

from mint_common.terminal import Terminal, terminal_override
from mint_common.waitdisplay import WaitStatus, format_elapsed, wait_display

log = logging.getLogger("tests.waitdisplay")
AT_A_TERMINAL = Terminal(stdin_isatty=False, stdout_isatty=False, stderr_isatty=True)
NO_TERMINAL = Terminal(stdin_isatty=False, stdout_isatty=False, stderr_isatty=False)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0:00"), (59.9, "0:59"), (75.4, "1:15"), (3723, "1:02:03"), (-1, "0:00")],
    ids=["zero", "under-a-minute", "minutes", "hours", "negative"],
)
def test_elapsed_time_format(seconds: float, shown: str) -> None:
    assert format_elapsed(seconds) == shown


def test_the_line_shows_state_elapsed_time_and_the_next_check() -> None:
    clock = FakeClock()
    status = WaitStatus("job job-x", state="FILE_UPLOAD", interval=10, clock=clock)
    clock.now += 83
    status.checked = clock.now - 3
    assert status.line() == "job job-x  FILE_UPLOAD  1:23 elapsed  next check in 0:07"
    clock.now += 30  # a late check never shows a negative pause
    assert status.line().endswith("next check in 0:00")


def test_the_line_without_an_interval_has_no_next_check() -> None:
    clock = FakeClock()
    status = WaitStatus("calculation 42", state="running", interval=None, clock=clock)
    clock.now += 5
    assert status.line() == "calculation 42  running  0:05 elapsed"


def test_plain_output_is_one_log_line_per_state_change(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    with (
        terminal_override(NO_TERMINAL),
        caplog.at_level(logging.DEBUG, logger=log.name),
        wait_display("job job-x", logger=log, interval=10, clock=clock) as display,
    ):
        for state, at in [("FILE_UPLOAD", 1), ("FILE_UPLOAD", 11), ("JOB_SUBMIT", 65)]:
            clock.now = 1000.0 + at
            display.state(state)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "job job-x: FILE_UPLOAD (after 0:01)"),
        (logging.INFO, "job job-x: JOB_SUBMIT (after 1:05)"),
    ]
    assert capsys.readouterr().err == ""


def test_on_a_terminal_the_live_line_is_drawn_and_nothing_is_logged_at_info(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    with (
        terminal_override(AT_A_TERMINAL),
        caplog.at_level(logging.INFO, logger=log.name),
        wait_display("job job-x", logger=log, interval=10, clock=clock) as display,
    ):
        clock.now += 83
        display.state("JOB_SUBMIT")
        clock.now += 4
        display.state("JOB_SUBMIT")
    err = capsys.readouterr().err
    assert "job job-x  JOB_SUBMIT  1:27 elapsed  next check in 0:10" in err
    assert "\x1b[" in err  # drawn as on a terminal (cursor control), not a plain line
    assert caplog.records == []


def test_live_can_be_forced_either_way(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    with (
        terminal_override(NO_TERMINAL),
        wait_display("x", logger=log, live=True, clock=clock) as display,
    ):
        display.state("running")
    assert "x  running  0:00 elapsed" in capsys.readouterr().err
    with (
        terminal_override(AT_A_TERMINAL),
        wait_display("x", logger=log, live=False, clock=clock) as display,
    ):
        display.state("running")
    assert capsys.readouterr().err == ""
