"""Shared set-up for the mint-ssh benchmarks: a throwaway sshd and matching client config."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.ssh.sshd import ThrowawaySshd  # noqa: E402

BIN = Path(sys.executable).parent


class Bench:
    """An sshd plus an ssh_config (alias `node`), known_hosts and a mint-ssh config."""

    def __init__(self, root: Path, login_user: Optional[str] = None) -> None:
        self.root = root
        self.login_user = login_user
        self.server = ThrowawaySshd(root / "sshd", run_as=login_user)
        self.known_hosts = root / "known_hosts"
        self.ssh_config = root / "ssh_config"
        self.config = root / "mint-ssh.yaml"

    def start(self) -> None:
        self.server.start()
        self.known_hosts.write_text(self.server.known_hosts_line())
        self.ssh_config.write_text(
            self.server.ssh_config_block(
                "node", known_hosts=self.known_hosts, extra="  BatchMode yes\n"
            )
        )
        self.config.write_text(
            json.dumps({"ssh_config": str(self.ssh_config), "state_dir": str(self.root / "state")})
        )

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def bench(root: Path, login_user: Optional[str] = None) -> Iterator[Bench]:
    setup = Bench(root, login_user)
    setup.start()
    try:
        yield setup
    finally:
        setup.stop()


def seconds(fn: Callable[[], None]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began
