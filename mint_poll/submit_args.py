"""What a workflow-side submission asks for, checked before anything is sent.

Two ways in: the `submit` options, and the legacy positional form of
`mi-system-wf.py` (`<base url> <site id> <api token> <command> <in1:in2:...>
<res1:res2:...> [parameters]`). Both end as a `SubmitRequest`; every problem
found here (a missing input file, an unsafe result name) stops the run before
the server sees a byte.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from mint_common.errors import CantCreateError, ConfigError, InputError, NoInputError, UsageError
from mint_common.files import check_relative_name, safe_join
from mint_common.logging import register_secret
from mint_poll.api import STD_NAMES

LEGACY_PORT = 50443
LOGIN_WORD = "login"  # the remote-side legacy client's interactive form, not a token
LOG_NAMES = STD_NAMES
LEGACY_USAGE = (
    "mint-poll submit-legacy <base url> <site id> <api token> <command>"
    " <in1:in2:...> <res1:res2:...> [parameters]"
)


@dataclass(frozen=True)
class InputFile:
    """A local file to send, and the name the remote side will see."""

    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class SubmitRequest:
    """One calculation to register, run remotely and collect."""

    site_id: str
    command: str
    inputs: tuple[InputFile, ...]
    results: tuple[str, ...]
    parameters: str = ""
    out_dir: Path = Path()
    timeout: Optional[float] = None
    poll_interval: float = 10.0

    @property
    def requested_results(self) -> tuple[str, ...]:
        """The result names to ask for: the caller's, then the two log files (always)."""
        extra = tuple(name for name in LOG_NAMES if name not in self.results)
        return self.results + extra


@dataclass(frozen=True)
class LegacySubmit:
    """The legacy positional arguments, parsed (the token already registered for redaction)."""

    url: str
    site_id: str
    token: str
    command: str
    inputs: tuple[str, ...]
    results: tuple[str, ...]
    parameters: str

    def __repr__(self) -> str:
        return (
            f"LegacySubmit(url={self.url!r}, site_id={self.site_id!r}, token='********',"
            f" command={self.command!r}, inputs={self.inputs!r}, results={self.results!r},"
            f" parameters={self.parameters!r})"
        )


def split_colon_list(text: str) -> tuple[str, ...]:
    """`a:b::c` -> (a, b, c): the legacy list form; empty items mean nothing."""
    return tuple(item for item in text.split(":") if item)


def legacy_url(base_url: str) -> str:
    """The legacy client's rule: the MInt URL plus `:50443`, unless it already names a port."""
    text = base_url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"legacy argument <base url>: {base_url!r} is not an http(s) URL",
            hint="give the MInt URL, e.g. https://nims.mintsys.jp",
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"legacy argument <base url>: {base_url!r}: {exc}") from exc
    if port is not None:
        return text
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{LEGACY_PORT}"))


def parse_legacy_args(argv: Sequence[str]) -> LegacySubmit:
    """Parse `<base url> <site id> <api token> <command> <inputs> <results> [parameters]`.

    Parameters given as several words (an unquoted `$PARAMS` in a module script)
    are joined with single spaces rather than silently cut to the first word.
    """
    if len(argv) < 6:
        raise UsageError(
            f"submit-legacy needs at least 6 arguments, got {len(argv)}",
            hint=f"usage: {LEGACY_USAGE}",
        )
    base_url, site_id, token, command, inputs, results = argv[:6]
    register_secret(token)
    if token == LOGIN_WORD:
        raise UsageError(
            "the workflow side has no 'login' form: give the MInt API token",
            hint="better: put it in token_file (mode 0600) and use `mint-poll submit`",
        )
    for label, value in (("site id", site_id), ("api token", token), ("command", command)):
        if not value.strip():
            raise UsageError(f"legacy argument <{label}> is empty", hint=f"usage: {LEGACY_USAGE}")
    return LegacySubmit(
        url=legacy_url(base_url),
        site_id=site_id,
        token=token,
        command=command,
        inputs=split_colon_list(inputs),
        results=split_colon_list(results),
        parameters=" ".join(argv[6:]),
    )


def input_name(given: str) -> str:
    """The name a local input file is sent under.

    A relative path that stays inside the working directory is sent as given
    (the remote side recreates its folders); anything else (absolute, `..`)
    is sent under its base name, which is all the remote side could accept.
    """
    try:
        return str(check_relative_name(given))
    except InputError:
        return PurePosixPath(given).name


def check_inputs(given: Sequence[str], base: Path) -> tuple[InputFile, ...]:
    """Each input must be a readable regular file; names must be unique. Exit 66 / 65 otherwise."""
    inputs: list[InputFile] = []
    seen: dict[str, str] = {}
    for text in given:
        path = Path(text) if os.path.isabs(text) else base / text
        if not path.exists():
            raise NoInputError(
                f"input file {text} does not exist (looked at {path}); nothing was sent"
            )
        if not path.is_file():
            raise NoInputError(f"input {text} is not a regular file; nothing was sent")
        if not os.access(path, os.R_OK):
            raise NoInputError(f"input file {text} is not readable; nothing was sent")
        name = input_name(text)
        if not name or name in (".", ".."):
            raise InputError(f"input {text!r} has no usable file name")
        if name in seen:
            raise InputError(
                f"inputs {seen[name]!r} and {text!r} would both be sent as {name!r};"
                " nothing was sent",
                hint="rename one of them",
            )
        seen[name] = text
        inputs.append(InputFile(name=name, path=path, size=path.stat().st_size))
    return tuple(inputs)


def check_results(names: Sequence[str]) -> tuple[str, ...]:
    """Result names are written under the out dir: they must be safe relative names (exit 65)."""
    checked: list[str] = []
    for name in names:
        check_relative_name(name)
        if name not in checked:
            checked.append(name)
    return tuple(checked)


def prepare_out_dir(out_dir: Path) -> Path:
    """Create the out dir and prove it writable now: results can be fetched only once."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise CantCreateError(
            f"cannot write results into {out_dir}: {exc.strerror}; nothing was sent"
        ) from exc
    return out_dir


def check_result_targets(out_dir: Path, names: Sequence[str]) -> None:
    """Each result must be writable where it will land, checked before anything is sent.

    get-calc-result works once, so a result that cannot be written (a directory
    in the way, a symlink leading out of the out dir) is refused up front.
    """
    for name in names:
        target = safe_join(out_dir, name)
        if target.is_dir():
            raise CantCreateError(
                f"result {name!r} would replace the directory {target}; nothing was sent"
            )
        for parent in target.relative_to(out_dir).parents:
            folder = out_dir / parent
            if folder.exists() and not folder.is_dir():
                raise CantCreateError(
                    f"result {name!r} needs the folder {folder}, but a file is there;"
                    " nothing was sent"
                )


def build_request(
    *,
    site_id: str,
    command: str,
    inputs: Sequence[str],
    results: Sequence[str],
    parameters: str = "",
    out_dir: Path = Path(),
    timeout: Optional[float] = None,
    poll_interval: float = 10.0,
    cwd: Optional[Path] = None,
) -> SubmitRequest:
    """Validate everything a submission needs before the first request goes out."""
    if not command.strip():
        raise UsageError("the command is empty")
    if not site_id.strip():
        raise ConfigError("no site id: give --site or set site_id in the config")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {timeout}")
    if poll_interval <= 0:
        raise UsageError(f"--poll-interval must be positive, got {poll_interval}")
    return SubmitRequest(
        site_id=site_id,
        command=command,
        inputs=check_inputs(inputs, cwd or Path.cwd()),
        results=check_results(results),
        parameters=parameters,
        out_dir=out_dir,
        timeout=timeout,
        poll_interval=poll_interval,
    )
