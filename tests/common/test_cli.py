from __future__ import annotations

import logging
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mint_common.cli import MintGroup, common_options, current_options, exit_with
from mint_common.errors import ConfigError, JobFailed
from mint_common.logging import register_secret


@click.group(cls=MintGroup, tool="mint-demo")
@common_options
def demo() -> None:
    """A tool for testing the shared CLI glue."""


@demo.command()
@common_options
def show() -> None:
    opts = current_options()
    click.echo(f"{opts.tool} v={opts.verbosity} fmt={opts.log_format} cfg={opts.config_file}")


@demo.command()
@common_options
@click.argument("kind")
def fail(kind: str) -> None:
    register_secret("cli-secret-987654")
    logging.getLogger("mint-demo").info("about to fail with cli-secret-987654")
    if kind == "config":
        raise ConfigError("key 'token': cli-secret-987654 is not accepted")
    if kind == "job":
        raise JobFailed("remote command exited 3", job_exit_status=3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "bug":
        raise RuntimeError("unexpected")
    exit_with(1)


def test_options_before_and_after_subcommand_add_up(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        demo,
        ["-v", "--log-format", "json", "show", "-v", "--config", str(tmp_path / "c.yaml")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert result.output.strip() == f"mint-demo v=2 fmt=json cfg={tmp_path / 'c.yaml'}"
    result = runner.invoke(demo, ["show", "-q"], catch_exceptions=False)
    assert result.output.strip() == "mint-demo v=-1 fmt=auto cfg=None"


@pytest.mark.parametrize(
    ("kind", "status", "line"),
    [
        ("config", 78, "mint-demo: error: key 'token': ******** is not accepted"),
        ("job", 1, "mint-demo: error: remote command exited 3"),
        ("interrupt", 130, "mint-demo: error: interrupted"),
        ("bug", 1, "mint-demo: error: RuntimeError: unexpected"),
        ("check", 1, None),
    ],
    ids=["config", "job", "interrupt", "bug", "exit-with"],
)
def test_errors_map_to_exit_status_and_one_line(kind: str, status: int, line: str | None) -> None:
    result = CliRunner().invoke(demo, ["fail", kind], catch_exceptions=False)
    assert result.exit_code == status
    assert "cli-secret-987654" not in result.output
    if line is not None:
        assert result.output.strip().splitlines()[-1] == line
        assert "Traceback" not in result.output


def test_verbose_adds_traceback_without_secret() -> None:
    result = CliRunner().invoke(demo, ["fail", "config", "-v"], catch_exceptions=False)
    assert result.exit_code == 78
    assert "Traceback" in result.output
    assert "cli-secret-987654" not in result.output


def test_log_file_option_writes_lines(tmp_path: Path) -> None:
    log_file = tmp_path / "demo.log"
    CliRunner().invoke(demo, ["--log-file", str(log_file), "fail", "job"], catch_exceptions=False)
    text = log_file.read_text()
    assert "about to fail with ********" in text


def test_usage_errors_exit_2() -> None:
    result = CliRunner().invoke(demo, ["nope"])
    assert result.exit_code == 2
    result = CliRunner().invoke(demo, ["show", "--log-format", "xml"])
    assert result.exit_code == 2


def test_tool_name_defaults_to_group_name() -> None:
    @click.group(cls=MintGroup)
    def mint_other() -> None:
        pass

    @mint_other.command()
    def who() -> None:
        click.echo(current_options().tool)

    result = CliRunner().invoke(mint_other, ["who"], catch_exceptions=False)
    assert result.output.strip() == "mint-other"
