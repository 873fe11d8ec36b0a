"""docs/cli-conventions.md, enforced: one name per idea across the four tools."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from mint_burst.cli import main as burst_main
from mint_common.cli import AliasedOption, DurationType
from mint_poll.cli import main as poll_main
from mint_s3job.cli import main as s3job_main
from mint_ssh.cli import main as ssh_main

ROOT = Path(__file__).resolve().parents[1]
TOOLS: dict[str, click.Group] = {
    "mint-ssh": ssh_main,
    "mint-poll": poll_main,
    "mint-burst": burst_main,
    "mint-s3job": s3job_main,
}
# Old spelling -> the one name, per command that had it (kept hidden for one release).
OLD_SPELLINGS = {
    ("mint-ssh", "run"): {"--put": "--input", "--get": "--include", "--dest": "--out-dir"},
    ("mint-s3job", "fetch"): {"--dest": "--out-dir"},
    ("mint-s3job", "wait"): {"--interval": "--poll-interval"},
    ("mint-s3job", "dispatch"): {"--interval": "--poll-interval"},
}
DURATION_OPTIONS = {"--timeout", "--poll-interval", "--idle-timeout", "--boot-time"}


def _commands() -> Iterator[tuple[str, str, click.Command]]:
    for tool, group in TOOLS.items():
        for name, command in group.commands.items():
            yield tool, name, command


def _visible_names(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            opts = param.current_opts if isinstance(param, AliasedOption) else param.opts
            names.update(opts)
            names.update(param.secondary_opts)
    return names


def _replaced_in_doc() -> set[str]:
    text = (ROOT / "docs" / "cli-conventions.md").read_text(encoding="utf-8")
    replaced: set[str] = set()
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and not set(cells[0]) <= {"-"}:
            replaced.update(re.findall(r"`(--[a-z-]+)`", cells[2]))
    return replaced


def test_the_document_and_this_test_list_the_same_old_spellings() -> None:
    listed = {old for spellings in OLD_SPELLINGS.values() for old in spellings}
    assert _replaced_in_doc() == listed


@pytest.mark.parametrize(("tool", "name", "command"), list(_commands()), ids=lambda v: str(v))
def test_no_command_offers_a_replaced_spelling(
    tool: str, name: str, command: click.Command
) -> None:
    offered = _visible_names(command) & _replaced_in_doc()
    assert not offered, f"{tool} {name} offers {sorted(offered)}; see docs/cli-conventions.md"


@pytest.mark.parametrize(("tool", "name", "command"), list(_commands()), ids=lambda v: str(v))
def test_durations_accept_every_form(tool: str, name: str, command: click.Command) -> None:
    for param in command.params:
        if isinstance(param, click.Option) and set(param.opts) & DURATION_OPTIONS:
            assert isinstance(param.type, DurationType), f"{tool} {name} {param.opts}"


@pytest.mark.parametrize(("key", "spellings"), list(OLD_SPELLINGS.items()), ids=str)
def test_old_spellings_still_work_hidden(key: tuple[str, str], spellings: dict[str, str]) -> None:
    tool, name = key
    command = TOOLS[tool].commands[name]
    ctx = click.Context(command, info_name=name)
    help_text = command.get_help(ctx)
    for old, new in spellings.items():
        owner = [p for p in command.params if isinstance(p, click.Option) and old in p.opts]
        assert owner, f"{tool} {name}: {old} no longer accepted"
        param = owner[0]
        assert isinstance(param, AliasedOption) and old in param.old_names
        assert new in param.current_opts
        assert not re.search(rf"{re.escape(old)}\b(?!-)", help_text), f"{old} shown in help"


def test_every_json_flag_is_spelled_the_same() -> None:
    for tool, name, command in _commands():
        for param in command.params:
            if isinstance(param, click.Option) and param.name == "as_json":
                assert "--json" in param.opts, f"{tool} {name}: {param.opts}"
