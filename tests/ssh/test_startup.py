"""Start-up cost of `mint-ssh run`: imports put off until used, and a socket that neither holds
back our short messages nor delays its acknowledgements."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mint_ssh.config import SshToolConfig
from mint_ssh.connection import _PromptAckSocket, connect
from mint_ssh.hosts import resolve_host
from mint_ssh.lazyimport import defer_import
from tests.ssh.conftest import SshSetup


@pytest.fixture
def counting_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module on sys.path that appends a line to a file each time its code runs."""
    name = f"mint_lazy_probe_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "loads"
    (tmp_path / f"{name}.py").write_text(
        f"with open({str(marker)!r}, 'a') as handle:\n    handle.write('loaded\\n')\nANSWER = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def _loads(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_deferred_module_runs_only_when_an_attribute_is_used(
    counting_module: tuple[str, Path],
) -> None:
    name, marker = counting_module
    defer_import(name)
    module = __import__(name)  # an `import name` statement, as paramiko.config does
    again = __import__(name)  # a second import statement must not load it either
    assert _loads(marker) == 0
    assert module.ANSWER == 42 and again.ANSWER == 42
    assert _loads(marker) == 1
    assert sys.modules[name].ANSWER == 42 and _loads(marker) == 1


def test_deferring_a_missing_module_changes_nothing() -> None:
    defer_import("mint_no_such_module_anywhere")
    assert "mint_no_such_module_anywhere" not in sys.modules
    with pytest.raises(ImportError):
        __import__("mint_no_such_module_anywhere")


def _resolve_in_a_fresh_process(ssh_config: Path, after: str = "") -> str:
    """Resolve `node` the way `mint-ssh run` does (CLI imported first); print `after`'s value.

    In a subprocess with stdin on /dev/null: a fresh interpreter, and invoke (which runs
    `Match exec`) reads stdin, which pytest forbids."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import mint_ssh.cli
        from mint_ssh.config import SshToolConfig
        from mint_ssh.hosts import resolve_host
        import mint_ssh.connection, paramiko
        spec = resolve_host("node", SshToolConfig(ssh_config=Path({str(ssh_config)!r})))
        print(spec.hostname, spec.port, spec.user)
        print({after or "''"})
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return out.stdout


def test_match_exec_in_ssh_config_still_works(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        'Match exec "test 1 = 1"\n  Port 2200\nMatch exec "false"\n  User nobody\n'
        "Host node\n  HostName calc.example.jp\n  User mint\n"
    )
    assert _resolve_in_a_fresh_process(ssh_config).splitlines()[0] == "calc.example.jp 2200 mint"


def test_a_run_loads_paramiko_without_invoke(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host node\n  HostName calc.example.jp\n  Port 2222\n  User mint\n")
    loaded = 'sorted(m for m in sys.modules if m.startswith("invoke."))'
    out = _resolve_in_a_fresh_process(ssh_config, after=loaded).splitlines()
    assert out == ["calc.example.jp 2222 mint", "[]"]


def test_direct_connection_sends_at_once_and_acknowledges_promptly(setup: SshSetup) -> None:
    cfg = SshToolConfig(ssh_config=setup.ssh_config)
    conn = connect(
        resolve_host("node", cfg), resolve=lambda a: resolve_host(a, cfg), connect_timeout=10
    )
    try:
        sock = conn.transport.sock
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        if hasattr(socket, "TCP_QUICKACK"):
            assert isinstance(sock, _PromptAckSocket)
        result = conn.execute("printf 'a%.0s' $(seq 50000)")
        assert result.return_code == 0 and result.stdout == b"a" * 50000
    finally:
        conn.close()
