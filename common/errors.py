"""The one exception hierarchy of the mint tools.

Adapters translate third-party errors (botocore, paramiko, requests) into these
at their boundary; `mint_common.exitcodes` maps them to exit statuses.
"""

from __future__ import annotations

from typing import Optional


class MintError(Exception):
    """Base of every error a mint tool reports to its user."""

    exit_status: int = 1

    def __init__(self, message: str, *, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class JobFailed(MintError):
    """The job itself failed (a remote command exited non-zero, a run was abnormal)."""

    exit_status = 1

    def __init__(
        self, message: str, *, job_exit_status: Optional[int] = None, hint: Optional[str] = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.job_exit_status = job_exit_status


class UsageError(MintError):
    """The command line is wrong."""

    exit_status = 2


class InputError(MintError):
    """Bad data: malformed JSON, an unsafe path, an oversized payload."""

    exit_status = 65


class UnsafePathError(InputError):
    """A path would escape the directory it must stay in."""


class NoInputError(MintError):
    """An input file does not exist or cannot be read."""

    exit_status = 66


class UnavailableError(MintError):
    """A service could not be reached or stayed failing after retries (transient by nature)."""

    exit_status = 69


class MissingExtraError(UnavailableError):
    """The tool's optional dependencies are not installed."""


class CantCreateError(MintError):
    """An output file or directory cannot be created."""

    exit_status = 73


class TransferError(MintError):
    """Input/output failure: a transfer broke, a size or checksum did not match."""

    exit_status = 74


class TryAgainLater(MintError):
    """Temporary condition: another run holds the lock, a wait timed out."""

    exit_status = 75


class LockHeld(TryAgainLater):
    """Another process holds the single-instance lock."""

    def __init__(self, lock_path: str, holder_pid: Optional[int]) -> None:
        holder = f"pid {holder_pid}" if holder_pid else "an unknown process"
        super().__init__(f"another run holds the lock {lock_path} ({holder})")
        self.lock_path = lock_path
        self.holder_pid = holder_pid


class AuthError(MintError):
    """Authentication or permission refused, or a host key that cannot be trusted."""

    exit_status = 77


class ConfigError(MintError):
    """The configuration is invalid; the message names the file, the key and the value."""

    exit_status = 78
