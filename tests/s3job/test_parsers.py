"""Parsers of what other programs write: state objects, sbatch output, Slurm exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mint_common.errors import InputError
from mint_s3job import layout
from mint_s3job.epilog import parse_exit
from mint_s3job.layout import State
from mint_s3job.slurm import Outcome, parse_sbatch, prefix_from_comment


@pytest.mark.parametrize(
    ("body", "state"),
    [
        (b"FILE_UPLOAD\n", State.FILE_UPLOAD),
        (b"FILE_UPLOAD", State.FILE_UPLOAD),
        (b"JOB_SUBMIT\r\n", State.JOB_SUBMIT),
        (b"\xef\xbb\xbfJOB_COMPLETE\n", State.JOB_COMPLETE),
        (b"  JOB_ERROR  \nextra line\n", State.JOB_ERROR),
    ],
    ids=["echo", "editor-no-newline", "crlf", "bom", "spaces-and-more-lines"],
)
def test_parse_state_reads_the_first_line_like_head(body: bytes, state: State) -> None:
    assert layout.parse_state(body, "x") is state


@given(st.sampled_from(list(State)), st.sampled_from(["\n", "\r\n", ""]), st.text(max_size=20))
def test_parse_state_round_trips_what_we_write(state: State, end: str, rest: str) -> None:
    assert layout.parse_state(layout.state_body(state) + (end + rest).encode(), "x") is state


@pytest.mark.parametrize(
    "body", [b"", b"RUNNING\n", b"file_upload\n"], ids=["empty", "unknown", "case"]
)
def test_parse_state_refuses_unknown_words(body: bytes) -> None:
    with pytest.raises(InputError, match="unknown state"):
        layout.parse_state(body, "job1/job-aws-stat.txt")


@pytest.mark.parametrize(
    "prefix", ["", "a/b", "../x", ".hidden", "-dash", "x" * 201, "日本"], ids=str
)
def test_check_prefix_refuses_what_the_seed_scripts_cannot_handle(prefix: str) -> None:
    with pytest.raises(InputError):
        layout.check_prefix(prefix)


def test_default_prefix_is_valid_and_unique() -> None:
    prefixes = {layout.default_prefix() for _ in range(200)}
    assert len(prefixes) == 200
    for prefix in prefixes:
        assert layout.check_prefix(prefix) == prefix


RECORDED = [
    ("Submitted batch job 12345\n", "", 0, "12345", None),
    ("Submitted batch job 77 on cluster cloud\n", "", 0, "77", None),
    (
        "",
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
        1,
        None,
        "sbatch: error: Batch job submission failed: Invalid partition name specified",
    ),
    (
        "",
        "sbatch: error: invalid partition specified: gpu\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
        1,
        None,
        "sbatch: error: invalid partition specified: gpu",
    ),
    (
        "Submitted batch job 9\n",
        "sbatch: error: This does not look like a batch script.\n",
        0,
        None,
        "sbatch: error: This does not look like a batch script.",
    ),
    (
        "",
        "sbatch: fatal: something\n",
        255,
        None,
        "sbatch exited with status 255: sbatch: fatal: something",
    ),
    ("", "", 0, None, "sbatch printed no 'Submitted batch job N' line"),
]


@pytest.mark.parametrize(
    ("stdout", "stderr", "code", "job_id", "reason"),
    RECORDED,
    ids=["ok", "federation", "error", "two-errors", "error-wins", "fatal", "silent"],
)
def test_parse_sbatch_recorded_outputs(
    stdout: str, stderr: str, code: int, job_id: str | None, reason: str | None
) -> None:
    result = parse_sbatch(stdout, stderr, code)
    assert result.job_id == job_id
    assert result.reason == reason


# Captured from sbatch 22.05.8 against tests' real cluster (tests/s3job/test_real_slurm.py
# produces each of them again): stopped slurmctld, SIGSTOPped slurmctld, refusals.
REAL_22_05 = [
    (
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller"
        " (connect failure)\n",
        Outcome.UNREACHABLE,
    ),
    (
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n",
        Outcome.UNCERTAIN,
    ),
    (
        "sbatch: error: invalid partition specified: nosuch\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
        Outcome.REFUSED,
    ),
    (
        "sbatch: error: This does not look like a batch script.  The first\n"
        "sbatch: error: line must start with #! followed by the path to an interpreter.\n"
        "sbatch: error: For instance: #!/bin/sh\n",
        Outcome.REFUSED,
    ),
    ("sbatch: error: Unable to open file missing.sh\n", Outcome.REFUSED),
]


@pytest.mark.parametrize(
    ("stderr", "outcome"),
    REAL_22_05,
    ids=["ctld-down", "ctld-stopped", "partition", "no-shebang", "no-script"],
)
def test_sbatch_failures_are_told_apart(stderr: str, outcome: Outcome) -> None:
    """Only a refusal of the job itself is the job's fault (JOB_ERROR)."""
    result = parse_sbatch("", stderr, 1)
    assert result.job_id is None
    assert result.outcome is outcome
    assert result.reason == stderr.splitlines()[0]


@pytest.mark.parametrize(
    ("comment", "prefix"),
    [
        ("mint-s3job:job-1:0123abcd", "job-1"),
        ("mint-s3job:a:b:c", "a:b"),
        ("mint-s3job:job-1", None),
        ("mint-s3job::tok", None),
        ("someone else's comment", None),
        ("", None),
    ],
    ids=["ours", "colons", "no-token", "empty-prefix", "foreign", "empty"],
)
def test_prefix_from_comment(comment: str, prefix: str | None) -> None:
    assert prefix_from_comment(comment) == prefix


@given(st.integers(min_value=1, max_value=2**31), st.text(alphabet="abc \n", max_size=30))
def test_parse_sbatch_finds_the_job_id_among_other_lines(job_id: int, noise: str) -> None:
    stdout = f"{noise}\nSubmitted batch job {job_id}\n"
    assert parse_sbatch(stdout, "", 0).job_id == str(job_id)


@pytest.mark.parametrize(
    ("env", "exit_code", "signal"),
    [
        ({"SLURM_JOB_EXIT_CODE2": "0:0", "SLURM_JOB_EXIT_CODE": "0"}, 0, 0),
        ({"SLURM_JOB_EXIT_CODE2": "3:0", "SLURM_JOB_EXIT_CODE": "768"}, 3, 0),
        ({"SLURM_JOB_EXIT_CODE2": "0:9"}, 0, 9),
        ({"SLURM_JOB_EXIT_CODE": "256"}, 1, 0),
        ({"SLURM_JOB_EXIT_CODE": "15"}, 0, 15),
        ({}, None, None),
        ({"SLURM_JOB_EXIT_CODE": "garbage"}, None, None),
    ],
    ids=["ok", "exit3", "killed", "wait-status", "wait-signal", "absent", "garbage"],
)
def test_parse_exit_from_slurm_environment(
    env: dict[str, str], exit_code: int | None, signal: int | None
) -> None:
    info = parse_exit(env)
    assert (info.exit_code, info.signal) == (exit_code, signal)


@given(st.integers(0, 255), st.integers(0, 127))
def test_parse_exit_wait_status_round_trip(code: int, sig: int) -> None:
    info = parse_exit({"SLURM_JOB_EXIT_CODE": str((code << 8) | sig)})
    assert (info.exit_code, info.signal) == (code, sig)


CAPTURED = Path(__file__).resolve().parents[1] / "burst" / "recorded"


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("s3job_sbatch_refused", Outcome.REFUSED),
        ("s3job_sbatch_test_controller_down", Outcome.UNREACHABLE),
    ],
)
def test_sbatch_captures_of_scripts_capture_slurm_outputs_are_told_apart(
    name: str, outcome: Outcome
) -> None:
    """The files a site sends (scripts/capture-slurm-outputs, `sbatch --test-only`) classify
    as the dispatcher would classify the same answer to a real submission."""
    result = parse_sbatch(
        (CAPTURED / f"{name}.stdout").read_text(),
        (CAPTURED / f"{name}.stderr").read_text(),
        int((CAPTURED / f"{name}.rc").read_text()),
    )
    assert result.outcome is outcome
    assert not result.ok


@pytest.mark.parametrize(
    "notice",
    [
        "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n",
        "sbatch: error: Slurm job queue full, sleeping and retrying.\n",
    ],
)
def test_sbatch_retrying_notices_before_a_queued_job_are_not_refusals(notice: str) -> None:
    """Real sbatch 22.05 with MaxJobCount reached: the notice, then the job is queued."""
    result = parse_sbatch("Submitted batch job 3\n", notice, 0)
    assert result.outcome is Outcome.SUBMITTED
    assert result.job_id == "3"
