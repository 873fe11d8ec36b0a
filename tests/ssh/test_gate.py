"""`mint-ssh gate` as a real authorized_keys forced command, and its decisions in-process."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mint_common.errors import AuthError
from mint_ssh import protocol
from mint_ssh.connection import ExecResult, refused_by_gate
from mint_ssh.gate import decide, make_policy, run_gate
from tests.helpers import run_tool
from tests.ssh.conftest import SshSetup

RUN_ID = "0123456789abcdef0123456789abcdef"


def _ssh(
    setup: SshSetup, command: str, *options: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client, sending `command` through the gated key."""
    result = subprocess.run(
        ["ssh", "-F", str(setup.ssh_config), "-o", "BatchMode=yes", *options, "node", command],
        capture_output=True,
        timeout=30,
        input=stdin,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def _start(workdir: str, argv: list[str], *rest: object) -> str:
    return protocol.versioned(protocol.start(workdir, argv, *rest))  # type: ignore[arg-type]


def test_run_works_unchanged_through_the_gate(gated: SshSetup) -> None:
    data = gated.input_file("in.txt", "ゲート経由\n".encode())
    odd = gated.input_file('it\'s a "name".dat', b"quotes")
    result = gated.run(
        "run", "node", "--put", str(data), "--put", str(odd), "--sha256",
        "--get", "*.txt", "--dest", str(gated.dest),
        "--", "sh", "-c", "cp in.txt out.txt; echo through-gate",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "through-gate" in result.stdout
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
    command = protocol.versioned(protocol.remove(f"/tmp/{RUN_ID}"))
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
    assert decide(_start(workdir, ["~/bin/solve.sh", "x"]), policy).kind == "start"
    assert decide(_start(workdir, ["/home/mint/bin/solve.sh"]), policy).kind == "start"
    with pytest.raises(AuthError):
        decide(_start(workdir, ["/home/other/bin/solve.sh"]), policy)


def test_decide_allows_a_start_carrying_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/mint")
    policy = make_policy(["/tmp"], ["~/bin/solve.sh"])
    items = [protocol.UploadItem("入力 'a'.dat", 10_240, "ab" * 32), protocol.UploadItem("b", 0)]
    op = decide(_start(f"/tmp/{RUN_ID}", ["~/bin/solve.sh"], 5, items), policy)
    assert (op.kind, op.files, op.offset) == ("start", tuple(items), 5)
    with pytest.raises(AuthError):
        decide(_start(f"/tmp/{RUN_ID}", ["/bin/sh"], 0, items), policy)


needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="ssh client is missing")


@pytest.fixture
def planted_run_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A run dir under /tmp that is a symlink to `victim`, as another local user may plant."""
    victim = tmp_path / "victim"
    victim.mkdir()
    workdir = Path(f"/tmp/{uuid.uuid4().hex}")
    workdir.symlink_to(victim)
    yield str(workdir), victim
    workdir.unlink()


@pytest.fixture
def planted_part(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real run dir whose `evil.part` is a symlink to a file outside it."""
    precious = tmp_path / "precious"
    precious.write_text("keep")
    workdir = Path(f"/tmp/{uuid.uuid4().hex}")
    (workdir / protocol.CONTROL_DIR).mkdir(mode=0o700, parents=True)
    (workdir / "evil.part").symlink_to(precious)
    yield str(workdir), precious
    shutil.rmtree(workdir)


def _link_attacks(workdir: str) -> dict[str, str]:
    item = [protocol.UploadItem("evil", 1)]
    return {
        "upload": protocol.upload(workdir, item),
        "start": protocol.start(workdir, ["sh", "-c", "true"], 0, item),
        "fetch": protocol.fetch(workdir),
        "kill": protocol.kill(workdir),
    }


@needs_ssh
@pytest.mark.parametrize("kind", ["upload", "start", "fetch", "kill"])
def test_gate_refuses_a_run_dir_that_is_a_symlink(
    gated: SshSetup, planted_run_dir: tuple[str, Path], kind: str
) -> None:
    workdir, victim = planted_run_dir
    result = _ssh(gated, protocol.versioned(_link_attacks(workdir)[kind]), stdin=b"x")
    assert result.returncode == 77, result.stderr
    assert f"{workdir} is a symlink or not a directory" in result.stderr
    assert list(victim.iterdir()) == []


@needs_ssh
@pytest.mark.parametrize("kind", ["upload", "start"])
def test_gate_refuses_a_part_file_that_is_a_symlink(
    gated: SshSetup, planted_part: tuple[str, Path], kind: str
) -> None:
    workdir, precious = planted_part
    result = _ssh(gated, protocol.versioned(_link_attacks(workdir)[kind]), stdin=b"x")
    assert result.returncode == 77, result.stderr
    assert "evil.part is a symlink" in result.stderr
    assert precious.read_text() == "keep"


@needs_ssh
@pytest.mark.parametrize("kind", ["upload", "start", "fetch"])
def test_the_commands_themselves_do_not_follow_a_run_dir_link(
    setup: SshSetup, planted_run_dir: tuple[str, Path], kind: str
) -> None:
    """Without a gate (or after a link appears past its check) the shell commands refuse."""
    workdir, victim = planted_run_dir
    (victim / "secret").write_text("secret")
    result = _ssh(setup, protocol.versioned(_link_attacks(workdir)[kind]), stdin=b"x")
    assert result.returncode != 0
    assert sorted(p.name for p in victim.iterdir()) == ["secret"]
    assert "secret" not in result.stdout


@needs_ssh
@pytest.mark.parametrize("kind", ["upload", "start"])
def test_the_commands_themselves_do_not_write_through_a_part_link(
    setup: SshSetup, planted_part: tuple[str, Path], kind: str
) -> None:
    workdir, precious = planted_part
    result = _ssh(setup, protocol.versioned(_link_attacks(workdir)[kind]), stdin=b"x")
    assert result.returncode != 0
    assert precious.read_text() == "keep"


@needs_ssh
def test_gate_takes_no_work_base_from_the_client_environment(
    gated: SshSetup, tmp_path: Path
) -> None:
    """The test sshd passes MINT_* on (AcceptEnv), as a careless site might."""
    base = tmp_path / "client-chosen-base"
    base.mkdir()
    workdir = f"{base}/{RUN_ID}"
    result = _ssh(
        gated,
        protocol.versioned(protocol.make_workdir(workdir)),
        "-o", f"SetEnv=MINT_SSH_WORKDIR_BASE={base} MINT_SYSTEM_CONFIG_DIR={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 77, result.stderr
    assert "is outside the work base(s) ('/tmp',)" in result.stderr
    assert not Path(workdir).exists()


def test_gate_ignores_the_work_base_of_the_users_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "config-base"
    (tmp_path / "mint").mkdir()
    (tmp_path / "mint" / "mint-ssh.yaml").write_text(f"workdir_base: {base}\n")
    command = protocol.versioned(protocol.remove(f"{base}/{RUN_ID}"))
    result = run_tool(
        "mint-ssh", "gate", "--allow", "sh", "--no-syslog",
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path),
             "MINT_SSH_WORKDIR_BASE": str(base), "SSH_ORIGINAL_COMMAND": command},
    )  # fmt: skip
    assert result.returncode == 77
    assert "outside the work base(s) ('/tmp',)" in result.stderr


@needs_ssh
def test_a_bare_command_or_a_protocol_1_client_is_told_what_the_key_is_for(
    gated: SshSetup,
) -> None:
    for command in (protocol.remove(f"/tmp/{RUN_ID}"), "cat /etc/passwd"):
        result = _ssh(gated, command)
        assert result.returncode == 77
        assert (
            "refused by the mint-ssh gate (protocol 3): not a mint-ssh request: this key only"
            " runs the commands of mint-ssh protocol 3" in result.stderr
        )


def test_a_gate_of_protocol_1_is_named_to_the_client() -> None:
    """What a gate of mint-tools before protocol versions answers to any of our requests."""
    old_gate = ExecResult(
        77,
        b"",
        b"mint-ssh: error: refused by the mint-ssh gate: the command does not match any"
        b" mint-ssh operation\n",
    )
    with pytest.raises(AuthError) as refused:
        refused_by_gate(old_gate)
    assert str(refused.value) == (
        "mint-ssh protocol mismatch: client speaks protocol 3, gate protocol 1; upgrade the gate"
        " (mint-tools on the remote host) to protocol 3 (upgrade order: the remote gate first,"
        " then its clients)"
    )


def test_a_current_gate_refusal_is_passed_on_as_it_is() -> None:
    line = "refused by the mint-ssh gate (protocol 2): program 'bash' is not in the allowed list"
    with pytest.raises(AuthError, match=r"^refused by the mint-ssh gate \(protocol 2\): program"):
        refused_by_gate(ExecResult(77, b"", f"mint-ssh: error: {line}\n".encode()))


def test_the_documented_authorized_keys_line_restricts_and_names_its_base() -> None:
    repo = Path(__file__).resolve().parents[2]
    lines = [
        line
        for source in (
            repo / "examples/mint-ssh/authorized_keys.example",
            repo / "docs/mint-ssh.md",
        )
        for line in source.read_text().splitlines()
        if line.startswith('command="mint-ssh gate')
    ]
    assert len(lines) == 2
    for line in lines:
        assert ",restrict " in line and " --base /" in line
    text = (repo / "docs/mint-ssh.md").read_text()
    assert "AcceptEnv MINT_*" in text and "PermitUserEnvironment no" in text


def test_a_nested_input_through_a_symlinked_dir_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    workdir = base / RUN_ID
    (workdir / protocol.CONTROL_DIR).mkdir(parents=True, mode=0o700)
    (tmp_path / "elsewhere").mkdir()
    (workdir / "data").symlink_to(tmp_path / "elsewhere")
    policy = make_policy([str(base)], ["sh"])
    upload = protocol.upload(str(workdir), [protocol.UploadItem("data/a.txt", 1)])
    with pytest.raises(AuthError, match="data is a symlink or not a directory"):
        decide(protocol.versioned(upload), policy)
    (workdir / "data").unlink()
    assert decide(protocol.versioned(upload), policy).files[0].name == "data/a.txt"
