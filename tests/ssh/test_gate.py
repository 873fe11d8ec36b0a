"""`mint-ssh gate` as a real authorized_keys forced command, and its decisions in-process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mint_common.errors import AuthError
from mint_ssh import protocol
from mint_ssh.gate import decide, make_policy, run_gate
from tests.helpers import run_tool
from tests.ssh.conftest import SshSetup

RUN_ID = "0123456789abcdef0123456789abcdef"


def _ssh(setup: SshSetup, command: str) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client, sending `command` through the gated key."""
    return subprocess.run(
        ["ssh", "-F", str(setup.ssh_config), "-o", "BatchMode=yes", "node", command],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_run_works_unchanged_through_the_gate(gated: SshSetup) -> None:
    data = gated.input_file("in.txt", "ゲート経由\n".encode())
    odd = gated.input_file('it\'s a "name".dat', b"quotes")
    result = gated.run(
        "run", "node", "--put", str(data), "--put", str(odd), "--sha256",
        "--get", "*.txt", "--dest", str(gated.dest),
        "--", "sh", "-c", "cp in.txt out.txt; echo through-gate",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "through-gate" in result.stderr
    assert (gated.dest / "out.txt").read_text() == "ゲート経由\n"
    assert "sha256 checked" in result.stderr
    assert not (gated.dest / odd.name).exists(), "--get *.txt fetches only .txt files"
    assert gated.remote_dirs() == []


def test_gate_refuses_a_program_not_allowed(gated: SshSetup) -> None:
    result = gated.run("run", "node", "--dest", str(gated.dest), "--", "bash", "-i")
    assert result.returncode == 77
    assert "'bash' is not in the allowed list" in result.stderr
    for kept in gated.remote_dirs():
        shutil.rmtree(kept)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="ssh client is missing (openssh-client)")
@pytest.mark.parametrize(
    "command",
    [
        "cat /etc/passwd",
        "bash -i",
        "",
        protocol.upload("/etc", [protocol.UploadItem("evil", 1)]),
        protocol.upload(f"/root/{RUN_ID}", [protocol.UploadItem("evil", 1)]),
        protocol.remove(f"/tmp/{RUN_ID}") + "; cat /etc/passwd",
        protocol.fetch("/etc"),
        "internal-sftp",
        protocol.start(f"/tmp/{RUN_ID}", ["bash"], 0, [protocol.UploadItem("evil", 1)]),
        protocol.start(f"/root/{RUN_ID}", ["sh"], 0, [protocol.UploadItem("evil", 1)]),
    ],
    ids=[
        "cat-passwd",
        "interactive-shell",
        "login-without-command",
        "upload-to-etc",
        "upload-outside-base",
        "appended-command",
        "tar-of-etc",
        "sftp-subsystem",
        "start-with-inputs-of-other-program",
        "start-with-inputs-outside-base",
    ],
)
def test_gate_refuses_other_requests(gated: SshSetup, command: str) -> None:
    result = _ssh(gated, command)
    assert result.returncode == 77, result.stdout + result.stderr
    assert "refused" in result.stderr
    assert "root:" not in result.stdout
    log = (gated.server.root / "gate.log").read_text()
    assert "refused from 127.0.0.1" in log


def test_gate_without_original_command_refuses(tmp_path: Path) -> None:
    result = run_tool(
        "mint-ssh", "gate", "--allow", "sh", "--no-syslog", env={"PATH": "/usr/bin:/bin"}
    )
    assert result.returncode == 77
    assert "SSH_ORIGINAL_COMMAND" in result.stderr


def test_gate_executes_exactly_the_accepted_command() -> None:
    policy = make_policy(["/tmp"], ["sh"])
    command = protocol.remove(f"/tmp/{RUN_ID}")
    executed: list[tuple[str, list[str]]] = []
    run_gate(command, policy, execute=lambda path, argv: executed.append((path, argv)))
    assert executed == [("/bin/sh", ["/bin/sh", "-c", command])]


def test_gate_refusal_never_executes() -> None:
    policy = make_policy(["/tmp"], ["sh"])
    executed: list[object] = []
    with pytest.raises(AuthError):
        run_gate("rm -rf /", policy, execute=lambda path, argv: executed.append(argv))
    assert executed == []


def test_decide_expands_home_in_allowed_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/mint")
    policy = make_policy(["/tmp"], ["~/bin/solve.sh"])
    workdir = f"/tmp/{RUN_ID}"
    assert decide(protocol.start(workdir, ["~/bin/solve.sh", "x"]), policy).kind == "start"
    assert decide(protocol.start(workdir, ["/home/mint/bin/solve.sh"]), policy).kind == "start"
    with pytest.raises(AuthError):
        decide(protocol.start(workdir, ["/home/other/bin/solve.sh"]), policy)


def test_decide_allows_a_start_carrying_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/mint")
    policy = make_policy(["/tmp"], ["~/bin/solve.sh"])
    items = [protocol.UploadItem("入力 'a'.dat", 10_240, "ab" * 32), protocol.UploadItem("b", 0)]
    op = decide(protocol.start(f"/tmp/{RUN_ID}", ["~/bin/solve.sh"], 5, items), policy)
    assert (op.kind, op.files, op.offset) == ("start", tuple(items), 5)
    with pytest.raises(AuthError):
        decide(protocol.start(f"/tmp/{RUN_ID}", ["/bin/sh"], 0, items), policy)
