"""Moving files: uploads into `.part` files, and unpacking the result tar stream safely."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import logging
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

from mint_common.errors import TransferError, UnsafePathError
from mint_common.files import fsync_dir, safe_join
from mint_common.progress import transfer_progress
from mint_ssh import protocol
from mint_ssh.connection import CHUNK, ExecResult, RemoteHost, refused_by_gate
from mint_ssh.inputs import InputFile, as_input
from mint_ssh.tarstream import TarStream

log = logging.getLogger(__name__)
# Linux limits one argument or environment string (the command `bash -c` gets, and the gate's
# SSH_ORIGINAL_COMMAND) to 128 KiB; stay well below it. Counted in UTF-8 bytes.
UPLOAD_COMMAND_LIMIT = 64 * 1024


@dataclasses.dataclass
class DownloadReport:
    files: int = 0
    bytes: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)  # not regular files: policy
    refused: list[str] = dataclasses.field(default_factory=list)  # unsafe names
    # names that cannot be placed (`a` is a file, then `a/b` comes; a name too long here)
    conflicts: list[str] = dataclasses.field(default_factory=list)
    fetched: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (name, size)
    unchanged: list[str] = dataclasses.field(default_factory=list)  # inputs left in place


def excluded_by(name: str, patterns: Sequence[str]) -> bool:
    """`name` or one of the dirs it is in matches one of the globs."""
    parts = name.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(p, pattern) for p in prefixes for pattern in patterns)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def upload_items(
    inputs: Sequence[Union[Path, InputFile]], *, verify_sha256: bool
) -> list[protocol.UploadItem]:
    """What the remote side is told about each input: name, size, sha256 (if checked)."""
    return [
        protocol.UploadItem(name, path.stat().st_size, file_sha256(path) if verify_sha256 else "")
        for path, name in map(as_input, inputs)
    ]


def upload_files(
    host: RemoteHost,
    workdir: str,
    inputs: Sequence[Union[Path, InputFile]],
    *,
    verify_sha256: bool,
) -> None:
    """Stream the files back to back into their `.part` files in one request (or a few, for
    many names); the remote side checks each size (and sha256) before renaming it into place,
    so a broken upload never looks complete."""
    items = upload_items(inputs, verify_sha256=verify_sha256)
    paths = [path for path, _ in map(as_input, inputs)]
    for batch in _batches(workdir, list(zip(paths, items))):
        _upload_batch(host, workdir, batch)


def _batches(
    workdir: str, pairs: list[tuple[Path, protocol.UploadItem]]
) -> Iterator[list[tuple[Path, protocol.UploadItem]]]:
    batch: list[tuple[Path, protocol.UploadItem]] = []
    for pair in pairs:
        longer = protocol.upload(workdir, [item for _, item in [*batch, pair]])
        if batch and len(longer.encode()) > UPLOAD_COMMAND_LIMIT:
            yield batch
            batch = []
        batch.append(pair)
    if batch:
        yield batch


def _upload_batch(
    host: RemoteHost, workdir: str, batch: list[tuple[Path, protocol.UploadItem]]
) -> None:
    items = [item for _, item in batch]
    label = items[0].name if len(items) == 1 else f"{len(items)} files"
    with transfer_progress(f"upload {label}", sum(item.size for item in items)) as advance:
        result = host.upload(protocol.upload(workdir, items), file_blocks(batch), advance)
    if result.failed:
        refused_by_gate(result)
        raise upload_failed(workdir, items, result)
    log_uploaded(items)


def upload_failed(
    workdir: str, items: Sequence[protocol.UploadItem], result: ExecResult
) -> TransferError:
    names = ", ".join(item.name for item in items)
    check = "size or sha256" if any(item.sha256 for item in items) else "size"
    return TransferError(
        f"upload of {names} to {workdir} failed ({check} check on the remote side):"
        f" {result.error_text() or f'exit status {result.return_code}'}"
    )


def log_uploaded(items: Sequence[protocol.UploadItem]) -> None:
    for item in items:
        log.info(
            "uploaded %s (%d bytes%s)",
            item.name,
            item.size,
            ", sha256 checked" if item.sha256 else "",
        )


def file_blocks(batch: list[tuple[Path, protocol.UploadItem]]) -> Iterator[bytes]:
    """The files of a batch back to back, each exactly the size announced in the command."""
    for path, item in batch:
        with open(path, "rb") as handle:
            left = item.size
            while left:
                block = handle.read(min(CHUNK, left))
                if not block:
                    raise TransferError(f"{path} shrank while it was being uploaded")
                left -= len(block)
                yield block
            if handle.read(1):
                raise TransferError(f"{path} grew while it was being uploaded")


def _member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def partial_name(target: Path, tag: str) -> Path:
    """Where a result is written before it is renamed into place: the same name for the
    same run, so a download killed half-way is finished (not left behind) by `resume`."""
    return target.with_name(f".{target.name}.{tag}.tmp")


def extract_stream(
    stream: BinaryIO,
    dest: Path,
    tag: str = "mint-ssh",
    *,
    exclude: Sequence[str] = (),
    sources: Optional[Mapping[str, Path]] = None,
) -> DownloadReport:
    """Unpack a tar stream into `dest`: regular files atomically, directories; nothing else.
    `tag` (the run id) names the partial files; names matching an `exclude` glob are passed
    over. `sources` maps input names to the local files they came from: one that would land
    on its own source with the same content is left alone (not written over itself)."""
    report = DownloadReport()
    archive = TarStream(stream)
    with transfer_progress("download", None) as advance:
        unpacker = _Unpacker(archive, dest, tag, advance, sources or {}, report)
        for member in archive.members():
            name = _member_name(member)
            if not name or name == "." or name.split("/")[0] == protocol.CONTROL_DIR:
                continue
            if exclude and excluded_by(name, exclude):
                continue
            unpacker.unpack(member, name)
    return report


@dataclasses.dataclass
class _Unpacker:
    """Places the members of one result stream, noting each in `report`."""

    archive: TarStream
    dest: Path
    tag: str
    advance: Callable[[int], None]
    sources: Mapping[str, Path]
    report: DownloadReport

    def unpack(self, member: tarfile.TarInfo, name: str) -> None:
        # An unsafe name is refused whatever the member is: a symlink named `../x` too.
        target = self._target(member, name)
        if target is None:
            return
        if not (member.isdir() or member.isfile()):
            detail = f" -> {member.linkname}" if member.linkname else ""
            log.warning(
                "skipped %s %s%s: only regular files are fetched", _kind(member), name, detail
            )
            self.report.skipped.append(name)
            return
        origin = self.sources.get(name)
        same_as = origin if origin is not None and _same_file(origin, target) else None
        try:
            placed = _place(self.archive, member, target, self.tag, self.advance, same_as)
        except (OSError, UnsafePathError) as exc:
            log.warning("skipped %s: cannot place it in %s: %s", name, self.dest, exc)
            self.report.conflicts.append(name)
            return
        if not placed:
            self.report.unchanged.append(name)
        elif member.isfile():
            self.report.files += 1
            self.report.bytes += member.size
            self.report.fetched.append((name, member.size))

    def _target(self, member: tarfile.TarInfo, name: str) -> Optional[Path]:
        """Where `name` goes under dest; None (and noted) when it is unsafe or cannot go."""
        try:
            target = safe_join(self.dest, name)
            if target.is_symlink():
                raise UnsafePathError(f"refusing to replace the symlink {target}")
        except UnsafePathError as exc:
            log.error("refused %r from the remote side: %s", member.name, exc)
            self.report.refused.append(name)
            return None
        except OSError as exc:  # a name this file system cannot hold
            log.warning("skipped %s: cannot place it in %s: %s", name, self.dest, exc.strerror)
            self.report.conflicts.append(name)
            return None
        return target


def _same_file(source: Path, target: Path) -> bool:
    try:
        return os.path.samefile(source, target)
    except OSError:
        return False


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hard link"
    return "special file"


def _place(
    archive: TarStream,
    member: tarfile.TarInfo,
    target: Path,
    tag: str,
    advance: Callable[[int], None],
    same_as: Optional[Path] = None,
) -> bool:
    """Make the directory, or write the file; an OSError before any data is written means the
    name cannot be placed (the caller skips it); one while writing is a TransferError.
    False when the file is `same_as` (its own source) with the same content: left alone."""
    if member.isdir():
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        return True
    if same_as is not None and same_as.stat().st_size != member.size:
        same_as = None
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if target.exists() and not target.is_file():
        raise UnsafePathError(f"refusing to replace {target}: it is not a regular file")
    partial = partial_name(target, tag)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with open(fd, "wb", closefd=True) as out:
            os.fchmod(fd, (member.mode & 0o755) | 0o600)

            digest = hashlib.sha256()

            def write(piece: memoryview) -> None:
                out.write(piece)
                if same_as is not None:
                    digest.update(piece)
                advance(len(piece))

            try:
                archive.copy_data(write)
                out.flush()
                os.fsync(fd)
            except OSError as exc:
                raise TransferError(f"cannot write {target}: {exc.strerror}") from exc
        if same_as is not None and digest.hexdigest() == file_sha256(same_as):
            os.unlink(partial)
            return False
        os.replace(partial, target)
        fsync_dir(target.parent)
        return True
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
