"""`mint-ssh gate`: the authorized_keys forced command that admits only `mint-ssh run`'s requests.

    command="mint-ssh gate --base /tmp --allow ~/bin/solve.sh",restrict ssh-ed25519 AAAA... mint

OpenSSH runs the gate for every exec and subsystem request of that key and
puts the client's request in SSH_ORIGINAL_COMMAND. The gate parses it against
the fixed command set of `mint_ssh.protocol`; a match is run by /bin/sh
exactly as sent (it is identical to the canonical form), anything else is
refused (exit 77) and logged to stderr, to --log-file and to syslog.

The policy comes from the forced-command line only: the client may set environment
variables (AcceptEnv, PermitUserEnvironment) and the gate must not read them. A run dir, its
control dir or an input's `.part` file that is a symlink (or a run dir of another user) is
refused here; the commands themselves also refuse to follow one (`test ! -h`, dd's
`oflag=nofollow`), which covers a link planted after this check.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from mint_common.errors import AuthError
from mint_ssh import protocol

log = logging.getLogger("mint_ssh.gate")
DEFAULT_BASE = "/tmp"  # noqa: S108 - the remote work base of mint-ssh run's default config
SYSLOG_SOCKET = "/dev/log"


def attach_syslog() -> None:
    """Also send the gate's decisions to the local syslog, when there is one."""
    if not Path(SYSLOG_SOCKET).exists():
        return
    try:
        handler = logging.handlers.SysLogHandler(
            address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_AUTH
        )
    except OSError:
        return
    handler.setFormatter(logging.Formatter("mint-ssh-gate[%(process)d]: %(message)s"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)


def quiet_console() -> None:
    """Keep "allowed" lines off stderr: there they would mix into the command's own output."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler or not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, logging.WARNING))


def make_policy(bases: Sequence[str], allowed: Sequence[str]) -> protocol.GatePolicy:
    return protocol.GatePolicy(
        bases=tuple(str(Path(b)) for b in bases),
        allowed=tuple(allowed),
        home=os.path.expanduser("~"),
    )


def decide(original: Optional[str], policy: protocol.GatePolicy) -> protocol.Operation:
    """The operation to let through, or AuthError (77) after logging the refusal."""
    client = os.environ.get("SSH_CLIENT", "unknown client").split(" ")[0]
    if original is None:
        log.warning("refused from %s: SSH_ORIGINAL_COMMAND is not set", client)
        raise AuthError(
            "refused: no SSH_ORIGINAL_COMMAND (the gate must run as an authorized_keys"
            ' command="..." forced command)'
        )
    try:
        op = protocol.parse(original, policy)
        check_paths(op)
    except protocol.RefusedCommand as exc:
        log.warning("refused from %s: %s: %r", client, exc, original[:500])
        raise AuthError(
            f"refused by the {protocol.GATE_VERSION_MARK} {protocol.VERSION}): {exc}"
        ) from exc
    log.info("allowed %s from %s: %s", op.kind, client, original[:500])
    return op


def check_paths(op: protocol.Operation) -> None:
    """Refuse an operation whose run dir, control dir or `.part` files are symlinks."""
    if not op.workdir or op.kind == "free_space":
        return
    run_dir = _lstat(op.workdir)
    if run_dir is None:
        return
    if stat.S_ISLNK(run_dir.st_mode) or not stat.S_ISDIR(run_dir.st_mode):
        raise protocol.RefusedCommand(f"{op.workdir} is a symlink or not a directory")
    if run_dir.st_uid != os.geteuid():
        raise protocol.RefusedCommand(f"{op.workdir} belongs to another user")
    control = _lstat(f"{op.workdir}/{protocol.CONTROL_DIR}")
    if control is not None and not stat.S_ISDIR(control.st_mode):
        raise protocol.RefusedCommand(f"{op.workdir}/{protocol.CONTROL_DIR} is not a directory")
    for item in op.files:
        # a dir on the way to the file must be a real dir, or the file would land elsewhere
        parts = PurePosixPath(item.name).parts
        for depth in range(1, len(parts)):
            inner = "/".join(parts[:depth])
            found = _lstat(f"{op.workdir}/{inner}")
            if found is not None and not stat.S_ISDIR(found.st_mode):
                raise protocol.RefusedCommand(f"{inner} is a symlink or not a directory")
        part = _lstat(f"{op.workdir}/{item.name}{protocol.PART_SUFFIX}")
        if part is not None and stat.S_ISLNK(part.st_mode):
            raise protocol.RefusedCommand(f"{item.name}{protocol.PART_SUFFIX} is a symlink")


def _lstat(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise protocol.RefusedCommand(f"cannot check {path}: {exc.strerror}") from exc


def run_gate(
    original: Optional[str],
    policy: protocol.GatePolicy,
    execute: Callable[[str, list[str]], object] = os.execv,
) -> None:
    """Decide, then replace this process with `/bin/sh -c <the command>`."""
    decide(original, policy)
    assert original is not None
    for handler in log.handlers:
        handler.flush()
    execute("/bin/sh", ["/bin/sh", "-c", original])
