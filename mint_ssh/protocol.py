"""The fixed set of remote commands `mint-ssh run` sends, and their parser for `mint-ssh gate`.

Every remote operation is one exec request whose command line is built here
from a template and shell-quoted parameters. Without a gate the remote login
shell runs it; with the gate, `parse()` must recognise it: the command is split,
matched against a template, the parameters are checked against the gate's
policy (work base, allowed programs), and the command is rebuilt from them.
Only a command identical to its rebuilt form passes, so quoting tricks and
appended shell syntax cannot slip through.

A run sends one request in the common case: the start request carries the
inputs on stdin, streams the command's stdout on stdout and its stderr on
stderr, then an end mark and the exit status on stdout, then waits for `fetch`
on stdin and sends the results back as a tar stream (see `start`).

Every request starts with `: mint-ssh protocol N;` (a no-op for the shell), so a gate can
tell a client of another protocol from a hostile one and say which side to upgrade. Version 2
(mint-tools 0.9) refuses to follow a symlink at the run dir or at a `.part` file. Version 3
keeps the command's stdout and stderr apart (`output` and `errors`), as ssh does.

Layout of a run's working directory `<base>/<32 hex digits>`:
  inputs and results          (downloaded at the end)
  .mint-ssh/output            stdout of the command (streamed to the caller's stdout)
  .mint-ssh/errors            stderr of the command (streamed to the caller's stderr)
  .mint-ssh/status            its exit status, written when it ends
  .mint-ssh/pid               its process id (also the process group id)
  .mint-ssh/started           made by the one request that starts it
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Callable, Optional

CONTROL_DIR = ".mint-ssh"
OUTPUT_FILE = f"{CONTROL_DIR}/output"
ERRORS_FILE = f"{CONTROL_DIR}/errors"
STATUS_FILE = f"{CONTROL_DIR}/status"
PID_FILE = f"{CONTROL_DIR}/pid"
STARTED_MARK = f"{CONTROL_DIR}/started"
PART_SUFFIX = ".part"
RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
# Ends the command's stdout in a start request's stdout; the exit status line follows it.
# Each request picks its own (`new_end_mark`), so no output can contain it by chance.
END_MARK_PATTERN = re.compile(r"^:mint-ssh-end:[0-9a-f]{32}:$")
END_MARK = ":mint-ssh-end:" + "0" * 32 + ":"
UPLOAD_FAILED = 74  # exit status of a start request whose inputs failed their checks
TAIL_SLEEP = "0.02"  # how often tail checks whether the job is still alive (its end shows within)
FETCH_GO = 'read -r go && test "$go" = fetch'
# Copies exactly `count` bytes of stdin (GNU dd reads no more than that) in 1 MiB writes;
# `head -c` copied 8 KiB at a time, which held uploads back.
RECEIVE = "dd bs=1M iflag=fullblock,count_bytes status=none"
REMOVED = "removed"  # the last line of a fetch's stdout when the working dir was removed
_THEN_FETCH = f" if cat -- {STATUS_FILE} 2> /dev/null; then {FETCH_GO} && "
_FI = "; fi"

VERSION = 3
_VERSION_PREFIX = re.compile(r": mint-ssh protocol ([0-9]{1,6}); ")
GATE_VERSION_MARK = "mint-ssh gate (protocol"

_q = shlex.quote


def versioned(command: str) -> str:
    """`command` as sent: led by this client's protocol version."""
    return f": mint-ssh protocol {VERSION}; {command}"


def mismatch_message(*, client: int, gate: int) -> str:
    """One line naming both versions and the order of upgrades."""
    older = "the gate (mint-tools on the remote host)" if gate < client else "this client"
    return (
        f"mint-ssh protocol mismatch: client speaks protocol {client}, gate protocol {gate};"
        f" upgrade {older} to protocol {max(client, gate)}"
        " (upgrade order: the remote gate first, then its clients)"
    )


class RefusedCommand(ValueError):
    """The command is not one `mint-ssh run` sends, or its parameters break the policy."""


@dataclasses.dataclass(frozen=True)
class UploadItem:
    """One file of an upload request: its name in the working dir, its size, its sha256 (or "")."""

    name: str
    size: int
    sha256: str = ""


@dataclasses.dataclass(frozen=True)
class Operation:
    """A parsed remote command: its kind and its parameters."""

    kind: str
    workdir: str = ""
    name: str = ""
    argv: tuple[str, ...] = ()
    offset: int = 0
    files: tuple[UploadItem, ...] = ()
    patterns: tuple[str, ...] = ()
    errors_offset: int = 0
    end_mark: str = END_MARK


def new_end_mark() -> str:
    import uuid

    return f":mint-ssh-end:{uuid.uuid4().hex}:"


def parse_exit_status(text: str) -> Optional[int]:
    """The status a shell prints with `echo $?` (ASCII 0-255), or None for anything else."""
    if not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > 255:
        return None
    return int(text)


def workdir_path(base: str, run_id: str) -> str:
    return str(PurePosixPath(base) / run_id)


# --- builders (used by `run`) -------------------------------------------------------------


def _program(program: str) -> str:
    """Quote a program path, leaving a leading `~/` for the remote shell to expand."""
    if program.startswith("~/") and len(program) > 2:
        return "~/" + _q(program[2:])
    return _q(program)


def _mkdirs(workdir: str) -> str:
    """Make the run dir unless it exists; refuse one that is a symlink or not ours."""
    w = _q(workdir)
    return (
        f"mkdir -p -m 700 -- {w} && test ! -h {w} && test -O {w}"
        f" && mkdir -p -m 700 -- {_q(workdir + '/' + CONTROL_DIR)}"
    )


_MKDIRS_TOKENS = len(shlex.split(_mkdirs("/w")))


def make_workdir(workdir: str) -> str:
    """Create a working dir (0700) with its control dir; print the remote home (the cwd)."""
    return f"mkdir -m 700 -- {_q(workdir)} {_q(workdir + '/' + CONTROL_DIR)} && pwd"


def _receive_one(workdir: str, item: UploadItem) -> str:
    """Copy the file's `size` bytes from stdin into `<name>.part` (making the dirs of a
    name like `DIR/sub/a.dat` first) and check them."""
    path = f"{workdir}/{item.name}{PART_SUFFIX}"
    part = _q(path)
    parent = PurePosixPath(item.name).parent
    make_dirs = f"mkdir -p -m 700 -- {_q(f'{workdir}/{parent}')} && " if parent.name else ""
    # $(...) stays outside double quotes so that the gate's shlex reads it as the shell does.
    checks = f"test $(wc -c < {part}) -eq {int(item.size)}"
    if item.sha256:
        checks += f" && sha256sum < {part} | grep -q -x -- {_q(item.sha256 + '  -')}"
    # dd opens the part file itself with O_NOFOLLOW: a symlink planted there is refused.
    return (
        f"{make_dirs}{RECEIVE} count={int(item.size)} oflag=nofollow {_q('of=' + path)} && {checks}"
    )


def _rename_one(workdir: str, item: UploadItem) -> str:
    return f"mv -f -- {_q(f'{workdir}/{item.name}{PART_SUFFIX}')} {_q(f'{workdir}/{item.name}')}"


def _upload_one(workdir: str, item: UploadItem) -> str:
    return f"{_receive_one(workdir, item)} && {_rename_one(workdir, item)}"


def upload(workdir: str, files: Sequence[UploadItem]) -> str:
    """Create the working dir if needed; then for each file in turn, copy its `size` bytes from
    stdin (the files back to back) into `<name>.part`, check it and rename it into place.

    `RECEIVE` reads no more than it was asked for, so one request carries many files.
    """
    return " && ".join([_mkdirs(workdir), *(_upload_one(workdir, item) for item in files)])


def job_script(argv: Sequence[str]) -> str:
    command = " ".join([_program(argv[0]), *(_q(a) for a in argv[1:])])
    return (
        f"{command} >> {OUTPUT_FILE} 2>> {ERRORS_FILE} < /dev/null;"
        f" echo $? > {STATUS_FILE}.part; mv -f {STATUS_FILE}.part {STATUS_FILE}"
    )


def start(
    workdir: str,
    argv: Sequence[str],
    offset: int = 0,
    files: Sequence[UploadItem] = (),
    patterns: Sequence[str] = (),
    *,
    errors_offset: int = 0,
    end_mark: str = END_MARK,
) -> str:
    """Start the command detached (own session, no terminal) unless it was started already,
    follow it: its stdout on stdout from byte `offset`, its stderr on stderr from byte
    `errors_offset`; when it ends, `end_mark` and its exit status line on stdout; then, once
    the line `fetch` arrives on stdin, `fetch(workdir, patterns)`.

    Sending it again after a dropped connection is safe: `mkdir started` lets only one start.
    With `files`, the inputs come first on stdin, as for `upload`; a request that finds the
    command started already discards them (so a reconnect never writes into a running job),
    otherwise all of them must pass their checks (else exit 74) before the one request that
    makes `started` renames them into place and starts the command. Without an exit status
    (the job was killed, say), or with stdin closed instead of `fetch`, it ends there.
    """
    launch = (
        f"setsid nohup sh -c {_q(job_script(argv))} < /dev/null > /dev/null 2>&1 &"
        f" echo $! > {PID_FILE};"
    )
    begin = f"if mkdir {STARTED_MARK} 2> /dev/null; then {launch} fi;"
    if files:
        receive = " && ".join(_receive_one(workdir, item) for item in files)
        rename = " && ".join(_rename_one(workdir, item) for item in files)
        begin = (
            f"if test -d {STARTED_MARK}; then head -c {sum(int(i.size) for i in files)}"
            f" > /dev/null; else {receive}"
            f" || exit {UPLOAD_FAILED}; if mkdir {STARTED_MARK} 2> /dev/null; then {rename}"
            f" || exit {UPLOAD_FAILED}; {launch} fi; fi;"
        )
    refuse = _q(f"mint-ssh: cannot use {workdir}: not a directory of this user, or a symlink")
    follow = f'tail -s {TAIL_SLEEP} --pid="$(cat -- {PID_FILE})" -f -c'
    return (
        f"{_mkdirs(workdir)} && cd -- {_q(workdir)} && : >> {OUTPUT_FILE} && : >> {ERRORS_FILE}"
        f" || {{ echo {refuse} >&2; exit 1; }}; {begin}"
        f" {follow} +{int(offset) + 1} -- {OUTPUT_FILE} &"
        f" {follow} +{int(errors_offset) + 1} -- {ERRORS_FILE} >&2; wait $!;"
        f" printf %s {_q(end_mark)};"
        f"{_THEN_FETCH}{fetch(workdir, patterns)}{_FI}"
    )


def kill(workdir: str) -> str:
    """Terminate the job's process group (the pid written by the job itself)."""
    return f'kill -TERM -- -"$(cat -- {_q(workdir + "/" + PID_FILE)})"'


def fetch(workdir: str, patterns: Sequence[str] = ()) -> str:
    """A tar stream of the working dir (all of it, or entries matching `patterns`), then wait
    for the caller's verdict on stdin: `remove` deletes the dir and prints `removed`."""
    verdict = (
        f'read -r reply && test "$reply" = remove && rm -rf -- {_q(workdir)} && echo {REMOVED}'
    )
    enter = f"cd -- {_q(workdir)} && test ! -h {_q(workdir)}"
    if not patterns:
        return f"{enter} && tar -c -f - --exclude=./{CONTROL_DIR} -- . && {verdict}"
    tests = " -o ".join(f"-path {_q('./' + p)} -o -path {_q('./' + p + '/*')}" for p in patterns)
    return (
        f"{enter} && find . -mindepth 1 ! -path ./{CONTROL_DIR}"
        f" ! -path './{CONTROL_DIR}/*' '(' {tests} ')' -print0"
        f" | tar -c -f - --null --no-recursion -T - && {verdict}"
    )


def remove(workdir: str) -> str:
    return f"rm -rf -- {_q(workdir)}"


def free_space(base: str) -> str:
    return f"df -Pk -- {_q(base)}"


def is_executable(program: str) -> str:
    return f"test -x {_program(program)}"


def noop() -> str:
    return "true"


# --- parser (used by `gate`) --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GatePolicy:
    """What the gate lets through: work dirs under `bases`, and `allowed` programs."""

    bases: tuple[str, ...]
    allowed: tuple[str, ...]
    home: str = "/"

    def expand(self, program: str) -> str:
        if program == "~" or program.startswith("~/"):
            return self.home.rstrip("/") + program[1:]
        return program

    def program_allowed(self, program: str) -> bool:
        return self.expand(program) in {self.expand(p) for p in self.allowed}


def _check_workdir(path: str, policy: GatePolicy) -> str:
    pure = PurePosixPath(path)
    if not pure.is_absolute() or str(pure) != path:
        raise RefusedCommand(f"working dir {path!r} is not a normalised absolute path")
    if not RUN_ID_PATTERN.match(pure.name):
        raise RefusedCommand(f"working dir {path!r} is not <base>/<run id>")
    if str(pure.parent) not in {str(PurePosixPath(b)) for b in policy.bases}:
        raise RefusedCommand(f"working dir {path!r} is outside the work base(s) {policy.bases}")
    return path


def _check_name(name: str) -> str:
    pure = PurePosixPath(name)
    if (
        not name
        or pure.is_absolute()
        or ".." in pure.parts
        or pure.parts[:1] == (CONTROL_DIR,)
        or str(pure) != name
        or any(ord(c) < 0x20 for c in name)
    ):
        raise RefusedCommand(f"file name {name!r} is not a plain relative name")
    return name


def _split_path(path: str, policy: GatePolicy, suffix: str = "") -> tuple[str, str]:
    """`<workdir>/<name><suffix>` -> (workdir, name), both checked; the name may have dirs."""
    if not path.endswith(suffix):
        raise RefusedCommand(f"{path!r} does not end in {suffix!r}")
    stem = path[: len(path) - len(suffix)] if suffix else path
    parts = PurePosixPath(stem).parts
    if len(parts) < 3:
        raise RefusedCommand(f"{path!r} is not inside a working dir")
    for cut in range(2, len(parts)):
        candidate = str(PurePosixPath(*parts[:cut]))
        if RUN_ID_PATTERN.match(parts[cut - 1]):
            workdir = _check_workdir(candidate, policy)
            return workdir, _check_name(str(PurePosixPath(*parts[cut:])))
    raise RefusedCommand(f"{path!r} is not inside a working dir")


def _tokens(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise RefusedCommand(f"cannot parse the command: {exc}") from exc


def _parse_job(script: str, policy: GatePolicy) -> tuple[str, ...]:
    head = ""
    tail = job_script(["X"])[1:]
    if not (script.startswith(head) and script.endswith(tail)):
        raise RefusedCommand("the job script is not the one mint-ssh run writes")
    argv = tuple(_tokens(script[len(head) : len(script) - len(tail)]))
    if not argv:
        raise RefusedCommand("empty command")
    _check_program(argv[0], policy)
    return argv


def _check_base(path: str, policy: GatePolicy) -> str:
    if path not in policy.bases:
        raise RefusedCommand(f"{path!r} is not a work base")
    return path


def _check_program(program: str, policy: GatePolicy) -> str:
    if not policy.program_allowed(program):
        raise RefusedCommand(f"program {program!r} is not in the allowed list")
    return program


def _strip_suffix(path: str, suffix: str) -> str:
    if not path.endswith("/" + suffix):
        raise RefusedCommand(f"{path!r} is not a run's {suffix}")
    return path[: -len(suffix) - 1]


def _inner_path(token: str, prefix: str) -> str:
    """The path in `<prefix>$(cat -- PATH)`."""
    if not (token.startswith(prefix + "$(") and token.endswith(")")):
        raise RefusedCommand(f"unexpected {token!r}")
    words = _tokens(token[len(prefix) + 2 : -1])
    if words[:2] != ["cat", "--"] or len(words) != 3:
        raise RefusedCommand(f"unexpected {token!r}")
    return words[2]


def _parse_mkdir(t: list[str], policy: GatePolicy) -> Operation:
    if t[1] == "-m":
        return Operation("make_workdir", workdir=_check_workdir(t[4], policy))
    workdir = _check_workdir(t[5], policy)
    if t[_MKDIRS_TOKENS + 1] == "cd":
        tails = [i for i, word in enumerate(t) if word == "tail"]
        offset, errors_offset = (int(t[i + 6].lstrip("+")) - 1 for i in tails[:2])
        end_mark = t[t.index("printf") + 2].removesuffix(";")
        if not END_MARK_PATTERN.match(end_mark):
            raise RefusedCommand("the end mark is not one mint-ssh run sends")
        argv = _parse_job(t[t.index("nohup") + 3], policy)
        files: tuple[UploadItem, ...] = ()
        if "dd" in t:  # the inputs it receives, after the branch that discards them
            chosen = t.index("else") + 1
            files = _parse_items(t[chosen : t.index("||", chosen)], workdir, policy)
        return Operation(
            "start",
            workdir=workdir,
            argv=argv,
            offset=offset,
            files=files,
            errors_offset=errors_offset,
            end_mark=end_mark,
        )
    files = _parse_items(t, workdir, policy)
    if not files:
        raise RefusedCommand("the command does not match any mint-ssh operation")
    return Operation("upload", workdir=workdir, files=files)


def _parse_items(t: list[str], workdir: str, policy: GatePolicy) -> tuple[UploadItem, ...]:
    """The files of the `RECEIVE count=SIZE oflag=nofollow of=PART && checks` segments."""
    receives = [i for i, word in enumerate(t) if word == "dd"]
    files = []
    for start, end in zip(receives, [*receives[1:], len(t)]):
        part_workdir, name = _split_path(t[start + 6].removeprefix("of="), policy, PART_SUFFIX)
        if part_workdir != workdir:
            raise RefusedCommand("the upload names two different working dirs")
        segment = t[start:end]
        sha256 = segment[segment.index("-x") + 2][: -len("  -")] if "sha256sum" in segment else ""
        if not t[start + 4].startswith("count="):
            raise RefusedCommand("the command does not match any mint-ssh operation")
        size = int(t[start + 4].removeprefix("count="))
        if size < 0:
            raise RefusedCommand(f"negative size {size} for {name!r}")
        files.append(UploadItem(name, size, sha256))
    return tuple(files)


def _parse_kill(t: list[str], policy: GatePolicy) -> Operation:
    return Operation(
        "kill", workdir=_check_workdir(_strip_suffix(_inner_path(t[3], "-"), PID_FILE), policy)
    )


def _parse_fetch(t: list[str], policy: GatePolicy) -> Operation:
    workdir = _check_workdir(t[2], policy)
    if "find" not in t:
        return Operation("fetch", workdir=workdir)
    tests = t[t.index("(") + 1 : t.index(")")]
    patterns = tuple(tests[i][2:] for i in range(1, len(tests), 6))
    for pattern in patterns:
        if not pattern or pattern.startswith("/"):
            raise RefusedCommand(f"pattern {pattern!r} is not relative")
    return Operation("fetch", workdir=workdir, patterns=patterns)


def _parse_by_shape(tokens: list[str], policy: GatePolicy) -> Optional[Operation]:
    head = tokens[0] if tokens else ""
    parsers: dict[str, Callable[[list[str], GatePolicy], Operation]] = {
        "mkdir": _parse_mkdir,
        "kill": _parse_kill,
        "cd": _parse_fetch,
        "rm": lambda t, p: Operation("remove", workdir=_check_workdir(t[3], p)),
        "df": lambda t, p: Operation("free_space", workdir=_check_base(t[3], p)),
        "test": lambda t, p: Operation("is_executable", name=_check_program(t[2], p)),
        "true": lambda t, p: Operation("noop"),
    }
    parser = parsers.get(head)
    return parser(tokens, policy) if parser else None


def rebuild(op: Operation) -> str:
    """The exact command line `run` sends for `op`."""
    builders: dict[str, Callable[[Operation], str]] = {
        "make_workdir": lambda o: make_workdir(o.workdir),
        "upload": lambda o: upload(o.workdir, o.files),
        "start": lambda o: start(
            o.workdir,
            o.argv,
            o.offset,
            o.files,
            o.patterns,
            errors_offset=o.errors_offset,
            end_mark=o.end_mark,
        ),
        "kill": lambda o: kill(o.workdir),
        "fetch": lambda o: fetch(o.workdir, o.patterns),
        "remove": lambda o: remove(o.workdir),
        "free_space": lambda o: free_space(o.workdir),
        "is_executable": lambda o: is_executable(o.name),
        "noop": lambda o: noop(),
    }
    return builders[op.kind](op)


def _parse_start_then_fetch(command: str, policy: GatePolicy) -> Optional[Operation]:
    """A start request: its own part, then the fetch it ends with (same working dir)."""
    own, _, then = command.rpartition(_THEN_FETCH)
    if not then.endswith(_FI):
        return None
    started = _parse_by_shape(_tokens(own), policy)
    fetched = _parse_by_shape(_tokens(then[: -len(_FI)]), policy)
    if started is None or fetched is None or (started.kind, fetched.kind) != ("start", "fetch"):
        return None
    if fetched.workdir != started.workdir:
        raise RefusedCommand("the start and its fetch name two different working dirs")
    return dataclasses.replace(started, patterns=fetched.patterns)


def _unversioned(command: str) -> str:
    """The command after its protocol version, which must be ours."""
    match = _VERSION_PREFIX.match(command)
    if match is None:
        # A person's `ssh host cmd` and a client of protocol 1 both send bare commands.
        raise RefusedCommand(
            f"not a mint-ssh request: this key only runs the commands of mint-ssh protocol"
            f" {VERSION} (`mint-ssh run` and `mint-ssh check`); a mint-ssh older than"
            " protocol 2 also sends bare commands: upgrade it"
        )
    client = int(match.group(1))
    if client != VERSION:
        raise RefusedCommand(mismatch_message(client=client, gate=VERSION))
    return command[match.end() :]


def parse(command: str, policy: GatePolicy) -> Operation:
    """The operation `command` performs, or RefusedCommand saying why it is not allowed."""
    if not command.strip():
        raise RefusedCommand("an interactive session was requested (no command)")
    if "\n" in command or "\0" in command:
        raise RefusedCommand("the command contains a newline or NUL")
    command = _unversioned(command)
    if not command.strip():
        raise RefusedCommand("an interactive session was requested (no command)")
    try:
        if _THEN_FETCH in command:
            op = _parse_start_then_fetch(command, policy)
        else:
            op = _parse_by_shape(_tokens(command), policy)
    except (IndexError, ValueError) as exc:
        if isinstance(exc, RefusedCommand):
            raise
        raise RefusedCommand("the command does not match any mint-ssh operation") from exc
    if op is None or rebuild(op) != command:
        raise RefusedCommand("the command does not match any mint-ssh operation")
    return op
