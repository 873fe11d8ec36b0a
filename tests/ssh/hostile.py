"""A hostile remote host for mint-ssh tests and benchmarks: a real sshd whose user finds the
fake `tar` and `cat` of hostile_remote.py first on PATH."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.ssh.sshd import ThrowawaySshd


class HostileRemote:
    """A plain sshd whose user finds a fake `tar` and `cat` first on PATH (see
    hostile_remote.py); `play(**scenario)` sets what they do, `calm()` makes them real."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = ThrowawaySshd(root / "sshd")
        fake_bin = root / "bin"
        fake_bin.mkdir()
        for tool in ("tar", "cat"):
            script = fake_bin / tool
            script.write_text(
                f"#!/bin/sh\nexec {sys.executable} {Path(__file__).with_name('hostile_remote.py')}"
                f' {tool} "$@"\n'
            )
            script.chmod(0o755)
        login = root / "login.sh"
        login.write_text(
            f'#!/bin/sh\nHOSTILE_DIR={root} PATH={fake_bin}:$PATH exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
        )
        login.chmod(0o755)
        self.server.authorize(forced_command=str(login))

    def play(self, **scenario: Any) -> None:
        (self.root / "scenario.json").write_text(json.dumps(scenario))

    def calm(self) -> None:
        (self.root / "scenario.json").unlink(missing_ok=True)
