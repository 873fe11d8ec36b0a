"""What a new user meets in the first hour: errors that point at the fix, run ids by prefix,
the option names shared with the other tools, records that say how a run ended."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mint_common.timeutil import epoch_from_iso
from mint_ssh.cli import main
from tests.ssh.conftest import VENV_BIN, SshSetup

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


def _state_config(tmp_path: Path) -> Path:
    config = tmp_path / "mint-ssh.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    return config


def _record(tmp_path: Path, run_id: str, created_at: float, **fields: Any) -> None:
    runs = tmp_path / "state" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    record = {
        "run_id": run_id,
        "host": "node",
        "command": ["true"],
        "dest": str(tmp_path / "results"),
        "state": "done",
        "exit_status": 0,
        "created_at": created_at,
        "updated_at": created_at,
        **fields,
    }
    (runs / f"{run_id}.json").write_text(json.dumps(record))


def _cli(config: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["--config", str(config), *args], env=env)


OLDER = "3f2a" + "0" * 28
NEWER = "3f2b" + "1" * 28
OTHER = "9c" + "2" * 30


@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    config = _state_config(tmp_path)
    _record(tmp_path, OLDER, 1_700_000_000.0)
    _record(tmp_path, OTHER, 1_700_000_100.0)
    _record(tmp_path, NEWER, 1_700_000_200.0)
    return config


def test_resume_takes_a_unique_prefix_and_says_a_finished_run_was_fetched_earlier(
    three_runs: Path, tmp_path: Path
) -> None:
    result = _cli(three_runs, "resume", "9c")
    assert result.exit_code == 0, result.output
    assert f"run {OTHER}: already done" in result.stderr
    assert f"fetched earlier into {tmp_path / 'results'}" in result.stderr
    assert "0 file(s) fetched" not in result.stderr


def test_resume_of_an_ambiguous_prefix_lists_the_candidates(three_runs: Path) -> None:
    result = _cli(three_runs, "resume", "3f2")
    assert result.exit_code == 2
    assert OLDER in result.stderr and NEWER in result.stderr and OTHER not in result.stderr


def test_resume_of_an_unknown_prefix_exits_66(three_runs: Path) -> None:
    result = _cli(three_runs, "resume", "abc")
    assert result.exit_code == 66
    assert "no run abc" in result.stderr


def test_resume_last_takes_the_newest_run(three_runs: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = _cli(three_runs, "resume", "--last", "--json", str(summary))
    assert result.exit_code == 0, result.output
    assert json.loads(summary.read_text())["run_id"] == NEWER


def test_resume_wants_exactly_one_of_an_id_and_last(three_runs: Path) -> None:
    assert _cli(three_runs, "resume").exit_code == 2
    assert _cli(three_runs, "resume", "--last", "3f2a").exit_code == 2


def test_runs_lists_newest_first_with_iso_times_beside_the_old_epoch(three_runs: Path) -> None:
    result = _cli(three_runs, "runs", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [r["run_id"] for r in listed] == [NEWER, OTHER, OLDER]
    assert ISO_WITH_OFFSET.match(listed[0]["created_at_iso"])
    assert ISO_WITH_OFFSET.match(listed[0]["updated_at_iso"])
    assert listed[0]["created_at"] == 1_700_000_200.0
    assert epoch_from_iso(listed[0]["created_at_iso"]) == 1_700_000_200.0
    table = _cli(three_runs, "runs")
    assert table.stdout.index(NEWER) < table.stdout.index(OLDER)


def test_effective_configuration_is_one_json_line_shown_with_v(three_runs: Path) -> None:
    quiet = _cli(three_runs, "runs")
    assert "effective configuration" not in quiet.stderr
    verbose = _cli(three_runs, "-v", "runs", "--json")
    (line,) = [ln for ln in verbose.stderr.splitlines() if "effective configuration" in ln]
    shown = json.loads(line.split("effective configuration: ", 1)[1])
    assert shown["connect_timeout"] == 15.0 and shown["runs_dir"].endswith("/state/runs")


def test_durations_from_the_environment_and_the_variable_named_in_errors(
    three_runs: Path,
) -> None:
    accepted = _cli(three_runs, "-v", "runs", env={"MINT_SSH_CONNECT_TIMEOUT": "2m"})
    assert accepted.exit_code == 0, accepted.output
    assert '"connect_timeout": 120.0' in accepted.stderr
    negative = _cli(three_runs, "runs", env={"MINT_SSH_CONNECT_TIMEOUT": "-1"})
    assert negative.exit_code == 78
    assert "environment variable MINT_SSH_CONNECT_TIMEOUT" in negative.stderr
    assert "greater than 0" in negative.stderr
    zero = _cli(three_runs, "runs", env={"MINT_SSH_TIMEOUT": "0"})
    assert zero.exit_code == 78
    assert (
        "environment variable MINT_SSH_TIMEOUT: key 'timeout': must be greater than 0, got 0"
        in zero.stderr
    )
    words = _cli(three_runs, "runs", env={"MINT_SSH_TIMEOUT": "soon"})
    assert words.exit_code == 78
    assert "MINT_SSH_TIMEOUT" in words.stderr


def test_timeout_flag_takes_a_duration_and_json_refuses_stdout(three_runs: Path) -> None:
    bad = _cli(three_runs, "run", "node", "--timeout", "soon", "--", "true")
    assert bad.exit_code == 2 and "30m" in bad.stderr
    to_stdout = _cli(three_runs, "run", "node", "--json", "-", "--", "true")
    assert to_stdout.exit_code == 2 and "stdout carries" in to_stdout.stderr


@pytest.mark.parametrize("command", ["run", "resume", "runs", "check", "gate"])
def test_help_speaks_the_users_words(command: str) -> None:
    text = CliRunner().invoke(main, [command, "--help"]).output.lower()
    for word in ("seed", "quirk", "shared/protocols"):
        assert word not in text
    if command == "run":
        for new in ("--input", "--include", "--exclude", "--out-dir", "--json"):
            assert new in text
        for old in ("--put", "--get", "--dest"):
            assert old not in text


# --- against the real sshd ------------------------------------------------------------------


def test_run_with_the_new_option_names(setup: SshSetup) -> None:
    data = setup.input_file("in.dat", b"12345")
    summary = setup.root / "summary.json"
    result = setup.run(
        "run", "node", "--input", str(data), "--include", "out*", "--exclude", "*.log",
        "--out-dir", str(setup.dest), "--timeout", "1m", "--json", str(summary),
        "--", "sh", "-c", "cp in.dat out.dat; echo noise > out.log",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "old spelling" not in result.stderr
    assert sorted(p.name for p in setup.dest.iterdir()) == ["out.dat"]
    report = json.loads(summary.read_text())
    assert report["exit_status"] == 0 and report["files"] == [{"path": "out.dat", "size": 5}]
    assert report["run_id"] == setup.records()[0]["run_id"]
    assert ISO_WITH_OFFSET.match(report["created_at"])


def test_old_option_spellings_still_work_and_warn(setup: SshSetup) -> None:
    data = setup.input_file("in.dat", b"x")
    result = setup.run(
        "run", "node", "--put", str(data), "--get", "in.dat", "--dest", str(setup.dest),
        "--", "true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--dest is an old spelling of --out-dir" in result.stderr
    assert "--put is an old spelling of --input" in result.stderr
    assert (setup.dest / "in.dat").read_bytes() == b"x"


def test_a_refused_host_key_leaves_a_failed_record_not_uploading(setup: SshSetup) -> None:
    setup.known_hosts.write_text("")
    result = setup.run("run", "node", "--out-dir", str(setup.dest), "--", "true")
    assert result.returncode == 77
    (record,) = setup.records()
    assert record["state"] == "failed"
    assert "not started" in record["message"] and "unknown" in record["message"]
    resumed = setup.run("resume", record["run_id"])
    assert resumed.returncode == 65 and "nothing to resume" in resumed.stderr


def test_a_refused_login_leaves_a_failed_record(
    setup: SshSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    stranger = tmp_path / "stranger"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True, timeout=30
    )
    setup.write_ssh_config(extra=f"  IdentityFile {stranger}\n  IdentitiesOnly yes\n")
    setup.ssh_config.write_text(
        setup.ssh_config.read_text().replace(f"  IdentityFile {setup.server.client_key}\n", "")
    )
    result = setup.run("run", "node", "--", "true")
    assert result.returncode == 77, result.stderr
    (record,) = setup.records()
    assert record["state"] == "failed" and "authentication" in record["message"]


def test_a_missing_identity_file_is_named(setup: SshSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    missing = setup.root / "nokey"
    setup.ssh_config.write_text(
        setup.ssh_config.read_text().replace(str(setup.server.client_key), str(missing))
    )
    result = setup.run("run", "node", "--", "true")
    assert result.returncode == 78, result.stderr
    assert f"identity file {missing}" in result.stderr and "does not exist" in result.stderr


def test_a_private_key_others_can_read_is_refused_with_the_chmod_fix(
    setup: SshSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = setup.root / "loose_key"
    shutil.copy(setup.server.client_key, key)
    key.chmod(0o644)
    setup.ssh_config.write_text(
        setup.ssh_config.read_text().replace(str(setup.server.client_key), str(key))
    )
    result = setup.run("run", "node", "--", "true")
    assert result.returncode == 77, result.stderr
    assert "readable by others (mode 0644)" in result.stderr
    assert f"hint: chmod 600 {key}" in result.stderr
    key.chmod(0o600)
    assert setup.run("run", "node", "--", "true").returncode == 0


def test_check_hints_accept_new_host_key_for_an_unknown_key(setup: SshSetup) -> None:
    setup.known_hosts.write_text("")
    result = setup.run("check", "node", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)["checks"]}
    assert rows["connect"]["status"] == "fail"
    assert "--accept-new-host-key" in rows["connect"]["detail"]


def test_changed_key_hint_names_the_known_hosts_file_in_use(
    setup: SshSetup, tmp_path: Path
) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
        check=True, timeout=30,
    )  # fmt: skip
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    setup.known_hosts.write_text(f"[127.0.0.1]:{setup.server.port} {other}\n")
    result = setup.run("check", "node")
    assert result.returncode == 1
    expected = f"ssh-keygen -R '[127.0.0.1]:{setup.server.port}' -f {setup.known_hosts}"
    assert expected in result.stdout.replace("\n", "")


def test_command_substitution_gets_the_remote_stdout(setup: SshSetup) -> None:
    version = setup.input_file("v.txt", b"1.2.3\n")
    script = (
        'x=$("$@" run node --input "$V" -- sh -c "cat v.txt; echo noise >&2"); printf "[%s]" "$x"'
    )
    shell = subprocess.run(
        ["sh", "-c", script, "sh", str(VENV_BIN / "mint-ssh"), "--config", str(setup.config)],
        env={**os.environ, "V": str(version)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=setup.root,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == "[1.2.3]"
    assert "noise" in shell.stderr


def _listing(setup: SshSetup, *inputs: str) -> list[str]:
    result = setup.run(
        "run", "node", *(a for i in inputs for a in ("--input", i)), "--include", "listing.txt",
        "--out-dir", str(setup.dest), "--",
        "sh", "-c", "find . -path ./.mint-ssh -prune -o -type f ! -name listing.txt -print"
        " | LC_ALL=C sort > listing.txt",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return (setup.dest / "listing.txt").read_text().split()


def _tree(root: Path) -> Path:
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("a\n")
    (data / "sub" / "b.txt").write_text("b\n")
    (data / "inside-link").symlink_to(data / "a.txt")
    return data


def test_an_input_dir_arrives_as_dir_and_with_a_slash_as_its_contents(setup: SshSetup) -> None:
    data = _tree(setup.root)
    assert _listing(setup, str(data)) == ["./data/a.txt", "./data/inside-link", "./data/sub/b.txt"]
    assert _listing(setup, f"{data}/") == ["./a.txt", "./inside-link", "./sub/b.txt"]


def test_a_symlink_out_of_an_input_dir_is_refused_before_connecting(setup: SshSetup) -> None:
    data = _tree(setup.root)
    (data / "sub" / "secret").symlink_to("/etc/passwd")
    result = setup.run("run", "node", "--input", str(data), "--", "true")
    assert result.returncode == 65
    assert "is a symlink to /etc/passwd, outside the input dir" in result.stderr
    assert setup.records() == []


def test_an_input_dir_goes_through_the_gate(gated: SshSetup) -> None:
    data = _tree(gated.root)
    result = gated.run(
        "run", "node", "--input", str(data), "--include", "out.txt", "--out-dir", str(gated.dest),
        "--", "sh", "-c", "cat data/sub/b.txt data/inside-link > out.txt",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (gated.dest / "out.txt").read_text() == "b\na\n"


def test_an_unchanged_input_is_not_written_back_over_itself(setup: SshSetup) -> None:
    kept = setup.input_file("kept.dat", b"same\n")
    changed = setup.input_file("changed.dat", b"before\n")
    os.utime(kept, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    os.utime(changed, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    result = setup.run(
        "run", "node", "--input", str(kept), "--input", str(changed),
        "--out-dir", str(kept.parent), "--", "sh", "-c", "echo after >> changed.dat",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert kept.stat().st_mtime_ns == 1_000_000_000_000_000_000, "rewritten over itself"
    assert kept.read_bytes() == b"same\n"
    assert changed.read_bytes() == b"before\nafter\n"
    assert "left 1 input(s) in place, unchanged: kept.dat" in result.stderr
