"""What `--input` sends: files under their names, directories as `DIR/...` or, given as `DIR/`,
their contents (the rsync rule), refusing anything that would reach outside what was given."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Union

from mint_common.errors import InputError, NoInputError
from mint_ssh import protocol

log = logging.getLogger(__name__)

# A local file and the name it gets in the remote working dir (`a.dat`, `DIR/sub/b.dat`).
InputFile = tuple[Path, str]
Given = Union[str, Path]


def as_input(given: Union[Path, InputFile]) -> InputFile:
    """A bare path is sent under its own name."""
    return (given, given.name) if isinstance(given, Path) else given


def expand_inputs(inputs: Sequence[Given]) -> list[InputFile]:
    """Every file the inputs send, in order; NoInputError (66) for a missing or unreadable
    one, InputError (65) for two with the same name or a symlink leading out of its dir."""
    files: list[InputFile] = []
    for given in inputs:
        text = str(given)
        path = Path(text)
        if path.is_dir():
            files += _directory(path, contents_only=text.endswith("/"))
        else:
            files.append((_regular(path, f"input file {path}"), path.name))
    seen: dict[str, Path] = {}
    for path, name in files:
        if name in seen:
            raise InputError(f"two inputs have the same name {name!r}: {seen[name]} and {path}")
        seen[name] = path
    return files


def _regular(path: Path, what: str) -> Path:
    if not path.is_file():
        raise NoInputError(f"{what} does not exist or is not a regular file")
    if not os.access(path, os.R_OK):
        raise NoInputError(f"{what} is not readable")
    return path


def _directory(top: Path, *, contents_only: bool) -> list[InputFile]:
    """The files below `top`, named relative to it (under `top`'s own name unless
    `contents_only`). Symlinks are followed only while they stay inside `top`."""
    root = top.resolve()
    prefix = PurePosixPath() if contents_only else PurePosixPath(root.name)
    files: list[InputFile] = []
    for current, dirs, names in os.walk(top):
        dirs.sort()
        here = Path(current)
        for name in sorted(names) + [d for d in dirs if (here / d).is_symlink()]:
            path = here / name
            relative = PurePosixPath(path.relative_to(top).as_posix())
            if path.is_symlink():
                target = path.resolve()
                if target != root and root not in target.parents:
                    raise InputError(
                        f"{path} is a symlink to {target}, outside the input dir {top};"
                        " refusing to send it",
                        hint=f"copy the file into {top}, or give it as an --input of its own",
                    )
                if target.is_dir():
                    log.warning("skipped %s: a symlink to a directory inside %s", path, top)
                    continue
            remote = prefix / relative
            if remote.parts[0] == protocol.CONTROL_DIR:
                raise InputError(f"{path}: the name {protocol.CONTROL_DIR} is mint-ssh's own")
            files.append((_regular(path, f"input {path}"), str(remote)))
    if not files:
        log.warning("the input dir %s holds no files; nothing of it is sent", top)
    return files
