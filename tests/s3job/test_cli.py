"""The console script over real HTTP to moto: exit codes, stdout contracts, the round trip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mint_common.terminal import Terminal, terminal_override
from mint_s3job import jobs
from mint_s3job.cli import main
from mint_s3job.store import S3ObjectStore
from tests.helpers import run_tool

from .conftest import FakeSlurm
from .jobhelpers import BINARY, JAPANESE_NAME, make_job

COMMANDS = [
    "submit",
    "status",
    "list",
    "wait",
    "fetch",
    "cancel",
    "clean",
    "dispatch",
    "epilog",
    "check",
]


@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0 and "Usage:" in result.output and "--bucket" in result.output


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_round_trip_submit_dispatch_run_epilog_wait_fetch(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    script, inputs = make_job(tmp_path / "src")
    workdir = tmp_path / "head" / "job-aws"
    submitted = run_tool("mint-s3job", "submit", "--script", str(script), str(inputs), env=cli_env)
    assert submitted.returncode == 0, submitted.stderr
    lines = submitted.stdout.splitlines()
    assert len(lines) == 1
    prefix = lines[0]
    assert prefix.startswith("job-")

    dispatched = run_tool("mint-s3job", "dispatch", "--workdir", str(workdir), env=cli_env)
    assert dispatched.returncode == 0, dispatched.stderr
    assert dispatched.stdout == f"{prefix}\tJOB_SUBMIT\t4242\n"

    job_dir = workdir / prefix
    (job_dir / "out").mkdir()
    ran = subprocess.run(["bash", "job-aws-run.sh"], cwd=job_dir, check=False, timeout=30)
    assert ran.returncode == 0
    (job_dir / "out" / "バイナリ.bin").write_bytes(BINARY)
    slurm_env = dict(
        cli_env,
        SLURM_JOB_ID="4242",
        SLURM_JOB_WORK_DIR=str(job_dir),
        SLURM_JOB_EXIT_CODE="0",
        SLURM_JOB_EXIT_CODE2="0:0",
    )
    epilog = run_tool("mint-s3job", "epilog", "--workdir", str(workdir), env=slurm_env)
    assert epilog.returncode == 0, epilog.stderr
    assert epilog.stdout == ""

    waited = run_tool("mint-s3job", "wait", prefix, "--timeout", "30", env=cli_env)
    assert (waited.returncode, waited.stdout) == (0, "JOB_COMPLETE\n"), waited.stderr

    dest = tmp_path / "results"
    fetched = run_tool("mint-s3job", "fetch", prefix, "--out-dir", str(dest), "--json", env=cli_env)
    assert fetched.returncode == 0, fetched.stderr
    summary = json.loads(fetched.stdout)
    assert summary["refused"] == [] and summary["skipped"] == []
    got = _tree(dest)
    expected_inputs = {f"input/{k}": v for k, v in _tree(inputs).items()}
    for name, data in expected_inputs.items():
        assert got[name] == data, name
    assert got[f"input/deep/深い/{JAPANESE_NAME}"] == "日本語の内容\n".encode()
    assert got["out/result.txt"] == b"alpha=1\n"
    assert got["out/バイナリ.bin"] == BINARY
    assert got["job-aws-run.sh"] == script.read_bytes()
    assert got["job-aws-stat.txt"] == b"JOB_COMPLETE\n"

    status = run_tool("mint-s3job", "status", prefix, "--json", env=cli_env)
    document = json.loads(status.stdout)
    assert document["state"] == "JOB_COMPLETE" and document["exit_code"] == 0
    assert document["job_id"] == "4242" and {"submitted", "claimed", "completed"} <= set(
        document["times"]
    )
    listing = run_tool("mint-s3job", "list", "--json", env=cli_env)
    assert [(j["prefix"], j["state"]) for j in json.loads(listing.stdout)] == [
        (prefix, "JOB_COMPLETE")
    ]


def test_wait_exit_codes(cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm) -> None:
    script, _ = make_job(tmp_path / "bad", failing=True)
    bad = run_tool(
        "mint-s3job", "submit", "--script", str(script), "--prefix", "job-bad", env=cli_env
    )
    good_script, _ = make_job(tmp_path / "good")
    run_tool(
        "mint-s3job", "submit", "--script", str(good_script), "--prefix", "job-ok", env=cli_env
    )
    assert bad.stdout == "job-bad\n"
    dispatched = run_tool("mint-s3job", "dispatch", "--workdir", str(tmp_path / "w"), env=cli_env)
    assert dispatched.returncode == 1
    assert "job-bad\tJOB_ERROR\tsbatch: error: Batch job submission failed" in dispatched.stdout
    failed = run_tool("mint-s3job", "wait", "job-bad", env=cli_env)
    assert failed.returncode == 1
    assert "Invalid partition name specified" in failed.stderr
    timed_out = run_tool("mint-s3job", "wait", "job-ok", "--timeout", "0.3", env=cli_env)
    assert timed_out.returncode == 75 and "still JOB_SUBMIT" in timed_out.stderr


def _wait_in_process(
    cli_env: dict[str, str],
    store: S3ObjectStore,
    term: Terminal,
    monkeypatch: pytest.MonkeyPatch,
) -> Result:
    """`mint-s3job wait` on a job that moves from JOB_SUBMIT to JOB_COMPLETE while waited on:
    the state changes right after `wait` first saw JOB_SUBMIT, however slow its start."""
    store.put_bytes("job-w/job-aws-run.sh", b"#!/bin/bash\n")
    store.put_bytes("job-w/job-aws-stat.txt", b"JOB_SUBMIT\n")
    looks = []

    def look_then_complete(*args: Any, **kwargs: Any) -> Any:
        status = real_job_status(*args, **kwargs)
        looks.append(status)
        if len(looks) == 1:
            store.put_bytes("job-w/job-aws-stat.txt", b"JOB_COMPLETE\n")
        return status

    real_job_status = jobs.job_status
    monkeypatch.setattr(jobs, "job_status", look_then_complete)
    with terminal_override(term):
        return CliRunner().invoke(
            main, ["wait", "job-w", "--timeout", "30"], env=cli_env, catch_exceptions=False
        )


def test_wait_without_a_terminal_logs_one_line_per_state(
    cli_env: dict[str, str], store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _wait_in_process(cli_env, store, Terminal(False, False, False), monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "JOB_COMPLETE\n"
    lines = [line for line in result.stderr.splitlines() if "job job-w:" in line]
    assert [line.split("job job-w: ")[1].split(" (after")[0] for line in lines] == [
        "JOB_SUBMIT",
        "JOB_COMPLETE",
    ]
    assert "\x1b[" not in result.stderr


def test_wait_on_a_terminal_draws_the_live_line(
    cli_env: dict[str, str], store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _wait_in_process(cli_env, store, Terminal(False, False, True), monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "JOB_COMPLETE\n"
    assert "job job-w  JOB_COMPLETE  0:0" in result.stderr
    assert "next check in" in result.stderr
    assert "job job-w:" not in result.stderr


def test_submit_errors_have_documented_exit_codes(cli_env: dict[str, str], tmp_path: Path) -> None:
    script, _ = make_job(tmp_path)
    first = run_tool(
        "mint-s3job", "submit", "--script", str(script), "--prefix", "job-1", env=cli_env
    )
    assert first.returncode == 0
    reused = run_tool(
        "mint-s3job", "submit", "--script", str(script), "--prefix", "job-1", env=cli_env
    )
    assert reused.returncode == 73 and "--force" in reused.stderr and reused.stdout == ""
    bad = run_tool("mint-s3job", "submit", "--script", str(script), "--prefix", "a/b", env=cli_env)
    assert bad.returncode == 65 and "invalid job prefix" in bad.stderr
    missing = run_tool("mint-s3job", "submit", "--script", str(tmp_path / "no.sh"), env=cli_env)
    assert missing.returncode == 66
    no_bucket = {k: v for k, v in cli_env.items() if k != "MINT_S3JOB_BUCKET"}
    unconfigured = run_tool("mint-s3job", "submit", "--script", str(script), env=no_bucket)
    assert unconfigured.returncode == 78 and "no bucket given" in unconfigured.stderr
    typo = dict(cli_env, MINT_S3JOB_BUKET="x")
    assert run_tool("mint-s3job", "list", env=typo).returncode == 78
    absent = run_tool("mint-s3job", "list", "--bucket", "no-such-bucket-here", env=cli_env)
    assert absent.returncode == 78 and "does not exist" in absent.stderr


def test_submit_json_summary(cli_env: dict[str, str], tmp_path: Path) -> None:
    script, inputs = make_job(tmp_path)
    result = run_tool(
        "mint-s3job", "submit", "--script", str(script), "--json", str(inputs) + "/", env=cli_env
    )
    summary = json.loads(result.stdout)
    assert summary["files"] == 4 and summary["prefix"].startswith("job-")
    assert summary["bytes"] == script.stat().st_size + sum(
        p.stat().st_size for p in inputs.rglob("*") if p.is_file()
    )


def test_check_probes_conditional_writes_and_sbatch(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm, store: S3ObjectStore
) -> None:
    result = run_tool(
        "mint-s3job", "check", "--json", "--workdir", str(tmp_path / "w"), env=cli_env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["conditional write"]["status"] == "pass"
    assert checks["sbatch"]["detail"].endswith("fakes/sbatch")
    assert checks["credentials"]["status"] == "pass" and "testing" not in result.stdout
    assert store.list_objects("") == []  # probes cleaned up
    no_slurm = dict(cli_env, PATH="/usr/bin:/bin")
    failing = run_tool("mint-s3job", "check", "--head-node", env=no_slurm)
    assert failing.returncode == 1 and "sbatch" in failing.stdout


def test_cancel_and_clean_from_the_command_line(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    script, _ = make_job(tmp_path)
    run_tool("mint-s3job", "submit", "--script", str(script), "--prefix", "job-c", env=cli_env)
    cancelled = run_tool("mint-s3job", "cancel", "job-c", env=cli_env)
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout
    run_tool("mint-s3job", "dispatch", "--workdir", str(tmp_path / "w"), env=cli_env)
    assert fake_slurm.calls() == []
    waited = run_tool("mint-s3job", "wait", "job-c", env=cli_env)
    assert waited.returncode == 1 and "cancelled" in waited.stderr
    cleaned = run_tool("mint-s3job", "clean", "job-c", env=cli_env)
    assert cleaned.returncode == 0 and "deleted" in cleaned.stdout
    assert run_tool("mint-s3job", "status", "job-c", env=cli_env).returncode == 66


def test_missing_extra_gives_exit_69_and_the_pip_hint(base_only_venv: Path) -> None:
    tool = base_only_venv.parent / "mint-s3job"
    result = subprocess.run(
        [str(tool), "list", "--bucket", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 69
    assert "pip install 'mint-tools[s3job]'" in result.stderr
    helped = subprocess.run(
        [str(tool), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0


def test_secrets_from_the_environment_never_show(cli_env: dict[str, str]) -> None:
    env = dict(
        cli_env,
        AWS_SECRET_ACCESS_KEY="very-secret-value-123",
        AWS_SESSION_TOKEN="session-token-that-must-not-leak",
    )
    result = run_tool("mint-s3job", "-vv", "list", env=env)
    assert result.returncode == 0, result.stderr
    assert "X-Amz-Security-Token" in result.stderr  # botocore's debug lines are there...
    assert "very-secret-value-123" not in result.stdout + result.stderr
    assert "session-token-that-must-not-leak" not in result.stdout + result.stderr
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") == "testing"


def test_dispatch_watch_runs_until_sigterm_with_a_heartbeat(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    script, _ = make_job(tmp_path)
    run_tool("mint-s3job", "submit", "--script", str(script), "--prefix", "job-w", env=cli_env)
    workdir = tmp_path / "w"
    state = workdir / ".mint-s3job" / "dispatch-state.json"
    tool = str(Path(sys.executable).parent / "mint-s3job")
    process = subprocess.Popen(
        [tool, "dispatch", "--watch", "--poll-interval", "0.2", "--workdir", str(workdir)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not state.exists():
            time.sleep(0.1)
        first = json.loads(state.read_text())["heartbeat"]
        while time.monotonic() < deadline and json.loads(state.read_text())["heartbeat"] == first:
            time.sleep(0.2)
        assert json.loads(state.read_text())["heartbeat"] != first
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.splitlines() == ["job-w\tJOB_SUBMIT\t4242"]
    assert len(fake_slurm.calls()) == 1
