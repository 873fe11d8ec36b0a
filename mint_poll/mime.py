"""The two "mime words" the protocol sends with each file (what `file -b -i` prints)."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from mint_common.errors import UnavailableError
from mint_common.proc import run_command

log = logging.getLogger(__name__)

BINARY_WORDS = ("application/octet-stream;", "charset=binary")
FILE_TIMEOUT = 30.0
_MIME_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+;")


def mime_words(path: Path) -> tuple[str, str]:
    """`("text/plain;", "charset=us-ascii")` for `path`, as the legacy clients send.

    The words are advisory only (quirk 11); when `file` is missing or fails,
    a file is described as binary rather than failing the transfer.
    """
    program = shutil.which("file")
    if program is None:
        return BINARY_WORDS
    try:
        result = run_command([program, "-b", "-i", "--", str(path)], timeout=FILE_TIMEOUT)
    except UnavailableError as exc:
        log.debug("file -b -i %s failed: %s", path, exc)
        return BINARY_WORDS
    words = result.stdout.strip().split(" ", 1)
    # `file` exits 0 for a file it cannot open, printing a message instead of a type
    if result.failed or len(words) != 2 or not _MIME_TYPE.fullmatch(words[0]):
        return BINARY_WORDS
    return words[0], words[1]
