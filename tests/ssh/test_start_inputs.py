"""Inputs carried on the start request, results sent back on it: one request per run, and no
second start or upload."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Callable

import pytest

from mint_common.config import load_config
from mint_common.errors import NoInputError, TransferError
from mint_ssh import protocol
from mint_ssh.config import SshToolConfig
from mint_ssh.connection import ExecResult, SshConnection, connect
from mint_ssh.hosts import HostSpec, resolve_host
from mint_ssh.records import RunRecord, RunStore
from mint_ssh.runner import RemoteRun, RunRequest, resume_job, run_job
from mint_ssh.transfer import UPLOAD_COMMAND_LIMIT, DownloadReport, extract_stream, upload_items
from tests.ssh.conftest import SshSetup, wait_for

RUN_ID = "ab" * 16


class _RecordingHost:
    """A real connection that also keeps every command it sends."""

    def __init__(self, conn: SshConnection, commands: list[str]) -> None:
        self.conn = conn
        self.commands = commands

    def execute(self, command: str, *, timeout: float = 120.0) -> ExecResult:
        self.commands.append(command)
        return self.conn.execute(command, timeout=timeout)

    def upload(
        self, command: str, blocks: Iterable[bytes], advance: Callable[[int], None]
    ) -> ExecResult:
        self.commands.append(command)
        return self.conn.upload(command, blocks, advance)

    def fetch(
        self, command: str, unpack: Callable[[BinaryIO], bool], opened: object = None
    ) -> ExecResult:
        if opened is None:
            self.commands.append(command)
        return self.conn.fetch(command, unpack, opened)

    def watch(self, command: str, on_output: Callable[[bytes], None], *args: Any) -> ExecResult:
        self.commands.append(command)
        return self.conn.watch(command, on_output, *args)

    def close(self) -> None:
        self.conn.close()


class _Bench:
    """Config, host spec and a recording connector for in-process runs against the sshd."""

    def __init__(self, setup: SshSetup) -> None:
        self.base = setup.root / "work"
        self.base.mkdir()
        setup.write_config(workdir_base=str(self.base))
        self.cfg = load_config(SshToolConfig, "mint-ssh", config_file=setup.config)
        self.spec = resolve_host("node", self.cfg)
        self.commands: list[str] = []
        self.policy = protocol.GatePolicy(bases=(str(self.base),), allowed=("sh",))

    def connector(self, spec: HostSpec) -> _RecordingHost:
        conn = connect(spec, resolve=lambda a: resolve_host(a, self.cfg), connect_timeout=10)
        return _RecordingHost(conn, self.commands)

    def operations(self) -> list[protocol.Operation]:
        return [protocol.parse(protocol.versioned(c), self.policy) for c in self.commands]

    def remote_run(self) -> RemoteRun:
        return RemoteRun(self.spec, self.cfg, RunStore(self.cfg.runs_dir), self.connector)

    def record(self, setup: SshSetup, command: list[str], inputs: list[Path]) -> RunRecord:
        return RunRecord(
            run_id=RUN_ID,
            host="node",
            command=command,
            dest=str(setup.dest),
            workdir=str(self.base / RUN_ID),
            inputs=[str(p) for p in inputs],
        )


@pytest.fixture
def bench(setup: SshSetup) -> _Bench:
    return _Bench(setup)


def test_a_small_run_makes_one_request(setup: SshSetup, bench: _Bench) -> None:
    inputs = [
        setup.input_file("入力.txt", "データ\n".encode()),
        setup.input_file('it\'s a "name".dat', os.urandom(10_000)),
        setup.input_file("third.bin", os.urandom(10_000)),
    ]
    request = RunRequest(
        host="node",
        command=("sh", "-c", "cat 入力.txt > 出力.txt"),
        inputs=tuple(inputs),
        dest=setup.dest,
    )
    outcome = run_job(bench.spec, bench.cfg, request, bench.connector)
    assert outcome.return_code == 0
    # The start carries the inputs in and, once the command has ended, the results out.
    (start,) = bench.operations()
    assert (start.kind, start.patterns) == ("start", ())
    assert [item.name for item in start.files] == [p.name for p in inputs]
    assert (setup.dest / "出力.txt").read_text() == "データ\n"
    for path in inputs:
        assert (setup.dest / path.name).read_bytes() == path.read_bytes()
    assert not outcome.kept_remote and list(bench.base.iterdir()) == []


def test_inputs_too_long_for_the_start_go_in_upload_requests_first(
    setup: SshSetup, bench: _Bench
) -> None:
    # The names alone would push the start request past the argument limit.
    inputs = [setup.input_file(f"{n:03d}-{'長' * 80}.dat", os.urandom(n * 37)) for n in range(90)]
    carried = protocol.start(
        str(bench.base / RUN_ID), ["sh"], 0, upload_items(inputs, verify_sha256=False)
    )
    assert len(carried.encode()) > UPLOAD_COMMAND_LIMIT
    request = RunRequest(
        host="node",
        command=("sh", "-c", "ls -- *.dat | wc -l > count.txt"),
        inputs=tuple(inputs),
        get=("count.txt",),
        dest=setup.dest,
        keep=True,
    )
    outcome = run_job(bench.spec, bench.cfg, request, bench.connector)
    assert outcome.return_code == 0
    kinds = [op.kind for op in bench.operations()]
    assert kinds[-1] == "start" and set(kinds[:-1]) == {"upload"}
    assert len(kinds) > 2
    assert all(len(command.encode()) <= UPLOAD_COMMAND_LIMIT for command in bench.commands)
    assert bench.operations()[-1].files == ()
    assert bench.operations()[-1].patterns == ("count.txt",)
    uploaded = [item.name for op in bench.operations() for item in op.files]
    assert uploaded == [p.name for p in inputs]
    assert (setup.dest / "count.txt").read_text().strip() == "90"
    # (Their names are too long for the local temp file names, so they are checked remotely.)
    for path in inputs:
        assert (Path(outcome.record.workdir) / path.name).read_bytes() == path.read_bytes()


def test_a_bad_input_on_the_start_exits_74_and_starts_nothing(
    setup: SshSetup, bench: _Bench
) -> None:
    workdir = bench.base / RUN_ID
    (workdir / ".mint-ssh").mkdir(parents=True)
    # The remote .part file of the second input swallows what is written.
    (workdir / "second.dat.part").symlink_to("/dev/null")
    inputs = [
        setup.input_file("first.dat", b"0123456789"),
        setup.input_file("second.dat", b"abc"),
        setup.input_file("third.dat", b"xyz"),
    ]
    record = bench.record(setup, ["sh", "-c", "echo ran > ran.txt"], inputs)
    run = bench.remote_run()
    try:
        with pytest.raises(TransferError, match="size check") as caught:
            run.start_and_wait(record, None, run.describe(inputs))
    finally:
        run.close()
    assert caught.value.exit_status == 74
    assert not (workdir / ".mint-ssh" / "started").exists()
    assert not (workdir / "ran.txt").exists()
    # Nothing is renamed into place unless every input passed its check.
    assert not (workdir / "first.dat").exists()
    assert record.state == "failed" and str(workdir) in record.message


def test_a_second_start_discards_its_inputs_and_runs_nothing_again(
    setup: SshSetup, bench: _Bench
) -> None:
    data = setup.input_file("in.txt", b"first version\n")
    record = bench.record(setup, ["sh", "-c", "cat in.txt; echo ran >> count.txt"], [data])
    run = bench.remote_run()
    try:
        assert run.start_and_wait(record, None, run.describe([data])) == 0
        shown = record.output_offset
        assert shown == len(b"first version\n")
        # As after a reconnect that cannot tell whether the start happened: send it again.
        data.write_bytes(b"a second, longer version\n")
        record.inputs_with_start = True
        assert run.start_and_wait(record, None, run.describe([data])) == 0
    finally:
        run.close()
    workdir = bench.base / RUN_ID
    assert (workdir / "in.txt").read_bytes() == b"first version\n"
    assert (workdir / "count.txt").read_text() == "ran\n"
    assert not (workdir / "in.txt.part").exists()
    assert record.output_offset == shown, "output already shown is not shown again"
    assert not record.inputs_with_start


def test_resume_of_an_unconfirmed_start_sends_the_inputs(setup: SshSetup, bench: _Bench) -> None:
    data = setup.input_file("in.txt", b"resumed input\n")
    setup.dest.mkdir()
    record = bench.record(setup, ["sh", "-c", "cp in.txt out.txt"], [data])
    record.state = "running"
    record.inputs_with_start = True
    RunStore(bench.cfg.runs_dir).save(record)
    outcome = resume_job(RUN_ID, lambda alias: bench.spec, bench.cfg, bench.connector)
    assert outcome.return_code == 0
    assert (setup.dest / "out.txt").read_bytes() == b"resumed input\n"
    assert [op.kind for op in bench.operations()] == ["start"]
    assert bench.operations()[0].files[0].name == "in.txt"


def test_timeout_with_inputs_stops_the_command(setup: SshSetup) -> None:
    data = setup.input_file("in.txt", b"x" * 10_000)
    result = setup.run(
        "run", "node", "--put", str(data), "--timeout", "1", "--dest", str(setup.dest),
        "--", "sh", "-c", "sleep 30",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "longer than 1 s" in result.stderr
    (kept,) = setup.remote_dirs()
    assert (kept / "in.txt").read_bytes() == data.read_bytes()
    shutil.rmtree(kept)


def test_a_start_that_ended_after_its_status_is_fetched_afresh(
    setup: SshSetup, bench: _Bench
) -> None:
    workdir = bench.base / RUN_ID
    workdir.mkdir()
    (workdir / "result.txt").write_text("r\n")
    conn = connect(bench.spec, resolve=lambda a: resolve_host(a, bench.cfg), connect_timeout=10)
    reports: list[DownloadReport] = []

    def unpack(stream: BinaryIO) -> bool:
        reports.append(extract_stream(stream, setup.dest))
        return True

    try:
        # A request that prints a status line and ends instead of waiting for `fetch`.
        paused = conn.watch(f"printf %s {protocol.END_MARK}; echo 0", lambda chunk: None)
        assert paused.stdout == b"0\n" and paused.pending is not None
        wait_for(paused.pending.exit_status_ready, what="the early end")  # type: ignore[attr-defined]
        result = conn.fetch(protocol.fetch(str(workdir)), unpack, paused.pending)
    finally:
        conn.close()
    assert result.return_code == 0 and result.stdout.endswith(b"removed\n")
    assert [r.files for r in reports] == [1]
    assert (setup.dest / "result.txt").read_text() == "r\n"
    assert not workdir.exists()


def test_resume_of_an_unconfirmed_start_without_its_inputs_exits_66(
    setup: SshSetup, bench: _Bench
) -> None:
    gone = setup.root / "inputs" / "gone.dat"
    record = bench.record(setup, ["sh", "-c", "true"], [gone])
    record.state = "running"
    record.inputs_with_start = True
    RunStore(bench.cfg.runs_dir).save(record)

    def no_connection(spec: HostSpec) -> _RecordingHost:
        raise AssertionError("nothing may be sent without the inputs")

    with pytest.raises(NoInputError, match=r"gone\.dat") as caught:
        resume_job(RUN_ID, lambda alias: bench.spec, bench.cfg, no_connection)
    assert caught.value.exit_status == 66
    assert RunStore(bench.cfg.runs_dir).load(RUN_ID).state == "running"
