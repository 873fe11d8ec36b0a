"""The shared CLI conventions: old spellings, durations, signals, JSON errors, terminal, checks."""

from __future__ import annotations

import inspect
import io
import json
import logging
import re
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mint_common.checks import FAIL, PASS, SKIP, WARN, CheckResult, CheckRunner
from mint_common.cli import DURATION, AliasedOption, MintGroup, common_options
from mint_common.errors import ConfigError, UsageError
from mint_common.exitcodes import exit_status_for, report_error
from mint_common.logging import setup_logging
from mint_common.signals import Interrupted
from mint_common.terminal import Terminal, confirm, terminal, terminal_override


def _runner() -> CliRunner:
    """A runner that keeps stderr apart: click 8.2 always does, 8.1 (Python 3.9) when asked."""
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg,unused-ignore]
    return CliRunner()


@click.group(cls=MintGroup, tool="mint-demo")
@common_options
def demo() -> None:
    """Shared CLI glue under test."""


@demo.command()
@common_options
@click.option("--out-dir", cls=AliasedOption, old_names=("--dest",), help="Where results go.")
@click.option("--timeout", type=DURATION, help="A time limit.")
def fetch(out_dir: str | None, timeout: float | None) -> None:
    click.echo(f"out_dir={out_dir} timeout={timeout}")


@demo.command()
@common_options
def broken() -> None:
    raise ConfigError("key 'queue': no such partition 'clod'", hint="did you mean 'cloud'?")


def test_old_spelling_works_is_hidden_and_warns() -> None:
    runner = _runner()
    result = runner.invoke(demo, ["fetch", "--dest", "d1", "--log-format", "plain"])
    assert result.exit_code == 0, result.output
    assert "out_dir=d1" in result.stdout
    assert "--dest is an old spelling of --out-dir" in result.stderr
    result = runner.invoke(demo, ["fetch", "--dest=d2"])
    assert "out_dir=d2" in result.stdout
    quiet = runner.invoke(demo, ["fetch", "--out-dir", "d3"])
    assert "old spelling" not in quiet.stderr
    help_text = runner.invoke(demo, ["fetch", "--help"]).stdout
    assert "--out-dir" in help_text and "--dest" not in help_text


def test_old_spelling_after_double_dash_is_an_argument_not_a_warning() -> None:
    @click.command(cls=demo.command_class)
    @click.option("--out-dir", cls=AliasedOption, old_names=("--dest",))
    @click.argument("rest", nargs=-1)
    def cmd(out_dir: str | None, rest: tuple[str, ...]) -> None:
        click.echo(f"{out_dir} {rest}")

    result = _runner().invoke(cmd, ["--", "--dest"])
    assert "('--dest',)" in result.stdout
    assert "old spelling" not in result.stderr


@pytest.mark.parametrize(("given", "seconds"), [("90", 90.0), ("2h", 7200.0), ("1h30m", 5400.0)])
def test_duration_flags(given: str, seconds: float) -> None:
    result = _runner().invoke(demo, ["fetch", "--timeout", given])
    assert result.exit_code == 0
    assert f"timeout={seconds}" in result.stdout


def test_a_bad_duration_flag_is_a_usage_error_naming_the_flag() -> None:
    result = _runner().invoke(demo, ["fetch", "--timeout", "soon"])
    assert result.exit_code == 2
    assert "--timeout" in result.stderr and "30m" in result.stderr


def test_json_log_format_makes_the_final_error_line_json() -> None:
    result = _runner().invoke(demo, ["broken", "--log-format", "json"])
    assert result.exit_code == 78
    last = json.loads(result.stderr.strip().splitlines()[-1])
    assert last["level"] == "ERROR" and last["exit_status"] == 78
    assert last["message"] == "key 'queue': no such partition 'clod'"
    assert last["hint"] == "did you mean 'cloud'?"
    plain = _runner().invoke(demo, ["broken", "--log-format", "plain"])
    assert plain.stderr.splitlines()[-2:] == [
        "mint-demo: error: key 'queue': no such partition 'clod'",
        "mint-demo: hint: did you mean 'cloud'?",
    ]


def test_signal_exit_statuses() -> None:
    assert exit_status_for(Interrupted(signal.SIGTERM)) == 143
    assert exit_status_for(Interrupted(signal.SIGHUP)) == 129
    assert exit_status_for(KeyboardInterrupt()) == 130
    out = io.StringIO()
    assert report_error(Interrupted(signal.SIGTERM), "mint-demo", stream=out) == 143
    assert out.getvalue() == "mint-demo: error: interrupted by SIGTERM\n"


_PROGRAM = textwrap.dedent(
    """
    import sys, time, click
    from mint_common.cli import MintGroup, common_options
    from mint_common.signals import GracefulStop

    @click.group(cls=MintGroup, tool="mint-demo")
    @common_options
    def main():
        pass

    @main.command()
    @common_options
    def oneshot():
        try:
            print("ready", flush=True)
            time.sleep(60)
        finally:
            print("cleanup ran", file=sys.stderr, flush=True)

    @main.command()
    @common_options
    def daemon():
        with GracefulStop() as stop:
            print("ready", flush=True)
            while not stop.wait(60):
                pass

    main()
    """
)


def _run_and_signal(tmp_path: Path, command: str, signum: int) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(_PROGRAM)
    process = subprocess.Popen(
        [sys.executable, str(script), command, "--log-format", "plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_one_shot_command_stopped_by_signal_n_exits_128_plus_n(
    tmp_path: Path, signum: int, status: int
) -> None:
    done = _run_and_signal(tmp_path, "oneshot", signum)
    assert done.returncode == status
    assert "cleanup ran" in done.stderr
    assert f"interrupted by {signal.Signals(signum).name}" in done.stderr
    assert "()" not in done.stderr


def test_a_daemon_asked_to_stop_exits_zero(tmp_path: Path) -> None:
    started = time.monotonic()
    done = _run_and_signal(tmp_path, "daemon", signal.SIGTERM)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30


def test_rich_log_lines_carry_iso_timestamps() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    logger = setup_logging("mint-demo", log_format="rich", stream=stream)
    logger.info("hello")
    line = re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue().splitlines()[0])
    stamp = line.split()[0]
    assert datetime.fromisoformat(stamp).utcoffset() is not None, line
    setup_logging("mint-demo", log_format="plain", stream=io.StringIO())
    logging.getLogger().handlers.clear()


def test_confirm_asks_on_a_terminal_and_refuses_without_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with terminal_override(Terminal(True, True, True)):
        monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
        assert confirm("Drain 2 nodes?") is True
        monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
        assert confirm("Drain 2 nodes?") is False
    assert "Drain 2 nodes? [y/N]" in capsys.readouterr().err
    with terminal_override(Terminal(False, False, False)), pytest.raises(UsageError) as caught:
        confirm("Drain 2 nodes?")
    assert caught.value.hint == "add --yes to go ahead without the question"


def test_terminal_override_is_what_everyone_sees() -> None:
    with terminal_override(Terminal(False, True, False)) as term:
        assert terminal() is term
        assert terminal().is_tty(sys.stdout) and not terminal().is_tty(sys.stderr)
    assert terminal() is not term


def test_a_skip_is_not_a_failure_but_does_not_satisfy_a_prerequisite() -> None:
    runner = CheckRunner()
    runner.run("head node", lambda: CheckResult("head node", SKIP, "not a head node"))
    runner.run("sbatch", lambda: "ok", requires="head node")
    runner.run("bucket", lambda: (WARN, "will be created"))
    assert [r.status for r in runner.results] == [SKIP, SKIP, WARN]
    out = io.StringIO()
    assert runner.render(as_json=True, title="t", stream=out) == 0
    assert json.loads(out.getvalue())["ok"] is True

    def fails() -> str:
        raise ConfigError("no bucket")

    runner.run("bucket access", fails)
    assert runner.results[-1].status == FAIL
    assert runner.render(as_json=False, title="t", stream=io.StringIO()) == 1
    assert PASS not in [r.status for r in runner.results]


def test_tables_and_progress_follow_the_terminal_override(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mint_common.output import emit_table
    from mint_common.progress import transfer_progress

    with terminal_override(Terminal(False, True, True)):
        emit_table(("id", "state"), [("3f2a" * 8, "done")], title="runs")
        with transfer_progress("upload", 10) as advance:
            advance(10)
    shown = capsys.readouterr()
    assert "┃" in shown.out or "│" in shown.out
    assert "3f2a" * 8 in shown.out
    with terminal_override(Terminal(False, False, False)):
        emit_table(("id", "state"), [("3f2a" * 8, "done")])
        with transfer_progress("upload", 10) as advance:
            advance(10)
    plain = capsys.readouterr()
    assert plain.out == f"id\tstate\n{'3f2a' * 8}\tdone\n"
    assert plain.err == ""
