"""Manifests: the names, sizes and SHA-256 of the files a submit or an epilog uploaded.

`fetch` verifies each download against them, and skips local files that
already match. They are JSON objects under `PREFIX/.mint-s3job/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from mint_common.errors import InputError

FORMAT = "mint-s3job-manifest/1"
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    size: int
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _lower_thread_priority() -> None:
    """Let transfers have the CPU first: on Linux a thread's nice value is its own."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def describe_files(
    files: Sequence[tuple[Path, str]], workers: int = 4, *, background: bool = False
) -> list[ManifestEntry]:
    """Hash files in parallel (hashlib releases the GIL on large blocks); with
    `background`, at a lower CPU priority so that hashing alongside an upload does
    not slow the upload down."""

    def entry(item: tuple[Path, str]) -> ManifestEntry:
        path, name = item
        return ManifestEntry(name, path.stat().st_size, sha256_file(path))

    initializer = _lower_thread_priority if background else None
    with ThreadPoolExecutor(max_workers=max(1, workers), initializer=initializer) as pool:
        return list(pool.map(entry, files))


def dump_manifest(kind: str, entries: Iterable[ManifestEntry], **extra: Any) -> bytes:
    document = {
        "format": FORMAT,
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
        "files": [{"name": e.name, "size": e.size, "sha256": e.sha256} for e in entries],
    }
    return (json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()


def parse_manifest(data: Optional[bytes], where: str) -> dict[str, ManifestEntry]:
    """Name -> entry; a missing manifest is an empty one, a malformed one is an error."""
    if data is None:
        return {}
    try:
        document = json.loads(data.decode("utf-8"))
        if document.get("format") != FORMAT:
            raise ValueError(f"unknown format {document.get('format')!r}")
        entries = {}
        for item in document["files"]:
            size, digest = item["size"], item["sha256"]
            if not isinstance(size, int) or not isinstance(digest, str) or len(digest) != 64:
                raise ValueError(f"bad entry {item!r}")
            entries[str(item["name"])] = ManifestEntry(str(item["name"]), size, digest)
        return entries
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest {where} is malformed: {exc}") from exc
