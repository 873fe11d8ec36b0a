"""`mint-poll submit`'s status display: the shared wait display with the accept id."""

from __future__ import annotations

import logging

import pytest

from mint_common.terminal import Terminal, terminal_override
from mint_poll.submit_display import LogLineDisplay, make_display

ACCEPT_ID = "6f1c1f0e-0000-4000-8000-000000000001"
AT_A_TERMINAL = Terminal(stdin_isatty=False, stdout_isatty=False, stderr_isatty=True)
NO_TERMINAL = Terminal(stdin_isatty=False, stdout_isatty=False, stderr_isatty=False)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_come_once_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    display = LogLineDisplay(ACCEPT_ID, clock=clock)
    with caplog.at_level(logging.INFO, logger="mint_poll.submit_display"):
        for progress, at in [("not start", 1), ("not start", 2), ("running", 65), ("running", 70)]:
            clock.now = 1000.0 + at
            display.state(progress)
    assert [r.getMessage() for r in caplog.records] == [
        f"calculation {ACCEPT_ID}: not start (after 0:01)",
        f"calculation {ACCEPT_ID}: running (after 1:05)",
    ]


def test_without_a_terminal_make_display_logs_plain_lines(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    with (
        terminal_override(NO_TERMINAL),
        caplog.at_level(logging.INFO),
        make_display(ACCEPT_ID, clock=clock) as display,
    ):
        clock.now += 3
        display.state("running")
    assert [r.getMessage() for r in caplog.records] == [
        f"calculation {ACCEPT_ID}: running (after 0:03)"
    ]
    assert capsys.readouterr().err == ""


def test_on_a_terminal_make_display_draws_the_live_line(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    with (
        terminal_override(AT_A_TERMINAL),
        caplog.at_level(logging.INFO),
        make_display(ACCEPT_ID, clock=clock) as display,
    ):
        clock.now += 83
        display.state("running")
    assert f"calculation {ACCEPT_ID}  running  1:23 elapsed" in capsys.readouterr().err
    assert caplog.records == []


def test_live_false_keeps_log_lines_on_a_terminal(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        terminal_override(AT_A_TERMINAL),
        caplog.at_level(logging.INFO),
        make_display(ACCEPT_ID, live=False) as display,
    ):
        display.state("running")
    assert [r.getMessage().split(" (after")[0] for r in caplog.records] == [
        f"calculation {ACCEPT_ID}: running"
    ]
    assert capsys.readouterr().err == ""
