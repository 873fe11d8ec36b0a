"""A forward-only tar reader for the result stream.

tarfile's stream mode copies every block several times on its way out, which
halved download throughput; here headers are parsed with `tarfile.TarInfo.frombuf`
(ustar/GNU, GNU long names, pax records) and file data goes straight from the
channel's buffers to the caller.

Memory is bounded whatever the remote side sends: a long-name or pax header may hold at
most `max_header` bytes (64 KiB by default; Linux paths end at 4096), member data is
streamed through in pieces of at most `READ_SIZE`, so files of any size keep flowing.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import BinaryIO, Callable

from mint_common.errors import TransferError

BLOCK = 512
READ_SIZE = 1024 * 1024
ZERO_BLOCK = bytes(BLOCK)
MAX_HEADER_DATA = 64 * 1024
_LONG_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarStream:
    """Iterate `members()`; for each, call `copy_data(write)` or leave it (it is skipped)."""

    def __init__(self, stream: BinaryIO, max_header: int = MAX_HEADER_DATA) -> None:
        self.stream = stream
        self.max_header = max_header
        self._buf = b""
        self._pos = 0
        self._unread = 0  # data bytes (with padding) of the current member not yet consumed
        self._data_size = 0

    def _next_chunk(self) -> None:
        data = self.stream.read(READ_SIZE)
        if not data:
            raise TransferError("the result stream ended in the middle of the archive")
        rest = self._buf[self._pos :]
        self._buf = rest + data if rest else data
        self._pos = 0

    def _read_exact(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size:
            self._next_chunk()
        out = self._buf[self._pos : self._pos + size]
        self._pos += size
        return out

    def _pass(self, size: int, write: Callable[[memoryview], object]) -> None:
        while size > 0:
            if self._pos >= len(self._buf):
                self._next_chunk()
            take = min(size, len(self._buf) - self._pos)
            write(memoryview(self._buf)[self._pos : self._pos + take])
            self._pos += take
            size -= take

    def copy_data(self, write: Callable[[memoryview], object]) -> None:
        """Pass the current member's data to `write` in pieces (call once per member)."""
        size = self._data_size
        self._pass(size, write)
        self._pass(self._unread - size, lambda _piece: None)
        self._unread = 0

    def members(self) -> Iterator[tarfile.TarInfo]:
        long_names: dict[bytes, str] = {}
        pax: dict[str, str] = {}
        while True:
            self._pass(self._unread, lambda _piece: None)
            self._unread = 0
            header = self._read_exact(BLOCK)
            if header == ZERO_BLOCK:
                return
            try:
                info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise TransferError(f"the result stream has a bad tar header: {exc}") from exc
            if info.type in _LONG_TYPES or info.type in _PAX_TYPES:
                if info.size > self.max_header:
                    raise TransferError(
                        f"the result stream announces a {info.size}-byte name or pax header"
                        f" (more than {self.max_header} bytes); refusing it"
                    )
                data = self._read_exact(_padded(info.size))[: info.size]
                if info.type in _LONG_TYPES:
                    long_names[info.type] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                elif info.type != tarfile.XGLTYPE:
                    pax.update(_pax_records(data))
                continue
            _apply_extensions(info, long_names, pax)
            long_names, pax = {}, {}
            has_data = info.type not in (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE)
            self._data_size = info.size if has_data else 0
            self._unread = _padded(self._data_size)
            yield info


def _apply_extensions(
    info: tarfile.TarInfo, long_names: dict[bytes, str], pax: dict[str, str]
) -> None:
    if tarfile.GNUTYPE_LONGNAME in long_names:
        info.name = long_names[tarfile.GNUTYPE_LONGNAME]
    if tarfile.GNUTYPE_LONGLINK in long_names:
        info.linkname = long_names[tarfile.GNUTYPE_LONGLINK]
    if "path" in pax:
        info.name = pax["path"]
    if "linkpath" in pax:
        info.linkname = pax["linkpath"]
    if "size" in pax:
        size = pax["size"]
        if not (size.isascii() and size.isdigit() and len(size) <= 20):
            raise TransferError(f"bad pax size {size[:40]!r} in the result stream")
        info.size = int(size)


def _pax_records(data: bytes) -> dict[str, str]:
    """`<length> <key>=<value>\\n` records."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TransferError("the result stream has a malformed pax header") from None
        if space < 0 or length <= 0:
            raise TransferError("the result stream has a malformed pax header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records
