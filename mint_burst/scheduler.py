"""The scheduler interface (the seed's get_status / join_cluster / leave_cluster /
check_version, plus node_jobs) and what the adapters share.

A command that fails, times out or prints something we cannot parse raises:
an unreadable queue must never look like an empty one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Protocol

from mint_burst.model import QueueStatus
from mint_common.errors import UnavailableError
from mint_common.proc import run_command

Runner = Callable[..., "CompletedLike"]


class CompletedLike(Protocol):
    returncode: int
    stdout: str
    stderr: str


class Scheduler(Protocol):
    def get_status(self) -> QueueStatus:
        """Pending and running jobs of the burst queue, and the state of its nodes."""

    def join_cluster(self, node: str) -> None:
        """Put a freshly booted node into service (resume it if it is down or drained)."""

    def leave_cluster(self, node: str, *, force: bool = False) -> bool:
        """Drain the node; if it runs no job (or `force`), take it down and return True."""

    def node_jobs(self, node: str) -> list[str]:
        """Ids of the jobs running on the node, in any queue."""

    def check_version(self) -> str:
        """The scheduler's version, proving its commands are present and answer."""


class QueueScheduler(Scheduler, Protocol):
    """A real scheduler's adapter: it can also tell whether the configured queue exists."""

    def check_queue(self) -> None:
        """Raise ConfigError if the queue does not exist (UnavailableError if no answer)."""


class CommandRunner:
    """Runs scheduler commands: argument lists, a timeout, non-zero exit is an error."""

    def __init__(
        self,
        *,
        timeout: float,
        admin_prefix: Sequence[str] = (),
        runner: Runner = run_command,
    ) -> None:
        self.timeout = timeout
        self.admin_prefix = list(admin_prefix)
        self._runner = runner

    def run(self, argv: Sequence[str], *, admin: bool = False) -> str:
        return self.checked(argv, self.call(argv, admin=admin))

    def call(self, argv: Sequence[str], *, admin: bool = False) -> CompletedLike:
        """Run and return the result whatever its exit status (the caller reads refusals)."""
        full = [*self.admin_prefix, *argv] if admin else list(argv)
        return self._runner(full, timeout=self.timeout)

    @staticmethod
    def checked(argv: Sequence[str], result: CompletedLike) -> str:
        if result.returncode != 0:
            raise UnavailableError(
                f"{' '.join(argv[:3])} exited with status {result.returncode}: {message(result)}"
            )
        return result.stdout


def message(result: CompletedLike) -> str:
    return last_line(result.stderr) or last_line(result.stdout) or "no message"


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
