"""Fixtures for mint-ssh: real OpenSSH sshd instances on 127.0.0.1, a TCP relay, and a
per-test ssh_config / known_hosts / mint-ssh config written into the test's tmp dir."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.helpers import run_tool
from tests.ssh.hostile import HostileRemote
from tests.ssh.sshd import ThrowawaySshd, find_sshd

VENV_BIN = Path(sys.executable).parent


def _require_ssh_binaries() -> None:
    if find_sshd() is None:
        pytest.skip("sshd is missing (apt-get install openssh-server)")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is missing (apt-get install openssh-client)")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawaySshd]:
    """A plain sshd (no forced command) shared by the whole session."""
    _require_ssh_binaries()
    server = ThrowawaySshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gated_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawaySshd]:
    """An sshd whose key may only run `mint-ssh gate` (allowing `sh` and `cp`)."""
    _require_ssh_binaries()
    root = tmp_path_factory.mktemp("gated-sshd")
    server = ThrowawaySshd(root)
    gate = (
        f"{VENV_BIN / 'mint-ssh'} gate --allow sh --allow cp --no-syslog"
        f" --log-file {root / 'gate.log'}"
    )
    server.authorize(forced_command=gate)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hostile_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRemote]:
    _require_ssh_binaries()
    remote = HostileRemote(tmp_path_factory.mktemp("hostile"))
    remote.server.start()
    yield remote
    remote.server.stop()


@pytest.fixture
def hostile(
    hostile_remote: HostileRemote, tmp_path: Path
) -> Iterator[tuple[SshSetup, HostileRemote]]:
    hostile_remote.calm()
    setup = SshSetup(tmp_path, hostile_remote.server)
    yield setup, hostile_remote
    hostile_remote.calm()
    for kept in setup.remote_dirs():  # the remote dirs refused runs keep, even if a test failed
        shutil.rmtree(kept)


class TcpRelay:
    """Forwards 127.0.0.1:<port> to a target port; `drop_all()` cuts every live connection.
    With `pause`, it sleeps that long after each chunk it passes on (a slow link)."""

    def __init__(self, target_port: int, pause: float = 0.0) -> None:
        self.target_port = target_port
        self.pause = pause
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.accepted += 1
                self.connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
                if self.pause:
                    time.sleep(self.pause)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def drop_all(self) -> None:
        with self._lock:
            victims, self.connections = self.connections, []
        for sock in victims:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.drop_all()


class SshSetup:
    """ssh_config, known_hosts and a mint-ssh config for one test, plus ways to run the tool."""

    def __init__(self, root: Path, server: ThrowawaySshd) -> None:
        self.root = root
        self.server = server
        self.known_hosts = root / "known_hosts"
        self.ssh_config = root / "ssh_config"
        self.config = root / "mint-ssh.yaml"
        self.dest = root / "results"
        self.state_dir = root / "state"
        self.known_hosts.write_text(server.known_hosts_line())
        self.write_ssh_config()
        self.write_config()

    def write_ssh_config(self, extra: str = "", alias: str = "node") -> None:
        self.ssh_config.write_text(
            self.server.ssh_config_block(alias, known_hosts=self.known_hosts, extra=extra)
        )

    def connect_through(self, relay: TcpRelay) -> None:
        """Reach the sshd through `relay` (alias `node`, its host key pinned for the relay)."""
        self.write_ssh_config()
        self.ssh_config.write_text(
            self.ssh_config.read_text().replace(f"Port {self.server.port}", f"Port {relay.port}")
        )
        self.known_hosts.write_text(f"[127.0.0.1]:{relay.port} {self.server.host_public_key}\n")

    def write_config(self, **extra: Any) -> None:
        settings = {
            "ssh_config": str(self.ssh_config),
            "state_dir": str(self.state_dir),
            "retry": "retry:2,0.2",
            "connect_timeout": 10,
            **extra,
        }
        self.config.write_text(json.dumps(settings))

    def input_file(self, name: str, data: bytes) -> Path:
        path = self.root / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return path

    def args(self, *args: str) -> list[str]:
        return ["mint-ssh", "--config", str(self.config), *args]

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_tool(*self.args(*args), **kwargs)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        argv = self.args(*args)
        return subprocess.Popen(
            [str(VENV_BIN / argv[0]), *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def records(self) -> list[dict[str, Any]]:
        runs = self.state_dir / "runs"
        if not runs.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]

    def remote_dirs(self) -> list[Path]:
        """Run dirs of this test's runs that still exist (sshd is on this machine)."""
        return [
            Path(r["workdir"])
            for r in self.records()
            if r["workdir"] and Path(r["workdir"]).exists()
        ]


@pytest.fixture
def setup(sshd: ThrowawaySshd, tmp_path: Path) -> SshSetup:
    return SshSetup(tmp_path, sshd)


@pytest.fixture
def gated(gated_sshd: ThrowawaySshd, tmp_path: Path) -> SshSetup:
    return SshSetup(tmp_path, gated_sshd)


@pytest.fixture
def relay(sshd: ThrowawaySshd) -> Iterator[TcpRelay]:
    server = TcpRelay(sshd.port)
    yield server
    server.close()


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ssh_agent(tmp: Path) -> Optional[dict[str, str]]:
    """Start an ssh-agent on a socket in `tmp`; its environment, or None if unavailable."""
    if shutil.which("ssh-agent") is None:
        return None
    sock = tmp / "agent.sock"
    out = subprocess.run(
        ["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, timeout=10, check=True
    )
    pid = next(
        line.split("=")[1].split(";")[0]
        for line in out.stdout.splitlines()
        if "SSH_AGENT_PID=" in line
    )
    return {"SSH_AUTH_SOCK": str(sock), "SSH_AGENT_PID": pid}
