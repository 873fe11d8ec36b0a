"""`mint-ssh run` end to end against a real sshd on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Callable

import pytest

from mint_common.config import load_config
from mint_common.errors import TransferError
from mint_ssh import protocol
from mint_ssh.config import SshToolConfig
from mint_ssh.connection import ExecResult, connect
from mint_ssh.hosts import resolve_host
from mint_ssh.transfer import UPLOAD_COMMAND_LIMIT, upload_files
from tests.ssh.conftest import SshSetup, TcpRelay, ssh_agent, wait_for
from tests.ssh.sshd import ThrowawaySshd

BINARY = bytes(range(256)) * 40


def test_happy_path_moves_text_binary_and_japanese_names(setup: SshSetup) -> None:
    text = setup.input_file("input.txt", b"line one\n")
    binary = setup.input_file("data.bin", BINARY)
    japanese = setup.input_file("入力データ.txt", "計算条件\n".encode())
    exit_file = setup.root / "exit-code"
    result = setup.run(
        "run", "node",
        "--put", str(text), "--put", str(binary), "--put", str(japanese),
        "--dest", str(setup.dest), "--exit-code-file", str(exit_file),
        "--", "sh", "-c", "cat input.txt; cat 入力データ.txt > 結果.txt; cp data.bin out.bin; echo to-stderr >&2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # the remote stdout is our stdout, its stderr our stderr (as with ssh)
    assert result.stdout == "line one\n"
    assert "to-stderr" in result.stderr and "line one" not in result.stderr
    assert (setup.dest / "out.bin").read_bytes() == BINARY
    assert (setup.dest / "結果.txt").read_text() == "計算条件\n"
    assert (setup.dest / "入力データ.txt").read_text() == "計算条件\n"
    assert not (setup.dest / ".mint-ssh").exists()
    assert exit_file.read_text() == "0\n"
    (record,) = setup.records()
    assert record["state"] == "done" and record["exit_status"] == 0
    assert not Path(record["workdir"]).exists(), "the remote dir should be removed"


def test_nonzero_exit_keeps_remote_dir_and_reports_status(setup: SshSetup) -> None:
    exit_file = setup.root / "exit-code"
    result = setup.run(
        "run", "node", "--dest", str(setup.dest), "--exit-code-file", str(exit_file),
        "--", "sh", "-c", "echo partial > partial.txt; exit 3",
    )  # fmt: skip
    assert result.returncode == 1
    assert "exited with status 3" in result.stderr
    assert exit_file.read_text() == "3\n"
    assert (setup.dest / "partial.txt").read_text() == "partial\n"
    (kept,) = setup.remote_dirs()
    assert str(kept) in result.stderr
    assert (kept / "partial.txt").exists()
    shutil.rmtree(kept)


def test_keep_flag_leaves_the_remote_dir(setup: SshSetup) -> None:
    result = setup.run("run", "node", "--keep", "--dest", str(setup.dest), "--", "true")
    assert result.returncode == 0, result.stderr
    (kept,) = setup.remote_dirs()
    assert oct(kept.stat().st_mode & 0o777) == "0o700"
    shutil.rmtree(kept)


def test_missing_input_exits_66_before_connecting(setup: SshSetup) -> None:
    result = setup.run("run", "node", "--put", str(setup.root / "nope.dat"), "--", "true")
    assert result.returncode == 66
    assert "nope.dat" in result.stderr
    assert setup.records() == []


def test_get_patterns_fetch_only_matching_files(setup: SshSetup) -> None:
    result = setup.run(
        "run", "node", "--get", "*.csv", "--get", "sub", "--dest", str(setup.dest),
        "--", "sh", "-c", "echo a > a.csv; echo b > b.log; mkdir sub; echo c > sub/c.txt",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fetched = sorted(str(p.relative_to(setup.dest)) for p in setup.dest.rglob("*") if p.is_file())
    assert fetched == ["a.csv", "sub/c.txt"]


def test_remote_symlink_and_fifo_are_not_followed(setup: SshSetup) -> None:
    result = setup.run(
        "run", "node", "--dest", str(setup.dest),
        "--", "sh", "-c", "ln -s /etc/passwd passwd; mkdir d; ln -s /etc d/etc; mkfifo pipe; echo ok > ok.txt",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (setup.dest / "ok.txt").read_text() == "ok\n"
    assert not (setup.dest / "passwd").exists() and not (setup.dest / "passwd").is_symlink()
    assert not (setup.dest / "d" / "etc").exists()
    assert not (setup.dest / "pipe").exists()
    assert "skipped symlink passwd -> /etc/passwd" in result.stderr
    assert "skipped special file pipe" in result.stderr


def test_local_symlink_in_dest_is_not_written_through(setup: SshSetup, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    setup.dest.mkdir()
    (setup.dest / "out").symlink_to(outside)
    result = setup.run(
        "run", "node", "--dest", str(setup.dest),
        "--", "sh", "-c", "mkdir out; echo x > out/evil.txt",
    )  # fmt: skip
    assert result.returncode == 65, result.stderr
    assert list(outside.iterdir()) == []
    assert "refused as unsafe: out, out/evil.txt" in result.stderr
    (kept,) = setup.remote_dirs()
    shutil.rmtree(kept)


def test_unknown_host_key_is_refused_with_fingerprint(setup: SshSetup) -> None:
    setup.known_hosts.write_text("")
    result = setup.run("run", "node", "--", "true")
    assert result.returncode == 77
    assert "unknown" in result.stderr and "SHA256:" in result.stderr
    assert setup.known_hosts.read_text() == ""


def test_changed_host_key_is_refused(setup: SshSetup, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
        check=True, timeout=30,
    )  # fmt: skip
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    setup.known_hosts.write_text(f"[127.0.0.1]:{setup.server.port} {other}\n")
    result = setup.run("run", "node", "--accept-new-host-key", "--", "true")
    assert result.returncode == 77
    assert "CHANGED" in result.stderr and "SHA256:" in result.stderr


def test_accept_new_host_key_records_it(setup: SshSetup) -> None:
    setup.known_hosts.write_text("")
    first = setup.run(
        "run", "node", "--accept-new-host-key", "--dest", str(setup.dest), "--", "true"
    )
    assert first.returncode == 0, first.stderr
    assert setup.server.host_public_key in setup.known_hosts.read_text()
    second = setup.run("run", "node", "--dest", str(setup.dest), "--", "true")
    assert second.returncode == 0, second.stderr


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc is missing (netcat-openbsd)")
def test_proxy_command_through_nc(setup: SshSetup) -> None:
    setup.write_ssh_config(extra="  ProxyCommand nc %h %p\n  ServerAliveInterval 5\n")
    result = setup.run(
        "run", "node", "-v", "--dest", str(setup.dest), "--", "sh", "-c", "echo via-proxy"
    )
    assert result.returncode == 0, result.stderr
    assert "via-proxy" in result.stdout
    assert "via ProxyCommand" in result.stderr


def test_proxy_command_through_a_python_relay(setup: SshSetup) -> None:
    relay = Path(__file__).with_name("stdio_relay.py")
    setup.write_ssh_config(extra=f"  ProxyCommand {sys.executable} {relay} %h %p\n")
    result = setup.run("run", "node", "--dest", str(setup.dest), "--", "sh", "-c", "echo relayed")
    assert result.returncode == 0, result.stderr
    assert "relayed" in result.stdout


def test_proxy_jump_through_the_same_sshd(setup: SshSetup) -> None:
    server = setup.server
    setup.ssh_config.write_text(
        server.ssh_config_block("jump", known_hosts=setup.known_hosts)
        + server.ssh_config_block("node", known_hosts=setup.known_hosts, extra="  ProxyJump jump\n")
    )
    result = setup.run("run", "node", "--dest", str(setup.dest), "--", "sh", "-c", "echo jumped")
    assert result.returncode == 0, result.stderr
    assert "jumped" in result.stdout


def test_passphrase_key_without_terminal_exits_77(setup: SshSetup, tmp_path: Path) -> None:
    key = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(key)],
        check=True, timeout=30,
    )  # fmt: skip
    setup.ssh_config.write_text(
        setup.ssh_config.read_text().replace(str(setup.server.client_key), str(key))
    )
    result = setup.run("run", "node", "--", "true", stdin=subprocess.DEVNULL)
    assert result.returncode == 77
    assert "needs a passphrase" in result.stderr
    assert "secret-pass" not in result.stderr


def test_ssh_agent_key_is_used(setup: SshSetup, tmp_path: Path) -> None:
    agent = ssh_agent(tmp_path)
    if agent is None:
        pytest.skip("ssh-agent is missing (openssh-client)")
    try:
        env = {**os.environ, **agent}
        subprocess.run(
            ["ssh-add", "-q", str(setup.server.client_key)], env=env, check=True, timeout=10
        )
        setup.ssh_config.write_text(
            setup.ssh_config.read_text().replace(
                str(setup.server.client_key), str(tmp_path / "none")
            )
        )
        result = setup.run("run", "node", "-v", "--dest", str(setup.dest), "--", "true", env=env)
        assert result.returncode == 0, result.stderr
        assert "with agent key" in result.stderr
    finally:
        os.kill(int(agent["SSH_AGENT_PID"]), signal.SIGTERM)


def test_unreachable_host_exits_69_after_retries(setup: SshSetup) -> None:
    setup.ssh_config.write_text(
        setup.ssh_config.read_text().replace(f"Port {setup.server.port}", "Port 1")
    )
    result = setup.run("run", "node", "--", "true")
    assert result.returncode == 69
    assert "after 3 attempt(s)" in result.stderr


def test_timeout_stops_the_remote_command(setup: SshSetup) -> None:
    result = setup.run(
        "run", "node", "--timeout", "1", "--dest", str(setup.dest), "--", "sleep", "30"
    )
    assert result.returncode == 1
    assert "longer than 1 s" in result.stderr
    for kept in setup.remote_dirs():
        shutil.rmtree(kept)


def test_connection_cut_mid_command_reconnects_and_completes(
    setup: SshSetup, relay: TcpRelay
) -> None:
    setup.connect_through(relay)
    setup.write_config(retry="retry:5,0.5")
    process = setup.popen(
        "run", "node", "--dest", str(setup.dest),
        "--", "sh", "-c",
        "echo out-1-of-2; echo err-1-of-2 >&2; sleep 2; echo out-2-of-2; echo err-2-of-2 >&2;"
        " echo done > result.txt",
    )  # fmt: skip
    wait_for(lambda: any(r["state"] == "running" for r in setup.records()), what="the start")
    relay.drop_all()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "reconnecting" in err
    assert relay.accepted >= 2
    assert (setup.dest / "result.txt").read_text() == "done\n"
    # Output already shown is not shown again after the reconnect, on either stream.
    assert out == "out-1-of-2\nout-2-of-2\n"
    assert err.count("err-1-of-2") == 1 and err.count("err-2-of-2") == 1


def test_connection_cut_during_the_download_fetches_again(setup: SshSetup) -> None:
    # A slow link (about 10 MB/s), so that the cut lands in the middle of the result stream.
    relay = TcpRelay(setup.server.port, pause=0.005)
    try:
        setup.connect_through(relay)
        setup.write_config(retry="retry:5,0.5")
        process = setup.popen(
            "run", "node", "--dest", str(setup.dest), "--", "sh", "-c",
            "head -c 20000000 /dev/urandom > big.bin; sha256sum big.bin > big.sha256",
        )  # fmt: skip
        wait_for(lambda: list(setup.dest.glob(".big.bin.*.tmp")), what="the download")
        relay.drop_all()
        _out, err = process.communicate(timeout=120)
    finally:
        relay.close()
    assert process.returncode == 0, err
    assert "download: " in err and "reconnecting" in err
    assert relay.accepted >= 2
    digest = hashlib.sha256((setup.dest / "big.bin").read_bytes()).hexdigest()
    assert (setup.dest / "big.sha256").read_text().split()[0] == digest
    assert not list(setup.dest.glob(".*.tmp")), "the cut-off partial file is gone"
    assert setup.remote_dirs() == []


def test_sigkill_then_resume_delivers_results(setup: SshSetup) -> None:
    process = setup.popen(
        "run", "node", "--dest", str(setup.dest),
        "--", "sh", "-c", "sleep 2; echo finished > result.txt",
    )  # fmt: skip
    wait_for(lambda: any(r["state"] == "running" for r in setup.records()), what="the start")
    wait_for(lambda: any((d / ".mint-ssh" / "pid").exists() for d in setup.remote_dirs()))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    (record,) = setup.records()
    assert record["state"] == "running"
    result = setup.run("resume", record["run_id"])
    assert result.returncode == 0, result.stderr
    assert (setup.dest / "result.txt").read_text() == "finished\n"
    listing = setup.run("runs", "--json")
    assert '"state": "done"' in listing.stdout
    again = setup.run("resume", record["run_id"])
    assert again.returncode == 0


def test_sigterm_leaves_a_resumable_record_and_says_how(setup: SshSetup) -> None:
    process = setup.popen(
        "run", "node", "--dest", str(setup.dest), "--", "sh", "-c", "sleep 1; echo x > r"
    )
    wait_for(lambda: any((d / ".mint-ssh" / "pid").exists() for d in setup.remote_dirs()))
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 143  # 128 + SIGTERM, as a shell reports it
    assert "mint-ssh: error: interrupted by SIGTERM" in err
    assert "()" not in err
    (record,) = setup.records()
    assert f"mint-ssh resume {record['run_id']}" in err
    assert record["state"] == "running"
    resumed = setup.run("resume", record["run_id"])
    assert resumed.returncode == 0, resumed.stderr
    assert (setup.dest / "r").read_text() == "x\n"


def test_check_reports_every_step(setup: SshSetup) -> None:
    setup.write_config(remote_program="/bin/sh")
    result = setup.run("check", "node", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "connect",
        "host key",
        "work base writable",
        "free space",
        "remote program",
        "latency",
    ):
        assert name in result.stdout
    assert "pinned" in result.stdout and "SHA256:" in result.stdout


def test_check_fails_on_missing_program_and_unknown_key(setup: SshSetup) -> None:
    missing = setup.run("check", "node")
    assert missing.returncode != 0
    assert "execute_remote-side_program_ssh.sh" in missing.stdout
    setup.known_hosts.write_text("")
    unknown = setup.run("check", "node", "--json")
    assert unknown.returncode != 0
    assert "SHA256:" in unknown.stdout


def test_upload_size_mismatch_is_a_transfer_error(setup: SshSetup, tmp_path: Path) -> None:
    cfg = load_config(SshToolConfig, "mint-ssh", config_file=setup.config)
    spec = resolve_host("node", cfg)
    workdir = tmp_path / ("ab" * 16)
    workdir.mkdir()
    # The remote .part file of the second input swallows what is written: the size check
    # must notice, and the inputs around it still go to the right files.
    (workdir / "second.dat.part").symlink_to("/dev/null")
    inputs = [
        setup.input_file("first.dat", b"0123456789"),
        setup.input_file("second.dat", b"abc"),
        setup.input_file("third.dat", b"xyz"),
    ]
    conn = connect(spec, resolve=lambda a: resolve_host(a, cfg), connect_timeout=10)
    try:
        with pytest.raises(TransferError, match="size check") as caught:
            upload_files(conn, str(workdir), inputs, verify_sha256=False)
    finally:
        conn.close()
    assert caught.value.exit_status == 74
    assert (workdir / "first.dat").read_bytes() == b"0123456789"
    assert not (workdir / "second.dat").exists()
    assert not (workdir / "third.dat").exists()


def test_many_inputs_are_split_into_requests_and_arrive_intact(
    setup: SshSetup, tmp_path: Path
) -> None:
    cfg = load_config(SshToolConfig, "mint-ssh", config_file=setup.config)
    spec = resolve_host("node", cfg)
    workdir = tmp_path / ("cd" * 16)
    # In one request these names would pass Linux's 128 KiB limit for one argument.
    inputs = [_long_named_input(setup.root / "inputs", n) for n in range(140)]
    conn = connect(spec, resolve=lambda a: resolve_host(a, cfg), connect_timeout=10)
    try:
        upload_files(conn, str(workdir), inputs, verify_sha256=False)
    finally:
        conn.close()
    for path in inputs:
        assert (workdir / path.name).read_bytes() == path.read_bytes()


def _long_named_input(folder: Path, n: int) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{n:03d}-{'長' * 80}.dat"
    path.write_bytes(os.urandom(n * 37))
    return path


class _RecordingHost:
    """A RemoteHost that keeps each upload request and the data sent with it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []

    def upload(
        self, command: str, blocks: Iterable[bytes], advance: Callable[[int], None]
    ) -> ExecResult:
        self.requests.append((command, b"".join(blocks)))
        return ExecResult(0, b"", b"")


def test_upload_requests_stay_under_the_argument_limit(tmp_path: Path) -> None:
    inputs = [_long_named_input(tmp_path, n) for n in range(200)]
    host = _RecordingHost()
    upload_files(host, f"/tmp/{'ef' * 16}", inputs, verify_sha256=True)  # type: ignore[arg-type]
    assert len(host.requests) > 1
    assert all(len(command.encode()) <= UPLOAD_COMMAND_LIMIT for command, _ in host.requests)
    assert b"".join(data for _, data in host.requests) == b"".join(
        path.read_bytes() for path in inputs
    )
    policy = protocol.GatePolicy(bases=("/tmp",), allowed=())
    sent = [
        item.name
        for command, _ in host.requests
        for item in protocol.parse(protocol.versioned(command), policy).files
    ]
    assert sent == [path.name for path in inputs]


class _ChangingHost:
    """A RemoteHost whose upload rewrites the local file before reading it."""

    def __init__(self, path: Path, content: bytes) -> None:
        self.path = path
        self.content = content

    def upload(
        self, command: str, blocks: Iterable[bytes], advance: Callable[[int], None]
    ) -> ExecResult:
        self.path.write_bytes(self.content)
        return ExecResult(0, b"".join(blocks), b"")


@pytest.mark.parametrize(
    ("content", "change"),
    [(b"0123456789more", "grew"), (b"01234", "shrank")],
    ids=["grew", "shrank"],
)
def test_input_that_changes_size_during_upload_is_a_transfer_error(
    tmp_path: Path, content: bytes, change: str
) -> None:
    local = tmp_path / "changes.dat"
    local.write_bytes(b"0123456789")
    host = _ChangingHost(local, content)
    with pytest.raises(TransferError, match=f"{change} while it was being uploaded"):
        upload_files(host, f"/tmp/{'ef' * 16}", [local], verify_sha256=False)  # type: ignore[arg-type]


def test_sshd_fixture_runs_as_current_user(sshd: ThrowawaySshd) -> None:
    assert sshd.process is not None and sshd.process.poll() is None
