"""The object layout shared with the seed's manual procedure, and the names we add to it.

Seed layout (never renamed): `PREFIX/job-aws-run.sh`, `PREFIX/job-aws-stat.txt`
(first line = state word), `PREFIX/job-aws-jobid.txt`, `PREFIX/job-aws-sbatch.out`
and the job's own files. Our own objects live under `PREFIX/.mint-s3job/`, which the
seed's scripts copy around harmlessly and never read.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timezone
from enum import Enum
from pathlib import PurePosixPath
from typing import Optional

from mint_common.errors import InputError

JOB_SCRIPT = "job-aws-run.sh"
JOB_STAT = "job-aws-stat.txt"
JOB_ID = "job-aws-jobid.txt"
SBATCH_OUT = "job-aws-sbatch.out"
META_DIR = ".mint-s3job"
CLAIM = f"{META_DIR}/claim.json"
CANCEL = f"{META_DIR}/cancel.json"
EXIT = f"{META_DIR}/exit.json"
CANCELLED = f"{META_DIR}/cancelled.json"
SUBMIT_MANIFEST = f"{META_DIR}/manifest-submit.json"
EPILOG_MANIFEST = f"{META_DIR}/manifest-epilog.json"
# Names a submit may not upload as job files: the dispatcher and epilog own them.
RESERVED_INPUTS = (JOB_STAT, JOB_ID, SBATCH_OUT)

# Linux's limits: one path component, and a whole path as open(2) takes it.
NAME_MAX = 255
PATH_MAX = 4096

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class State(str, Enum):
    """The first line of job-aws-stat.txt."""

    FILE_UPLOAD = "FILE_UPLOAD"
    JOB_SUBMIT = "JOB_SUBMIT"
    JOB_ERROR = "JOB_ERROR"
    JOB_COMPLETE = "JOB_COMPLETE"


def parse_state(data: bytes, where: str) -> State:
    """The state word of a job-aws-stat.txt body (first line, blanks ignored, like `head -n 1`)."""
    first = data.decode("utf-8", "replace").lstrip("\ufeff").splitlines()[:1]
    word = first[0].strip() if first else ""
    try:
        return State(word)
    except ValueError:
        raise InputError(
            f"{where}: unknown state {word!r} (expected one of {', '.join(s.value for s in State)})"
        ) from None


def state_body(state: State) -> bytes:
    """What `echo STATE > job-aws-stat.txt` writes, so seed scripts read it the same way."""
    return f"{state.value}\n".encode()


def check_prefix(prefix: str) -> str:
    """A job prefix is one path segment (the seed's `ls -d */` and `basename` rely on it)."""
    if not _PREFIX_RE.match(prefix):
        raise InputError(
            f"invalid job prefix {prefix!r}: use 1-200 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit (no '/')"
        )
    return prefix


def is_prefix(name: str) -> bool:
    return bool(_PREFIX_RE.match(name))


def default_prefix(now: Optional[datetime] = None) -> str:
    """`job-20261121-180312-1a2b3c4d`: sortable by time, unique by 32 random bits."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"job-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}"


def relative_name(prefix: str, object_key: str) -> str:
    """The name of an object inside its job prefix (`PREFIX/a/b` -> `a/b`)."""
    head = prefix + "/"
    if not object_key.startswith(head):
        raise InputError(f"object {object_key!r} is not under prefix {prefix!r}")
    return object_key[len(head) :]


def is_metadata(name: str) -> bool:
    return name == META_DIR or name.startswith(META_DIR + "/")


def name_problems(names: Iterable[str], base: str = "") -> dict[str, str]:
    """Object names that cannot all become files under the directory `base`: name -> why.

    A component over NAME_MAX bytes or a path over PATH_MAX; a name for the same file as
    another (`a//b`, `a/b`); a name below a file (`a` and `a/b`: `a` cannot be both). Of two
    colliding names the one listed first keeps the file. Names must have passed safe_join.
    """
    problems: dict[str, str] = {}
    files: dict[tuple[str, ...], str] = {}
    base_bytes = len(os.fsencode(base)) + 1 if base else 0
    for name in sorted(names, key=lambda n: PurePosixPath(n).parts):
        parts = PurePosixPath(name).parts
        if any(len(os.fsencode(part)) > NAME_MAX for part in parts):
            problems[name] = f"a part of the name is longer than {NAME_MAX} bytes"
        elif base_bytes + len(os.fsencode(name)) >= PATH_MAX:
            problems[name] = f"the path would be longer than {PATH_MAX - 1} bytes"
        elif parts in files:
            problems[name] = f"it names the same file as {files[parts]!r}"
        else:
            owner = next(
                (files[parts[:i]] for i in range(1, len(parts)) if parts[:i] in files), None
            )
            if owner is not None:
                problems[name] = f"{owner!r} is a file, so it cannot also be a directory"
            else:
                files[parts] = name
    return problems
