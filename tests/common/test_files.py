from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mint_common.errors import CantCreateError, InputError, LockHeld, UnsafePathError
from mint_common.files import (
    JsonState,
    SingleInstanceLock,
    atomic_write,
    atomic_writer,
    check_relative_name,
    safe_join,
)


def test_atomic_write_replaces_content_with_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    atomic_write(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_honours_mode(tmp_path: Path) -> None:
    atomic_write(tmp_path / "public.txt", b"x", mode=0o644)
    assert stat.S_IMODE((tmp_path / "public.txt").stat().st_mode) == 0o644


def test_atomic_writer_keeps_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "result.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("network dropped")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["result.bin"]


def test_atomic_writer_text_mode(tmp_path: Path) -> None:
    with atomic_writer(tmp_path / "t.txt", binary=False) as handle:
        handle.write("計算\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "計算\n"


def test_atomic_write_in_missing_directory_is_cant_create(tmp_path: Path) -> None:
    with pytest.raises(CantCreateError, match=str(tmp_path / "missing")):
        atomic_write(tmp_path / "missing" / "f", b"x")


def test_json_state_round_trip_and_default(tmp_path: Path) -> None:
    state = JsonState(tmp_path / "sub" / "run.json")
    assert not state.exists()
    assert state.load(default={"fresh": True}) == {"fresh": True}
    state.save({"phase": "running", "名前": "値", "n": 3})
    assert state.exists()
    assert state.load() == {"phase": "running", "名前": "値", "n": 3}
    assert json.loads(state.path.read_text(encoding="utf-8"))["phase"] == "running"


def test_json_state_refuses_malformed_file_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text('{"phase": "runn', encoding="utf-8")
    with pytest.raises(InputError) as info:
        JsonState(path).load()
    assert str(path) in str(info.value)
    assert "line 1" in str(info.value)
    assert info.value.exit_status == 65
    assert path.read_text(encoding="utf-8") == '{"phase": "runn'


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/etc/passwd",
        "a/../../x",
        "a/../b",
        "..",
        "",
        " ",
        ".",
        "./",
        "a\x00b",
        "a\nb",
        "x/\x1b[31m",
    ],
    ids=[
        "dotdot",
        "absolute",
        "nested-escape",
        "inner-dotdot",
        "bare-dotdot",
        "empty",
        "blank",
        "dot",
        "dot-slash",
        "nul",
        "newline",
        "escape-seq",
    ],
)
def test_safe_join_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_safe_join_accepts_nested_and_japanese_names(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/b/計算結果.txt") == tmp_path / "a" / "b" / "計算結果.txt"
    assert safe_join(tmp_path, "./a//b") == tmp_path / "a" / "b"


def test_safe_join_refuses_symlink_pointing_outside(tmp_path: Path) -> None:
    base = tmp_path / "work"
    base.mkdir()
    (base / "link").symlink_to("/etc")
    (base / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(base, "link/passwd")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(base, "passwd")


def test_safe_join_allows_symlink_that_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert safe_join(tmp_path, "alias/f") == tmp_path / "alias" / "f"


def test_safe_join_works_when_base_itself_is_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "base").symlink_to(tmp_path / "real")
    assert safe_join(tmp_path / "base", "x") == tmp_path / "base" / "x"


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "計", ""]), min_size=1, max_size=6))
def test_safe_join_result_never_leaves_base(parts: list[str]) -> None:
    base = Path("/srv/work")
    name = "/".join(parts)
    try:
        joined = safe_join(base, name)
    except UnsafePathError:
        return
    assert os.path.commonpath([base, os.path.normpath(joined)]) == str(base)
    assert ".." not in check_relative_name(name).parts


LOCK_HOLDER = textwrap.dedent(
    """
    import sys, time
    from mint_common.files import SingleInstanceLock
    with SingleInstanceLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def test_lock_contention_from_a_second_process(tmp_path: Path) -> None:
    lock_path = tmp_path / "locks" / "once.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(lock_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld) as info:
            SingleInstanceLock(lock_path).acquire()
        assert info.value.exit_status == 75
        assert str(lock_path) in str(info.value)
        assert f"pid {holder.pid}" in str(info.value)
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=10)
    with SingleInstanceLock(lock_path):
        assert lock_path.read_text().strip() == str(os.getpid())


def test_lock_is_released_when_holder_is_killed(tmp_path: Path) -> None:
    lock_path = tmp_path / "once.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(lock_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=10)
    with SingleInstanceLock(lock_path):
        pass


def test_lock_in_unwritable_place_is_cant_create(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CantCreateError, match="lock"):
        SingleInstanceLock(blocker / "x.lock").acquire()


def test_lock_held_within_same_process_by_other_descriptor(tmp_path: Path) -> None:
    first = SingleInstanceLock(tmp_path / "l")
    first.acquire()
    try:
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
            SingleInstanceLock(tmp_path / "l").acquire()
    finally:
        first.release()
    first.release()
