"""The click layer: help, exit codes for bad input, run records, the missing-extra message."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import mint_ssh
from mint_ssh.cli import main
from mint_ssh.records import RunStore

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


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_ssh_adapter_imports_paramiko() -> None:
    package = Path(mint_ssh.__file__).parent
    importers = sorted(p.name for p in package.glob("*.py") if "paramiko" in _imported_modules(p))
    assert importers == ["connection.py"]


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


def _write_record(runs: Path, run_id: str, created_at: float) -> None:
    record = {"run_id": run_id, "host": "n", "command": ["true"], "dest": "/r", "state": "done"}
    (runs / f"{run_id}.json").write_text(json.dumps({**record, "created_at": created_at}))


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_runs_lists_the_readable_records_names_each_unreadable_one_and_exits_65(
    tmp_path: Path, as_json: bool
) -> None:
    config = _state_config(tmp_path)
    runs = tmp_path / "state" / "runs"
    runs.mkdir(parents=True)
    # Sorted by name the broken files come first: none of them may stop the listing.
    broken_json, wrong_state = "0a" * 16, "0b" * 16
    (runs / f"{broken_json}.json").write_text("{not json")
    (runs / f"{wrong_state}.json").write_text(
        json.dumps({"run_id": wrong_state, "host": "n", "command": [], "dest": "/r", "state": "x"})
    )
    older, newer = "1a" * 16, "2b" * 16
    _write_record(runs, older, 1_700_000_000.0)
    _write_record(runs, newer, 1_700_000_100.0)
    result = CliRunner().invoke(
        main, ["--config", str(config), "runs", *(["--json"] if as_json else [])]
    )
    assert result.exit_code == 65
    if as_json:
        assert [r["run_id"] for r in json.loads(result.stdout)] == [newer, older]
    else:
        assert result.stdout.index(newer) < result.stdout.index(older)
    warnings = [
        line for line in result.stderr.splitlines() if "WARNING" in line and "skipping" in line
    ]
    assert len(warnings) == 2
    assert str(runs / f"{broken_json}.json") in warnings[0]
    assert f"{runs / wrong_state}.json has an unknown state 'x'" in warnings[1]
    assert "2 run record(s) could not be read" in result.stderr
    assert (runs / f"{broken_json}.json").read_text() == "{not json"


def test_a_record_that_cannot_be_read_at_all_is_named_and_the_others_listed(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / ("0c" * 16 + ".json")).mkdir()
    _write_record(runs, "1a" * 16, 1_700_000_000.0)
    records, unreadable = RunStore(runs).scan()
    assert [r.run_id for r in records] == ["1a" * 16]
    assert [e.exit_status for e in unreadable] == [65]
    assert str(unreadable[0]).startswith(f"run record {runs / ('0c' * 16)}.json cannot be read")


def test_resume_last_refuses_while_a_record_cannot_be_read(tmp_path: Path) -> None:
    """The unreadable record may be the newest run: --last must not pick an older one."""
    config = _state_config(tmp_path)
    runs = tmp_path / "state" / "runs"
    runs.mkdir(parents=True)
    _write_record(runs, "1a" * 16, 1_700_000_000.0)
    (runs / ("2b" * 16 + ".json")).write_text("{not json")
    result = CliRunner().invoke(main, ["--config", str(config), "resume", "--last"])
    assert result.exit_code == 65
    assert f"{runs / ('2b' * 16)}.json is not valid JSON" in result.stderr


def test_resume_of_a_prefix_finds_an_unreadable_record_and_says_why(tmp_path: Path) -> None:
    config = _state_config(tmp_path)
    runs = tmp_path / "state" / "runs"
    runs.mkdir(parents=True)
    (runs / ("cd" * 16 + ".json")).write_text("{not json")
    result = CliRunner().invoke(main, ["--config", str(config), "resume", "cd"])
    assert result.exit_code == 65
    assert "is not valid JSON" in result.stderr


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
