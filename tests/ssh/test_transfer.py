"""Unpacking the result stream: only regular files, only inside --dest, each atomically."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from mint_common.errors import TransferError, UnsafePathError
from mint_ssh.transfer import extract_stream


def _tar(members: list[tuple[str, str, bytes]], fmt: int = tarfile.GNU_FORMAT) -> io.BytesIO:
    """(name, kind, data-or-linkname) -> an uncompressed tar stream."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chardev": tarfile.CHRTYPE,
            }[kind]
            info.linkname = data.decode()
            archive.addfile(info)
    buffer.seek(0)
    return buffer


LONG = "長い名前/" + "x" * 150 + ".dat"


@pytest.mark.parametrize(
    "fmt",
    [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
    ids=["gnu", "pax"],
)
def test_regular_files_and_dirs_are_written(tmp_path: Path, fmt: int) -> None:
    big = bytes(range(256)) * 4000 + b"tail"
    stream = _tar(
        [
            ("./", "dir", b""),
            ("./結果", "dir", b""),
            ("./結果/出力.txt", "file", "データ".encode()),
            ("./big.bin", "file", big),
            (f"./{LONG}", "file", b"long"),
            ("./empty", "file", b""),
            ("./.mint-ssh/output", "file", b"control files stay remote"),
        ],
        fmt,
    )
    report = extract_stream(stream, tmp_path)
    assert (tmp_path / "結果" / "出力.txt").read_text() == "データ"
    assert (tmp_path / "big.bin").read_bytes() == big
    assert (tmp_path / LONG).read_bytes() == b"long"
    assert (tmp_path / "empty").read_bytes() == b""
    assert not (tmp_path / ".mint-ssh").exists()
    assert (report.files, report.skipped, report.refused) == (4, [], [])
    assert report.bytes == len(big) + 9 + 4


class _Trickle(io.RawIOBase):
    """Hands out a few bytes per read, like a channel under load."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, size: int = -1) -> bytes:
        piece = self.data[self.pos : self.pos + self.step]
        self.pos += len(piece)
        return piece


def test_small_reads_from_the_channel_are_reassembled(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    stream = _tar([("./a.bin", "file", data), ("./b.txt", "file", b"b")]).getvalue()
    extract_stream(_Trickle(stream, 333), tmp_path)  # type: ignore[arg-type]
    assert (tmp_path / "a.bin").read_bytes() == data
    assert (tmp_path / "b.txt").read_bytes() == b"b"


@pytest.mark.parametrize(
    ("cut", "message"),
    [(700, "ended in the middle"), (100, "ended in the middle")],
    ids=["truncated-data", "truncated-header"],
)
def test_truncated_stream_is_a_transfer_error(tmp_path: Path, cut: int, message: str) -> None:
    stream = _tar([("./a.bin", "file", bytes(5000))]).getvalue()[:cut]
    with pytest.raises(TransferError, match=message):
        extract_stream(io.BytesIO(stream), tmp_path)
    assert not (tmp_path / "a.bin").exists()


def test_garbage_is_a_transfer_error(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="bad tar header"):
        extract_stream(io.BytesIO(b"not a tar stream" * 64), tmp_path)


@pytest.mark.parametrize(
    ("member", "kind", "data"),
    [
        ("./passwd", "symlink", b"/etc/passwd"),
        ("./link", "hardlink", b"./other"),
        ("./pipe", "fifo", b""),
        ("./tty", "chardev", b""),
    ],
    ids=["symlink", "hardlink", "fifo", "device"],
)
def test_links_and_special_files_are_skipped(
    tmp_path: Path, member: str, kind: str, data: bytes
) -> None:
    report = extract_stream(_tar([(member, kind, data), ("./ok", "file", b"ok")]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
    assert report.skipped == [member[2:]]


@pytest.mark.parametrize(
    "name",
    ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt", "bad\x01name"],
    ids=["dotdot", "absolute", "nested-dotdot", "control-char"],
)
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    report = extract_stream(_tar([(name, "file", b"x"), ("./ok", "file", b"ok")]), dest)
    assert report.refused and (dest / "ok").read_bytes() == b"ok"
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path.parent / "escape.txt").exists()


def test_symlink_in_dest_is_not_written_through(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "sub").symlink_to(outside)
    report = extract_stream(_tar([("./sub/file", "file", b"x")]), dest)
    assert report.refused == ["sub/file"]
    assert list(outside.iterdir()) == []


def test_existing_symlink_file_is_not_replaced_through(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "result.txt").symlink_to(target)
    report = extract_stream(_tar([("./result.txt", "file", b"new")]), dest)
    assert report.refused == ["result.txt"]
    assert target.read_text() == "keep"


def test_a_directory_in_the_way_stops_the_download(tmp_path: Path) -> None:
    (tmp_path / "result.txt").mkdir()
    with pytest.raises(UnsafePathError, match="not a regular file"):
        extract_stream(_tar([("./result.txt", "file", b"new")]), tmp_path)
