"""What a new user meets in the first hour (issue 13): check, wait, signals, the vocabulary."""

from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import mint_s3job
from mint_s3job.cli import main
from mint_s3job.store import S3ObjectStore
from tests.helpers import run_tool

from .conftest import FakeSlurm
from .jobhelpers import make_job

TOOL = str(Path(sys.executable).parent / "mint-s3job")
PARTITION_ERROR = "sbatch: error: Batch job submission failed: Invalid partition name specified"


def _invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def _submit(env: dict[str, str], tmp_path: Path, prefix: str, *inputs: str) -> None:
    script, _ = make_job(tmp_path / prefix)
    submitted = run_tool(
        "mint-s3job", "submit", "--script", str(script), "--prefix", prefix, *inputs, env=env
    )
    assert submitted.returncode == 0, submitted.stderr


# ---- 1: a skipped row is not a failure -------------------------------------------------------


def test_check_on_premises_exits_0_with_the_head_node_row_skipped(
    cli_env: dict[str, str],
) -> None:
    table = run_tool("mint-s3job", "check", env=cli_env)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "sbatch\tSKIP\tnot a head node (no workdir configured)" in table.stdout.splitlines()
    assert "FAIL" not in table.stdout
    document = json.loads(run_tool("mint-s3job", "check", "--json", env=cli_env).stdout)
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    assert document["ok"] is True and statuses["sbatch"] == "skip"
    assert set(statuses.values()) == {"pass", "skip"}


# ---- 5: every end state prints its result ------------------------------------------------------


def _end_state(store: S3ObjectStore, prefix: str, case: str) -> None:
    store.put_bytes(f"{prefix}/job-aws-run.sh", b"#!/bin/bash\n")
    if case == "job_error":
        store.put_bytes(f"{prefix}/job-aws-sbatch.out", PARTITION_ERROR.encode() + b"\n")
    if case == "cancelled":
        store.put_bytes(f"{prefix}/.mint-s3job/cancelled.json", b'{"action": "not submitted"}')
    if case in ("completed", "exit_3"):
        store.put_bytes(f"{prefix}/job-aws-jobid.txt", b"4242\n")
        code = 0 if case == "completed" else 3
        store.put_bytes(f"{prefix}/.mint-s3job/exit.json", json.dumps({"exit_code": code}).encode())
    state = "JOB_COMPLETE" if case in ("completed", "exit_3") else "JOB_ERROR"
    store.put_bytes(f"{prefix}/job-aws-stat.txt", state.encode() + b"\n")


END_STATES = [
    ("completed", "JOB_COMPLETE", 0, ""),
    ("exit_3", "JOB_COMPLETE", 1, "exit code 3"),
    ("job_error", "JOB_ERROR", 1, "Invalid partition name specified"),
    ("cancelled", "JOB_ERROR", 1, "was cancelled (not submitted)"),
]


@pytest.mark.parametrize(
    ("case", "state", "exit_status", "message"), END_STATES, ids=[c[0] for c in END_STATES]
)
def test_wait_prints_the_result_of_every_end_state(
    cli_env: dict[str, str],
    store: S3ObjectStore,
    case: str,
    state: str,
    exit_status: int,
    message: str,
) -> None:
    _end_state(store, "job-end", case)
    human = _invoke(cli_env, "wait", "job-end", "--timeout", "10s")
    assert (human.exit_code, human.stdout) == (exit_status, f"{state}\n"), human.stderr
    assert message in human.stderr
    as_json = _invoke(cli_env, "wait", "job-end", "--timeout", "10s", "--json")
    assert as_json.exit_code == exit_status
    document = json.loads(as_json.stdout)
    assert document["prefix"] == "job-end" and document["state"] == state
    if case == "job_error":
        assert document["reason"] == PARTITION_ERROR
    if case == "exit_3":
        assert document["exit_code"] == 3 and document["job_id"] == "4242"


# ---- 7: signals ---------------------------------------------------------------------------------


def test_dispatch_watch_asked_to_stop_mid_step_finishes_it_and_exits_0(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm, store: S3ObjectStore
) -> None:
    _submit(cli_env, tmp_path, "job-term")
    # sbatch sends SIGTERM to the dispatcher once the job is queued, as `systemctl stop`
    # would in the middle of a run.
    env = dict(cli_env, FAKE_SBATCH_TERM_CALLER="1")
    watch = [TOOL, "dispatch", "--watch", "--poll-interval", "1h", "--workdir", str(tmp_path / "w")]
    done = subprocess.run(watch, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "job-term\tJOB_SUBMIT\t4242\n"
    assert store.get_bytes("job-term/job-aws-stat.txt") == b"JOB_SUBMIT\n"
    assert store.get_bytes("job-term/job-aws-jobid.txt") == b"4242\n"
    assert len(fake_slurm.calls()) == 1
    assert "SIGTERM received: finishing the current step" in done.stderr
    # 12: a daemon logs its effective configuration once, when it starts.
    assert done.stderr.count("effective configuration: {") == 1


def test_wait_interrupted_by_sigterm_exits_143(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(cli_env, tmp_path, "job-wait")
    process = subprocess.Popen(
        [TOOL, "wait", "job-wait", "--poll-interval", "0.1", "--timeout", "60"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "job job-wait: FILE_UPLOAD" in line:
                break
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, "".join(seen) + err
    assert out == ""
    assert "SIGTERM" in err and "()" not in err


# ---- 12: the effective configuration ------------------------------------------------------------


def test_one_shot_commands_log_the_effective_configuration_only_with_verbose(
    cli_env: dict[str, str],
) -> None:
    env = dict(cli_env, AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    quiet = _invoke(env, "list")
    assert quiet.exit_code == 0 and "effective configuration" not in quiet.stderr
    verbose = _invoke(env, "-v", "list")
    assert verbose.exit_code == 0
    lines = [line for line in verbose.stderr.splitlines() if "effective configuration: " in line]
    assert len(lines) == 1
    view = json.loads(lines[0].split("effective configuration: ", 1)[1])
    assert view["bucket"] == cli_env["MINT_S3JOB_BUCKET"] and view["poll_interval"] == 0.1


# ---- 15: one vocabulary -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "new", "old"),
    [
        ("wait", "--poll-interval", "--interval"),
        ("dispatch", "--poll-interval", "--interval"),
        ("fetch", "--out-dir", "--dest"),
        ("submit", "--input", None),
    ],
    ids=["wait", "dispatch", "fetch", "submit"],
)
def test_help_shows_the_new_spellings_only(command: str, new: str, old: str | None) -> None:
    text = CliRunner().invoke(main, [command, "--help"], catch_exceptions=False).output
    assert new in text
    if old is not None:
        assert not re.search(rf"{old}\b", text)


def test_old_spellings_still_work_with_a_warning(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(cli_env, tmp_path, "job-old")
    dispatched = _invoke(cli_env, "dispatch", "--interval", "5", "--workdir", str(tmp_path / "w"))
    assert dispatched.exit_code == 0 and "--interval is an old spelling of --poll-interval" in (
        dispatched.stderr
    )
    waited = _invoke(cli_env, "wait", "job-old", "--interval", "0.1", "--timeout", "0.3")
    assert waited.exit_code == 75 and "still JOB_SUBMIT after 0.3 s" in waited.stderr
    assert "--interval is an old spelling of --poll-interval" in waited.stderr
    fetched = _invoke(cli_env, "fetch", "job-old", "--dest", str(tmp_path / "out"))
    assert fetched.exit_code == 0, fetched.stderr
    assert (tmp_path / "out" / "job-aws-run.sh").is_file()
    assert "--dest is an old spelling of --out-dir" in fetched.stderr


def test_submit_takes_input_options_beside_positional_paths(
    cli_env: dict[str, str], tmp_path: Path, store: S3ObjectStore
) -> None:
    script, inputs = make_job(tmp_path / "src")
    extra = tmp_path / "extra.dat"
    extra.write_text("extra\n")
    result = _invoke(
        cli_env,
        *("submit", "--script", str(script), "--prefix", "job-in"),
        *("--input", str(inputs / "params.txt"), "--input", str(extra), str(inputs / "deep")),
    )
    assert result.exit_code == 0, result.stderr
    names = {o.key for o in store.list_objects("job-in/") if "/.mint-s3job/" not in o.key}
    assert {"job-in/params.txt", "job-in/extra.dat", "job-in/deep/blob.bin"} <= names


@pytest.mark.parametrize(
    ("args", "env", "status", "message"),
    [
        (("--timeout", "soon"), {}, 2, "Invalid value for '--timeout'"),
        (("--poll-interval", "0"), {}, 78, "key 'poll_interval': must be greater than 0"),
        ((), {"MINT_S3JOB_POLL_INTERVAL": "often"}, 78, "MINT_S3JOB_POLL_INTERVAL"),
        ((), {"MINT_S3JOB_POLL_INTERVAL": "-1m"}, 78, "MINT_S3JOB_POLL_INTERVAL"),
        ((), {"MINT_S3JOB_COMMAND_TIMEOUT": "0s"}, 78, "MINT_S3JOB_COMMAND_TIMEOUT"),
        ((), {"MINT_S3JOB_RETRIES": "21"}, 78, "MINT_S3JOB_RETRIES"),
    ],
    ids=["bad-flag", "zero-flag", "bad-env", "negative-env", "zero-env", "too-many-retries"],
)
def test_bad_durations_and_ranges_name_what_the_user_set(
    cli_env: dict[str, str], args: tuple[str, ...], env: dict[str, str], status: int, message: str
) -> None:
    result = _invoke({**cli_env, **env}, "wait", "job-x", *args)
    assert result.exit_code == status
    assert message in result.output


def test_durations_with_units_in_flags_and_environment(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    _submit(cli_env, tmp_path, "job-d")
    env = dict(cli_env, MINT_S3JOB_POLL_INTERVAL="1h")
    # The flag's 0.1s wins over the environment's hour, and the timeout is cut at 0.5 s.
    waited = _invoke(env, "wait", "job-d", "--poll-interval", "0.1s", "--timeout", "0.5s")
    assert waited.exit_code == 75 and "still FILE_UPLOAD after 0.5 s" in waited.stderr
    config_file = tmp_path / "mint-s3job.yaml"
    config_file.write_text("poll_interval: 2m\nclaim_stale_after: 1h30m\n")
    no_env = {k: v for k, v in cli_env.items() if k != "MINT_S3JOB_POLL_INTERVAL"}
    shown = _invoke(no_env, "--config", str(config_file), "-v", "list")
    line = next(x for x in shown.stderr.splitlines() if "effective configuration: " in x)
    view = json.loads(line.split("effective configuration: ", 1)[1])
    assert (view["poll_interval"], view["claim_stale_after"]) == (120.0, 5400.0)


def test_list_is_newest_first(cli_env: dict[str, str], store: S3ObjectStore) -> None:
    # Submitted in the order b, c, a: neither alphabetical nor its reverse. S3 keeps
    # whole seconds, so each job waits for the clock to pass its predecessor's second.
    for prefix in ("job-b", "job-c", "job-a"):
        manifest = f"{prefix}/.mint-s3job/manifest-submit.json"
        store.put_bytes(manifest, b"{}")
        store.put_bytes(f"{prefix}/job-aws-stat.txt", b"FILE_UPLOAD\n")
        info = store.head(manifest)
        assert info is not None
        while datetime.now(timezone.utc) < info.last_modified + timedelta(seconds=1):
            time.sleep(0.05)
    listed = json.loads(_invoke(cli_env, "list", "--json").stdout)
    assert [job["prefix"] for job in listed] == ["job-a", "job-c", "job-b"]
    table = _invoke(cli_env, "list").stdout.splitlines()
    assert [row.split("\t")[0] for row in table[1:]] == ["job-a", "job-c", "job-b"]


def _is_iso_with_offset(value: Any) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value).utcoffset() is not None


def test_json_times_are_iso_8601_with_offset_in_at_fields(
    cli_env: dict[str, str], store: S3ObjectStore
) -> None:
    _end_state(store, "job-t", "completed")
    store.put_bytes("job-t/.mint-s3job/manifest-submit.json", b"{}")
    status = json.loads(_invoke(cli_env, "status", "job-t", "--json").stdout)
    for name in ("submitted_at", "updated_at", "completed_at"):
        assert _is_iso_with_offset(status[name]), name
    assert status["claimed_at"] is None
    # The old `times` mapping stays one release, with the same values.
    assert status["times"] == {
        "submitted": status["submitted_at"],
        "updated": status["updated_at"],
        "completed": status["completed_at"],
    }
    (job,) = json.loads(_invoke(cli_env, "list", "--json").stdout)
    assert _is_iso_with_offset(job["submitted_at"]) and _is_iso_with_offset(job["updated_at"])


# ---- 17: the users' words -----------------------------------------------------------------------

PROJECT_WORDS = re.compile(r"\bseeds?\b|\bquirk\b|shared/", re.IGNORECASE)
COMMANDS = ["submit", "status", "list", "wait", "fetch", "cancel", "clean", "dispatch"]
COMMANDS += ["epilog", "check"]


@pytest.mark.parametrize("command", [None, *COMMANDS], ids=["main", *COMMANDS])
def test_help_uses_no_word_only_this_project_knows(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    text = CliRunner().invoke(main, args, catch_exceptions=False).output
    assert not PROJECT_WORDS.search(text), text


def _messages(path: Path) -> list[str]:
    """Every string literal of a module except docstrings (those are not shown to users)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_messages_use_no_word_only_this_project_knows() -> None:
    offending = [
        (path.name, text)
        for path in sorted(Path(mint_s3job.__file__).parent.glob("*.py"))
        for text in _messages(path)
        if PROJECT_WORDS.search(text)
    ]
    assert offending == []


# ---- 26: status, one clean set of lines and fields ----------------------------------------------


def test_status_shows_one_labelled_line_per_fact(
    cli_env: dict[str, str], store: S3ObjectStore
) -> None:
    _end_state(store, "job-s", "completed")
    lines = _invoke(cli_env, "status", "job-s").stdout.splitlines()
    assert lines[0] == "field\tvalue"
    rows = dict(line.split("\t") for line in lines[1:])
    assert len(rows) == len(lines) - 1  # every label once
    assert rows["state"] == "JOB_COMPLETE" and rows["Slurm job id"] == "4242"
    assert rows["exit code"] == "0" and rows["cancel requested"] == "no"
    assert _is_iso_with_offset(rows["updated at"]) and _is_iso_with_offset(rows["completed at"])
    assert not {"updated_at", "times", "refused", "cancel_requested"} & set(rows)
    assert not {"False", "True", "None", "[]", "{}"} & set(rows.values())
    store.put_bytes("job-s/.mint-s3job/cancel.json", b"{}")
    rows = dict(
        line.split("\t") for line in _invoke(cli_env, "status", "job-s").stdout.split("\n")[1:-1]
    )
    assert rows["cancel requested"] == "yes"
