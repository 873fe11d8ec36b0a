"""mint-ssh run against a hostile remote host (a real sshd whose `tar` and `cat` lie).

Expected every time: a clear refusal or a warning, bounded memory, nothing written outside
--dest, and the remote dir kept whenever a result could not be taken.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mint_common.errors import TransferError
from mint_ssh.config import SshToolConfig
from mint_ssh.connection import MAX_REPLY, STDERR_KEEP, SshConnection, connect
from mint_ssh.hosts import resolve_host
from tests.ssh.conftest import SshSetup, wait_for
from tests.ssh.hostile import HostileRemote

JOB = ["--", "sh", "-c", "echo result > out.txt; echo started"]
MiB = 1024 * 1024


def _archive(path: Path, members: list[tuple[str, str, bytes]]) -> str:
    """(name, kind, data) -> a tar file the fake tar sends instead of the run dir."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.FIFOTYPE
                archive.addfile(info)
    path.write_bytes(buffer.getvalue())
    return str(path)


def test_a_status_line_without_end_is_refused(hostile: tuple[SshSetup, HostileRemote]) -> None:
    setup, remote = hostile
    remote.play(status_flood=8 * MiB)
    result = setup.run("run", "node", "--dest", str(setup.dest), *JOB)
    assert result.returncode == 74, result.stderr
    assert "more than 1024 bytes without a line end" in result.stderr


@pytest.mark.parametrize(
    "status", ["²", "٣", "1 0", "999"], ids=["super-2", "arabic-3", "two", "999"]
)
def test_an_exit_status_that_is_not_a_shell_status_is_refused(
    hostile: tuple[SshSetup, HostileRemote], status: str
) -> None:
    setup, remote = hostile
    remote.play(status=status)
    result = setup.run("run", "node", "--dest", str(setup.dest), *JOB)
    assert result.returncode == 1, result.stderr
    assert "ended without writing an exit status" in result.stderr
    assert [r["exit_status"] for r in setup.records()] == [None]
    assert len(setup.remote_dirs()) == 1, "its files stay on the remote side"


def test_stderr_flooding_during_the_download_neither_hangs_nor_grows(
    hostile: tuple[SshSetup, HostileRemote],
) -> None:
    setup, remote = hostile
    remote.play(stderr_flood=12 * MiB)
    result = setup.run("run", "node", "--dest", str(setup.dest), *JOB, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (setup.dest / "out.txt").read_text() == "result\n"
    assert "earlier bytes of remote stderr not kept" in result.stderr
    assert result.stderr.count("!") <= 64 * 1024
    assert setup.remote_dirs() == []


def test_an_absurd_long_name_header_is_refused_before_it_is_read(
    hostile: tuple[SshSetup, HostileRemote],
) -> None:
    setup, remote = hostile
    remote.play(long_name=300 * MiB)
    result = setup.run("run", "node", "--dest", str(setup.dest), *JOB, timeout=90)
    assert result.returncode == 74, result.stderr
    assert "announces a 314572800-byte name or pax header" in result.stderr
    assert list(setup.dest.iterdir()) == []
    assert len(setup.remote_dirs()) == 1


def test_a_file_then_a_dir_of_the_same_name_skips_only_that_entry(
    hostile: tuple[SshSetup, HostileRemote], tmp_path: Path
) -> None:
    setup, remote = hostile
    stream = [("./a", "file", b"file a"), ("./a/b", "file", b"b"), ("./c", "file", b"c")]
    remote.play(tar_file=_archive(tmp_path / "stream.tar", stream))
    result = setup.run("run", "node", "--dest", str(setup.dest), *JOB)
    assert result.returncode == 0, result.stderr
    assert (setup.dest / "a").read_bytes() == b"file a"
    assert (setup.dest / "c").read_bytes() == b"c"
    assert "skipped a/b: cannot place it" in result.stderr
    assert "some files could not be placed" in result.stderr
    assert len(setup.remote_dirs()) == 1, "the remote dir stays: a/b was not taken"


def test_unsafe_result_names_exit_65_and_special_files_only_warn(
    hostile: tuple[SshSetup, HostileRemote], tmp_path: Path
) -> None:
    setup, remote = hostile
    stream = [("../escape", "file", b"x"), ("./pipe", "fifo", b""), ("./ok", "file", b"ok")]
    remote.play(tar_file=_archive(tmp_path / "stream.tar", stream))
    result = setup.run("run", "node", "--dest", str(setup.dest), *JOB)
    assert result.returncode == 65, result.stderr
    assert "1 result name(s) were refused as unsafe: ../escape" in result.stderr
    assert (setup.dest / "ok").read_bytes() == b"ok"
    assert not (setup.dest.parent / "escape").exists()
    assert "skipped special file pipe" in result.stderr
    assert len(setup.remote_dirs()) == 1


def test_special_files_alone_are_a_warning(
    hostile: tuple[SshSetup, HostileRemote], tmp_path: Path
) -> None:
    setup, remote = hostile
    stream = [("./pipe", "fifo", b""), ("./ok", "file", b"ok")]
    remote.play(tar_file=_archive(tmp_path / "stream.tar", stream))
    result = setup.run("run", "node", "--dest", str(setup.dest), *JOB)
    assert result.returncode == 0, result.stderr
    assert "skipped special file pipe" in result.stderr


def test_resume_after_a_killed_download_leaves_no_partial_file(
    hostile: tuple[SshSetup, HostileRemote], tmp_path: Path
) -> None:
    setup, remote = hostile
    big = os.urandom(3 * MiB)
    stream = _archive(tmp_path / "stream.tar", [("./big.bin", "file", big)])
    remote.play(tar_file=stream, stall_after=2 * MiB)
    client = setup.popen("run", "node", "--dest", str(setup.dest), *JOB)
    try:
        wait_for(
            lambda: any(p.stat().st_size > MiB for p in setup.dest.glob(".big.bin.*.tmp")),
            what="a partial download",
        )
    finally:
        client.send_signal(signal.SIGKILL)
        client.communicate(timeout=30)
    (record,) = setup.records()
    assert record["state"] == "downloading"
    remote.play(tar_file=stream)
    result = setup.run("resume", record["run_id"])
    assert result.returncode == 0, result.stderr
    assert (setup.dest / "big.bin").read_bytes() == big
    assert sorted(p.name for p in setup.dest.iterdir()) == ["big.bin"]
    assert setup.remote_dirs() == []


def test_a_sigkilled_run_keeps_a_consistent_record(
    hostile: tuple[SshSetup, HostileRemote],
) -> None:
    """SIGKILL while the command runs: the record says `running`, resume finishes the run."""
    setup, _ = hostile
    marker = setup.root / "remote-started"
    client = setup.popen(
        "run", "node", "--dest", str(setup.dest),
        "--", "sh", "-c", f"touch {marker}; sleep 2; echo done > out.txt",
    )  # fmt: skip
    try:
        wait_for(marker.exists, what="the remote command to start")
    finally:
        client.send_signal(signal.SIGKILL)
        client.communicate(timeout=30)
    (record,) = setup.records()
    assert record["state"] == "running"
    result = setup.run("resume", record["run_id"])
    assert result.returncode == 0, result.stderr
    assert (setup.dest / "out.txt").read_text() == "done\n"
    assert setup.remote_dirs() == []


def test_resume_after_a_sigkilled_upload_sends_the_inputs_again(
    hostile: tuple[SshSetup, HostileRemote],
) -> None:
    """SIGKILL while the inputs stream in on the start request: nothing started remotely;
    `resume` sends them again (the partial `.part` is replaced) and the run completes."""
    setup, _ = hostile
    data = setup.input_file("in.bin", os.urandom(64 * MiB))
    client = setup.popen(
        "run", "node", "--put", str(data), "--dest", str(setup.dest),
        "--", "sh", "-c", "wc -c < in.bin > size.txt",
    )  # fmt: skip
    try:
        wait_for(lambda: _part_size(setup) > MiB, what="an upload under way")
    finally:
        client.send_signal(signal.SIGKILL)
        client.communicate(timeout=30)
    (record,) = setup.records()
    assert (record["state"], record["exit_status"]) == ("running", None)
    result = setup.run("resume", record["run_id"])
    assert result.returncode == 0, result.stderr
    assert (setup.dest / "size.txt").read_text().strip() == str(64 * MiB)
    assert setup.remote_dirs() == []


def _part_size(setup: SshSetup) -> int:
    for record in setup.records():
        part = Path(record["workdir"]) / "in.bin.part"
        if part.exists():
            return part.stat().st_size
    return 0


def test_scenarios_reach_the_remote_side(hostile: tuple[SshSetup, HostileRemote]) -> None:
    """The fixture itself: with no scenario the fake tools pass through to the real ones."""
    setup, remote = hostile
    assert not (remote.root / "scenario.json").exists()
    result = subprocess.run(
        ["ssh", "-F", str(setup.ssh_config), "-o", "BatchMode=yes", "node", "cat -- /etc/hostname"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == Path("/etc/hostname").read_text()
    remote.play(status="x")
    assert json.loads((remote.root / "scenario.json").read_text()) == {"status": "x"}


@pytest.fixture
def connection(setup: SshSetup) -> Iterator[SshConnection]:
    cfg = SshToolConfig(ssh_config=setup.ssh_config)
    conn = connect(
        resolve_host("node", cfg), resolve=lambda a: resolve_host(a, cfg), connect_timeout=10
    )
    yield conn
    conn.close()


def test_a_short_reply_that_does_not_end_is_refused(connection: SshConnection) -> None:
    with pytest.raises(TransferError, match=f"more than {MAX_REPLY} bytes"):
        connection.execute("head -c 50000000 /dev/zero")


def test_only_the_tail_of_a_stderr_flood_is_kept(connection: SshConnection) -> None:
    result = connection.execute("head -c 20000000 /dev/zero | tr '\\0' x >&2; echo end >&2")
    assert result.return_code == 0
    dropped = 20_000_000 + len("end\n") - STDERR_KEEP
    assert result.stderr == (
        f"[{dropped} earlier bytes of remote stderr not kept]\n".encode()
        + b"x" * (STDERR_KEEP - 4)
        + b"end\n"
    )
