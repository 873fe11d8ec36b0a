"""`fetch`: download a job's files into DEST, never outside it, verified against the manifests."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from mint_common.errors import CantCreateError, TransferError, UnsafePathError
from mint_common.files import safe_join
from mint_s3job import layout
from mint_s3job.manifest import ManifestEntry, md5_file, parse_manifest, sha256_file
from mint_s3job.store import ObjectInfo, ObjectStore, Progress
from mint_s3job.submit import ProgressFactory

log = logging.getLogger(__name__)


@dataclass
class FetchResult:
    prefix: str
    dest: str
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    # Names that cannot be files here (`a` and `a/b`, too long, a directory in the way).
    conflicts: list[str] = field(default_factory=list)
    bytes: int = 0


@dataclass(frozen=True)
class _Planned:
    name: str
    info: ObjectInfo
    target: Path
    expected: Optional[ManifestEntry]


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in exclude)


def load_manifests(
    store: ObjectStore, prefix: str, objects: dict[str, ObjectInfo]
) -> dict[str, tuple[ManifestEntry, datetime]]:
    """Name -> (entry, when its manifest was written); the epilog's entries win."""
    merged: dict[str, tuple[ManifestEntry, datetime]] = {}
    for name in (layout.SUBMIT_MANIFEST, layout.EPILOG_MANIFEST):
        if name in objects:
            data = store.get_bytes(layout.key(prefix, name), limit=64 * 1024 * 1024)
            written = objects[name].last_modified
            for entry in parse_manifest(data, f"{prefix}/{name}").values():
                merged[entry.name] = (entry, written)
    return merged


def _plain_md5(etag: str) -> Optional[str]:
    value = etag.strip('"')
    return value if len(value) == 32 and "-" not in value else None


def matches(path: Path, info: ObjectInfo, expected: Optional[ManifestEntry]) -> bool:
    """Same size and checksum as the object (manifest SHA-256, else a plain-MD5 ETag)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size != info.size:
        return False
    if expected is not None:
        return expected.size == size and sha256_file(path) == expected.sha256
    md5 = _plain_md5(info.etag)
    return md5 is not None and md5_file(path) == md5


def plan_fetch(
    store: ObjectStore, prefix: str, dest: Path, include: Sequence[str], exclude: Sequence[str]
) -> tuple[list[_Planned], list[str], list[str]]:
    """(what to fetch, keys refused as unsafe, names skipped as conflicts)."""
    objects = {layout.relative_name(prefix, o.key): o for o in store.list_objects(prefix + "/")}
    manifests = load_manifests(store, prefix, objects)
    planned: list[_Planned] = []
    refused: list[str] = []
    safe: dict[str, Path] = {}
    for name, info in sorted(objects.items()):
        if layout.is_metadata(name) or name.endswith("/") or not _selected(name, include, exclude):
            continue
        try:
            safe[name] = safe_join(dest, name)
        except UnsafePathError as exc:
            log.error("refusing object %s: %s", info.key, exc.message)
            refused.append(info.key)
    problems = layout.name_problems(safe, str(dest))
    for name, why in sorted(problems.items()):
        log.warning("skipping %s: %s", layout.key(prefix, name), why)
    for name, target in safe.items():
        if name in problems:
            continue
        info = objects[name]
        entry, written = manifests.get(name, (None, None))
        # A manifest describes the object only if the object was not rewritten after it.
        valid = entry if written is not None and info.last_modified <= written else None
        planned.append(_Planned(name, info, target, valid))
    return planned, refused, sorted(problems)


def fetch(
    store: ObjectStore,
    prefix: str,
    dest: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    progress: ProgressFactory,
) -> FetchResult:
    layout.check_prefix(prefix)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CantCreateError(f"cannot create {dest}: {exc.strerror}") from exc
    planned, refused, conflicts = plan_fetch(store, prefix, dest, include, exclude)
    result = FetchResult(prefix, str(dest), refused=refused, conflicts=conflicts)
    todo = []
    for item in planned:
        if item.target.is_file() and matches(item.target, item.info, item.expected):
            result.skipped.append(item.name)
        elif _place_for(item, dest, prefix):
            todo.append(item)
        else:
            result.conflicts.append(item.name)
    todo = _download(store, todo, progress, result.conflicts)
    result.downloaded = [item.name for item in todo]
    result.bytes = sum(item.info.size for item in todo)
    if refused:
        raise UnsafePathError(
            f"refused {len(refused)} object(s) whose names lead outside {dest}: "
            + ", ".join(repr(k) for k in refused[:5])
            + f" (downloaded {len(todo)}, skipped {len(result.skipped)})"
        )
    return result


def _place_for(item: _Planned, dest: Path, prefix: str) -> bool:
    """Make the object's parent directory; False (with a warning) when something local is in
    the way: a file where a directory must be, or a directory where the file must go."""
    try:
        item.target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        log.warning(
            "skipping %s: a file in %s is in the way of its directory",
            layout.key(prefix, item.name),
            dest,
        )
        return False
    except OSError as exc:
        raise CantCreateError(f"cannot create {item.target.parent}: {exc.strerror}") from exc
    if item.target.is_dir() and not item.target.is_symlink():
        log.warning("skipping %s: %s is a directory", layout.key(prefix, item.name), item.target)
        return False
    return True


def _download(
    store: ObjectStore, todo: Sequence[_Planned], progress: ProgressFactory, conflicts: list[str]
) -> list[_Planned]:
    """Fetch `todo` through temporary files; what was put in place (a directory made in the
    meantime is reported among `conflicts`)."""
    # Short temporary names: the object's own name may already be near NAME_MAX.
    temps = [i.target.parent / f".mint-fetch-{secrets.token_hex(8)}.part" for i in todo]
    done = []
    try:
        with progress("fetch", sum(i.info.size for i in todo)) as advance:
            _transfer(store, todo, temps, advance)
        for item, temp in zip(todo, temps):
            _verify(item, temp)
            try:
                os.replace(temp, item.target)
            except IsADirectoryError:
                log.warning("skipping %s: %s is a directory", item.info.key, item.target)
                conflicts.append(item.name)
                continue
            done.append(item)
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
    return done


def _transfer(
    store: ObjectStore, todo: Sequence[_Planned], temps: Sequence[Path], advance: Progress
) -> None:
    store.download_files([(i.info.key, t) for i, t in zip(todo, temps)], advance)


def _verify(item: _Planned, temp: Path) -> None:
    size = temp.stat().st_size
    if size != item.info.size:
        raise TransferError(f"{item.info.key}: got {size} bytes, the object has {item.info.size}")
    if item.expected is not None:
        digest = sha256_file(temp)
        if digest != item.expected.sha256:
            raise TransferError(
                f"{item.info.key}: SHA-256 {digest} does not match the manifest's"
                f" {item.expected.sha256}; the download was discarded"
            )
