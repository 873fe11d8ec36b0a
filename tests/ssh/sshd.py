"""A throwaway OpenSSH sshd on 127.0.0.1 for tests and benchmarks.

Everything it needs is generated under one directory: host key, client key,
authorized_keys, sshd_config, pid file and log. It runs as whoever starts it
(root or a normal user) on an unprivileged ephemeral port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> Optional[str]:
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("sshd")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path, key_type: str = "ed25519", passphrase: str = "") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", "mint-test", "-f", str(path)],
        check=True,
        timeout=30,
        capture_output=True,
    )


class ThrowawaySshd:
    """Start with `start()`, stop with `stop()`; `authorize(pubkey, forced_command)` edits keys."""

    def __init__(
        self, root: Path, *, port: Optional[int] = None, run_as: Optional[str] = None
    ) -> None:
        sshd = find_sshd()
        if sshd is None:
            raise RuntimeError("sshd is not installed (apt-get install openssh-server)")
        self.sshd = sshd
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.run_as = run_as
        self.user = run_as or pwd.getpwuid(os.getuid()).pw_name
        self.host_key = root / "ssh_host_ed25519_key"
        self.client_key = root / "id_ed25519"
        self.authorized_keys = root / "authorized_keys"
        self.config = root / "sshd_config"
        self.pid_file = root / "sshd.pid"
        self.log_file = root / "sshd.log"
        self.process: Optional[subprocess.Popen[bytes]] = None
        if not self.host_key.exists():
            _keygen(self.host_key)
        if not self.client_key.exists():
            _keygen(self.client_key)
        self.authorize()
        self._write_config()
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            for path in [root, *root.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def host_public_key(self) -> str:
        """`type base64` of the host key, as it appears in known_hosts."""
        fields = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        return f"{fields[0]} {fields[1]}"

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_public_key}\n"

    def authorize(
        self, forced_command: Optional[str] = None, extra_keys: tuple[Path, ...] = ()
    ) -> None:
        lines = []
        for key in (self.client_key, *extra_keys):
            public = Path(f"{key}.pub").read_text().strip()
            if forced_command:
                quoted = forced_command.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'command="{quoted}",restrict {public}')
            else:
                lines.append(public)
        self.authorized_keys.write_text("\n".join(lines) + "\n")
        self.authorized_keys.chmod(0o600)

    def _write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {self.port}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pid_file}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "MaxSessions 50",
                    "MaxStartups 50:30:100",
                    "LogLevel VERBOSE",
                    "Subsystem sftp internal-sftp",
                    # A careless site passes MINT_* on; the gate must not care (issue 12).
                    "AcceptEnv MINT_*",
                    "",
                ]
            )
        )

    def _command(self) -> list[str]:
        command = [self.sshd, "-D", "-e", "-f", str(self.config)]
        if self.run_as is None:
            return command
        entry = pwd.getpwnam(self.run_as)
        # An unprivileged sshd can only log its own user in, as in a CI job run as a normal user.
        return [
            "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
            "--", *command,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        if os.geteuid() == 0 and self.run_as is None:
            # Privilege separation needs this directory when sshd runs as root.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited at start:\n{self.log_file.read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
            ):
                if sock.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start within {timeout} s:\n{self.log_file.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def ssh_config_block(self, alias: str, *, known_hosts: Path, extra: str = "") -> str:
        return (
            f"Host {alias}\n"
            "  HostName 127.0.0.1\n"
            f"  Port {self.port}\n"
            f"  User {self.user}\n"
            f"  IdentityFile {self.client_key}\n"
            f"  UserKnownHostsFile {known_hosts}\n" + extra
        )
