"""The click layer: help, exit codes for bad input, run records, the missing-extra message."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from mint_ssh.cli import main

COMMANDS = ["run", "resume", "runs", "check", "gate"]


@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output) > 200


def test_cli_module_does_not_import_paramiko() -> None:
    code = "import sys, mint_ssh.cli; print('paramiko' in sys.modules)"
    out = subprocess.run(
        [Path(__import__("sys").executable), "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def _state_config(tmp_path: Path) -> Path:
    config = tmp_path / "mint-ssh.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    return config


def test_runs_lists_nothing_then_a_record(tmp_path: Path) -> None:
    config = _state_config(tmp_path)
    empty = CliRunner().invoke(main, ["--config", str(config), "runs", "--json"])
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []
    runs = tmp_path / "state" / "runs"
    runs.mkdir(parents=True)
    run_id = "ab" * 16
    (runs / f"{run_id}.json").write_text(
        json.dumps(
            {"run_id": run_id, "host": "n", "command": ["true"], "dest": "/r", "state": "done"}
        )
    )
    listed = CliRunner().invoke(main, ["--config", str(config), "runs"])
    assert listed.exit_code == 0 and run_id in listed.stdout and "done" in listed.stdout


def test_malformed_run_record_exits_65_and_is_kept(tmp_path: Path) -> None:
    config = _state_config(tmp_path)
    runs = tmp_path / "state" / "runs"
    runs.mkdir(parents=True)
    broken = runs / ("cd" * 16 + ".json")
    broken.write_text("{not json")
    result = CliRunner().invoke(main, ["--config", str(config), "resume", "cd" * 16])
    assert result.exit_code == 65
    assert broken.read_text() == "{not json"


@pytest.mark.parametrize(
    ("run_id", "status"),
    [("not-a-run", 65), ("ef" * 16, 66)],
    ids=["malformed-id", "unknown-id"],
)
def test_resume_refuses_bad_ids(tmp_path: Path, run_id: str, status: int) -> None:
    config = _state_config(tmp_path)
    result = CliRunner().invoke(main, ["--config", str(config), "resume", run_id])
    assert result.exit_code == status


def test_bad_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "mint-ssh.yaml"
    config.write_text("workdir_base: relative\n")
    result = CliRunner().invoke(main, ["--config", str(config), "run", "node", "--", "true"])
    assert result.exit_code == 78
    assert "workdir_base" in result.output


def test_local_commands_work_without_paramiko_and_run_names_the_extra(
    base_only_venv: Path, tmp_path: Path
) -> None:
    """`runs` and `gate` need no SSH library (the gate runs on the external computer);
    only the commands that connect ask for the `ssh` extra."""
    script = base_only_venv.parent / "mint-ssh"
    config = _state_config(tmp_path)

    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = tool("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    gate_help = tool("gate", "--help")
    assert gate_help.returncode == 0 and "--allow" in gate_help.stdout
    for command in (["run", "node", "--", "true"], ["check", "node"], ["resume", "--last"]):
        refused = tool(*command)
        assert refused.returncode == 69, command
        assert "mint-tools[ssh]" in refused.stderr
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
