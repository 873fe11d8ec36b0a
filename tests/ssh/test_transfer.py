"""Unpacking the result stream: only regular files, only inside --dest, each atomically."""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mint_common.errors import TransferError
from mint_ssh.tarstream import READ_SIZE, TarStream
from mint_ssh.transfer import extract_stream, partial_name


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


@pytest.mark.parametrize("kind", ["symlink", "fifo"], ids=["symlink", "fifo"])
def test_an_unsafe_name_is_refused_whatever_the_member_is(tmp_path: Path, kind: str) -> None:
    """A refusal fails the run (65); a skip only warns: the name is judged before the kind."""
    dest = tmp_path / "dest"
    dest.mkdir()
    report = extract_stream(_tar([("../escape", kind, b"/etc/passwd")]), dest)
    assert (report.refused, report.skipped) == (["../escape"], [])


def test_excluded_names_and_the_dirs_under_them_are_passed_over(tmp_path: Path) -> None:
    members = [("./a.log", "file", b"l"), ("./logs/x", "file", b"x"), ("./ok", "file", b"ok")]
    report = extract_stream(_tar(members), tmp_path, exclude=["*.log", "logs"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
    assert report.fetched == [("ok", 2)]


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


def test_a_directory_in_the_way_is_skipped_and_the_rest_comes(tmp_path: Path) -> None:
    (tmp_path / "result.txt").mkdir()
    report = extract_stream(
        _tar([("./result.txt", "file", b"new"), ("./b", "file", b"b")]), tmp_path
    )
    assert report.conflicts == ["result.txt"]
    assert (tmp_path / "result.txt").is_dir() and (tmp_path / "b").read_bytes() == b"b"


class _Endless:
    """A stream that sends `head` and then `filler` bytes for ever; counts what was read."""

    def __init__(self, head: bytes, filler: bytes = b"a") -> None:
        self.head = head
        self.filler = filler
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else 65536
        if self.sent < len(self.head):
            piece = self.head[self.sent : self.sent + size]
        else:
            piece = self.filler * size
        self.sent += len(piece)
        return piece


def _header(name: str, size: int, kind: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


@pytest.mark.parametrize(
    "kind", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE],
    ids=["gnu-long-name", "gnu-long-link", "pax"],
)  # fmt: skip
def test_an_oversized_name_header_is_refused_before_its_data_is_read(
    tmp_path: Path, kind: bytes
) -> None:
    stream = _Endless(_header("././@LongLink", 10**12, kind))
    with pytest.raises(TransferError, match="1000000000000-byte name or pax header"):
        TarStream(stream, max_header=4096).members().__next__()  # type: ignore[arg-type]
    assert stream.sent <= READ_SIZE


def test_a_name_header_within_the_bound_is_read(tmp_path: Path) -> None:
    name = "n" * 3000
    stream = _tar([(f"./{name}", "file", b"x")])
    (member,) = list(TarStream(stream, max_header=4096).members())
    assert member.name == f"./{name}"


def test_a_huge_file_still_streams_in_bounded_pieces(tmp_path: Path) -> None:
    """The bound is on headers only: member data of any size passes, piece by piece."""
    size = 8 * READ_SIZE + 7
    stream = _Endless(_header("big", size, tarfile.REGTYPE), b"\0")
    archive = TarStream(stream, max_header=1024)  # type: ignore[arg-type]
    next(archive.members())
    pieces: list[int] = []
    archive.copy_data(lambda piece: pieces.append(len(piece)))
    assert sum(pieces) == size and max(pieces) <= READ_SIZE


@pytest.mark.parametrize("size", ["-5", "²", "1" * 30, "0x10"], ids=["neg", "super", "long", "hex"])
def test_a_bad_pax_size_is_refused(tmp_path: Path, size: str) -> None:
    record = f"size={size}\n".encode()
    length = len(record) + 3
    length += len(str(length)) - 2
    data = f"{length} ".encode() + record
    stream = io.BytesIO(
        _header("pax", len(data), tarfile.XHDTYPE) + data.ljust(512, b"\0")
        + _header("f", 0, tarfile.REGTYPE) + bytes(1024)
    )  # fmt: skip
    with pytest.raises(TransferError, match="pax"):
        extract_stream(stream, tmp_path)


def test_a_file_then_a_dir_of_that_name_skips_only_that_entry(tmp_path: Path) -> None:
    members = [("./a", "file", b"a"), ("./a/b", "file", b"b"), ("./a/c/d", "file", b"d"),
               ("./e", "file", b"e")]  # fmt: skip
    report = extract_stream(_tar(members), tmp_path)
    assert report.conflicts == ["a/b", "a/c/d"]
    assert (report.files, report.refused) == (2, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "e"]


def test_a_name_too_long_for_this_file_system_is_skipped(tmp_path: Path) -> None:
    report = extract_stream(
        _tar([("./" + "n" * 300, "file", b"x"), ("./ok", "file", b"k")]), tmp_path
    )
    assert report.conflicts == ["n" * 300]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def test_partial_files_are_named_by_the_run_and_replaced_on_the_next_try(tmp_path: Path) -> None:
    leftover = partial_name(tmp_path / "out.dat", "run1")
    leftover.write_bytes(b"half of an earlier download")
    extract_stream(_tar([("./out.dat", "file", b"whole")]), tmp_path, "run1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dat"]
    assert (tmp_path / "out.dat").read_bytes() == b"whole"


def test_a_partial_name_planted_as_a_symlink_is_not_written_through(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep")
    dest = tmp_path / "dest"
    dest.mkdir()
    partial_name(dest / "out.dat", "run1").symlink_to(precious)
    report = extract_stream(_tar([("./out.dat", "file", b"new")]), dest, "run1")
    assert report.conflicts == ["out.dat"]
    assert precious.read_text() == "keep"


@settings(
    max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=4096),
    head=st.sampled_from([b"", bytes(_tar([("./x", "file", b"y")]).getvalue()[:512])]),
)
def test_random_bytes_give_a_refusal_or_files_inside_dest(
    tmp_path: Path, data: bytes, head: bytes
) -> None:
    dest = tmp_path / f"d{uuid.uuid4().hex}"
    dest.mkdir()
    with contextlib.suppress(TransferError):
        extract_stream(io.BytesIO(head + data), dest)
    for path in dest.rglob("*"):
        assert path.resolve().is_relative_to(dest.resolve())
    assert sorted(tmp_path.iterdir()) == sorted(tmp_path.glob("d*"))


@settings(max_examples=200, deadline=2000)
@given(data=st.binary(min_size=512, max_size=2048), size=st.integers(0, 10**15))
def test_random_headers_never_buffer_past_the_bound(data: bytes, size: int) -> None:
    kind = tarfile.GNUTYPE_LONGNAME
    stream = _Endless(_header("././@LongLink", size, kind) + data)
    with contextlib.suppress(TransferError):
        next(TarStream(stream, max_header=1024).members(), None)  # type: ignore[arg-type]
    assert stream.sent <= 2 * READ_SIZE + len(data) + 512
