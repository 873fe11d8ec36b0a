"""The scheduler interface (the earlier burst agent's get_status / join_cluster / leave_cluster /
check_version, plus node_jobs) and what the adapters share.

A command that fails, times out or prints something we cannot parse raises:
an unreadable queue must never look like an empty one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Callable, Optional, Protocol

from mint_burst.model import QueueStatus
from mint_common.errors import ConfigError, InputError, UnavailableError
from mint_common.proc import CommandResult, run_command

Runner = Callable[..., CommandResult]
# The most a scheduler command or provider script may print on stdout: far above a real
# queue (100,000 squeue lines are about 10 MB), far below what would hurt the head node.
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
# The most lines one line-based answer (squeue, sinfo, scontrol show node) may have.
# A pending job array is one squeue line however many elements it has; a queue with
# more separate jobs than this is refused (nothing is decided) rather than held in memory.
MAX_LINES = 100_000
# The most values a JSON answer (provider script, PBS Pro qstat/pbsnodes) may hold,
# counted before it is parsed: about 80,000 instances of a `list` answer.
MAX_JSON_VALUES = 500_000
# How much of the end of an error output is searched for its last line.
LAST_LINE_SCAN = 64 * 1024


class UnknownNode(ConfigError):
    """The scheduler has no node of that name: it was never in its configuration."""


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

    def check_queue(self) -> tuple[str, ...]:
        """The names of the nodes that serve the queue.

        ConfigError if the queue does not exist (UnavailableError if no answer).
        """


class CommandRunner:
    """Runs scheduler commands: argument lists, a timeout, non-zero exit is an error."""

    def __init__(
        self,
        *,
        timeout: float,
        admin_prefix: Sequence[str] = (),
        runner: Optional[Runner] = None,
        max_output: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self.timeout = timeout
        self.admin_prefix = list(admin_prefix)
        self._runner = runner or functools.partial(_run_plain, max_output=max_output)

    def run(self, argv: Sequence[str], *, admin: bool = False) -> str:
        return self.checked(argv, self.call(argv, admin=admin))

    def call(self, argv: Sequence[str], *, admin: bool = False) -> CommandResult:
        """Run and return the result whatever its exit status (the caller reads refusals)."""
        full = [*self.admin_prefix, *argv] if admin else list(argv)
        return self._runner(full, timeout=self.timeout)

    @staticmethod
    def checked(argv: Sequence[str], result: CommandResult) -> str:
        if result.failed:
            raise UnavailableError(
                f"{' '.join(argv[:3])} exited with status {result.return_code}: {message(result)}"
            )
        return result.stdout


# Site defaults that change what the commands print: SLURM_TIME_FORMAT=relative turns
# start times into "Tomorr 00:05"; SQUEUE_ARRAY expands job arrays, losing the throttle.
_OUTPUT_CHANGING_PREFIXES = ("SQUEUE_", "SINFO_", "SCONTROL_", "SLURM_TIME_FORMAT")


def command_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without the variables that change the commands' output."""
    env = {k: v for k, v in environ.items() if not k.startswith(_OUTPUT_CHANGING_PREFIXES)}
    env["SLURM_TIME_FORMAT"] = "standard"
    return env


def _run_plain(argv: Sequence[str], *, timeout: float, max_output: int) -> CommandResult:
    return run_command(
        argv, timeout=timeout, max_output=max_output, env=command_environment(os.environ)
    )


def message(result: CommandResult) -> str:
    return last_line(result.stderr) or last_line(result.stdout) or "no message"


def last_line(text: str) -> str:
    """The last non-blank line, at most 300 characters; only the text's end is looked at."""
    # A flood of short lines must not become millions of strings just to show one.
    tail = text[-LAST_LINE_SCAN:]
    end = len(tail)
    while end > 0:
        start = tail.rfind("\n", 0, end) + 1
        line = tail[start:end].strip()
        if line:
            return line[:300]
        end = start - 1
    return ""


def iter_lines(text: str, what: str, *, max_lines: int = MAX_LINES) -> Iterator[tuple[int, str]]:
    """(number, line) of each non-blank line, one at a time (never a list of them all).

    An answer of more than `max_lines` lines, blank ones included, raises InputError.
    """
    start = 0
    number = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        number += 1
        if number > max_lines:
            raise InputError(
                f"{what} printed more than {max_lines:,} lines; refused (the bound is"
                " mint_burst.scheduler.MAX_LINES)"
            )
        line = text[start:end]
        start = end + 1
        if line.strip():
            yield number, line


def check_json_size(text: str, what: str, *, max_values: int = MAX_JSON_VALUES) -> None:
    """Refuse JSON that could hold more than `max_values` values before it is parsed.

    Every value but the first follows a `,` or opens with `[` or `{`, so counting those
    three characters (inside strings too: an overestimate) bounds what json.loads builds.
    """
    count = text.count(",") + text.count("[") + text.count("{")
    if count > max_values:
        raise InputError(
            f"{what} printed JSON of more than {max_values:,} values; refused (the bound is"
            " mint_burst.scheduler.MAX_JSON_VALUES)"
        )
