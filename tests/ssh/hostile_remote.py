"""A hostile remote host for mint-ssh: stands in for `tar` and `cat` on the remote PATH.

The test sshd's forced command puts a directory first on PATH whose `tar` and `cat` run
this script (`hostile_remote.py TOOL ARGS...`), with HOSTILE_DIR set. The scenario is
`$HOSTILE_DIR/scenario.json`; a tool it does not mention runs the real one, so the rest
of the request behaves as on any host. Keys:

  status        text `cat -- .mint-ssh/status` prints (with a newline)
  status_flood  bytes of "7" `cat -- .mint-ssh/status` prints, without a newline
  stderr_flood  bytes tar writes to stderr before it runs the real tar
  tar_file      a prepared archive tar sends instead of the run dir
  long_name     the size a GNU long-name header announces (and that much name is sent)
  stall_after   with tar_file: send this many bytes, then stall (a download to kill)

Standard library only: it runs on the "remote" side.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO

REAL = {"tar": "/usr/bin/tar", "cat": "/bin/cat"}
PIECE = 1024 * 1024


def _scenario() -> dict[str, Any]:
    path = Path(os.environ["HOSTILE_DIR"]) / "scenario.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _repeat(out: BinaryIO, byte: bytes, count: int) -> None:
    piece = byte * PIECE
    while count > 0:
        out.write(piece[: min(count, PIECE)])
        count -= PIECE


def _long_name(size: int) -> None:
    """A GNU long-name header announcing `size` bytes, the name itself, then a normal end."""
    out = sys.stdout.buffer
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = size
    out.write(header.tobuf(tarfile.GNU_FORMAT))
    _repeat(out, b"a", size)
    out.write(bytes(-size % 512) + bytes(1024))


def _send_file(path: str, stall_after: int) -> None:
    data = Path(path).read_bytes()
    out = sys.stdout.buffer
    if not stall_after:
        out.write(data)
        return
    out.write(data[:stall_after])
    out.flush()
    time.sleep(20)  # the test kills the client meanwhile
    sys.exit(1)


def main(tool: str, args: list[str]) -> None:
    scenario = _scenario()
    if tool == "cat" and args == ["--", ".mint-ssh/status"]:
        if "status" in scenario:
            sys.stdout.write(f"{scenario['status']}\n")
            return
        if "status_flood" in scenario:
            _repeat(sys.stdout.buffer, b"7", int(scenario["status_flood"]))
            return
    if tool == "tar":
        if "stderr_flood" in scenario:
            _repeat(sys.stderr.buffer, b"!", int(scenario["stderr_flood"]))
            sys.stderr.flush()
        if "long_name" in scenario:
            _long_name(int(scenario["long_name"]))
            return
        if "tar_file" in scenario:
            _send_file(scenario["tar_file"], int(scenario.get("stall_after", 0)))
            return
    sys.stdout.flush()
    os.execv(REAL[tool], [tool, *args])  # noqa: S606 - the real tool, as the host has it


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2:])
    except BrokenPipeError:
        os._exit(141)  # as the real tools die of SIGPIPE when the client stops reading
