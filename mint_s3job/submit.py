"""`submit`: upload a job's files, its manifest, then job-aws-stat.txt = FILE_UPLOAD last.

The state object is the commit point: until it exists no dispatcher (ours or
the seed's sub-job.sh) looks at the prefix, so an interrupted submit leaves
nothing that will run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mint_common.errors import CantCreateError, InputError, NoInputError
from mint_common.files import check_relative_name
from mint_s3job import layout
from mint_s3job.layout import State
from mint_s3job.manifest import describe_files, dump_manifest
from mint_s3job.store import ObjectStore, Progress

log = logging.getLogger(__name__)
ProgressFactory = Callable[[str, int], AbstractContextManager[Progress]]


@dataclass(frozen=True)
class SubmitResult:
    bucket: str
    prefix: str
    files: int
    bytes: int
    seconds: float
    replaced: bool


def collect_inputs(script: Path, paths: Sequence[str]) -> list[tuple[Path, str]]:
    """(local file, name under the prefix) for the script and every PATH.

    A file keeps its base name; a directory keeps its name and layout, and its
    contents go to the top level when written with a trailing slash (as rsync does).
    """
    if not script.is_file():
        raise NoInputError(f"job script {script} does not exist or is not a regular file")
    items: list[tuple[Path, str]] = [(script, layout.JOB_SCRIPT)]
    for raw in paths:
        path = Path(raw)
        if path.is_symlink() and path.is_dir():
            raise InputError(f"{raw}: a symlinked directory is not followed; name its target")
        if path.is_file():
            items.append((path, path.name))
        elif path.is_dir():
            base = "" if raw.endswith("/") else path.resolve().name + "/"
            items.extend((f, base + rel) for f, rel in _walk(path))
        elif path.exists():
            raise InputError(f"{raw} is neither a regular file nor a directory")
        else:
            raise NoInputError(f"input {raw} does not exist")
    _check_names(items)
    return items


def _walk(root: Path) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    real_root = root.resolve()
    for current, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames:
            if (Path(current) / name).is_symlink():
                raise InputError(f"{Path(current) / name}: symlinked directories are not followed")
        for name in sorted(filenames):
            path = Path(current) / name
            if path.is_symlink():
                target = path.resolve()
                if real_root not in target.parents:
                    raise InputError(f"{path} is a symlink to {target}, outside {root}; refusing")
            if not path.is_file():
                raise InputError(f"{path} is not a regular file")
            found.append((path, path.relative_to(root).as_posix()))
    return found


def _check_names(items: Sequence[tuple[Path, str]]) -> None:
    seen: dict[str, Path] = {}
    for path, name in items:
        check_relative_name(name)
        if name in layout.RESERVED_INPUTS or layout.is_metadata(name):
            raise InputError(f"{path}: the name {name!r} is reserved for mint-s3job's own objects")
        if name in seen:
            raise InputError(f"two inputs map to the same name {name!r}: {seen[name]} and {path}")
        seen[name] = path


def _prepare_prefix(store: ObjectStore, prefix: str, force: bool) -> bool:
    """Refuse a used prefix unless forced; when forced, retire the old job first."""
    existing = store.list_objects(prefix + "/")
    if not existing:
        return False
    if not force:
        raise CantCreateError(
            f"prefix {prefix!r} already holds {len(existing)} object(s) in s3://{store.bucket}",
            hint="choose another --prefix, or pass --force to replace that job",
        )
    stat = store.get_bytes(layout.key(prefix, layout.JOB_STAT))
    if stat is not None and layout.parse_state(stat, prefix) is State.JOB_SUBMIT:
        raise CantCreateError(
            f"job {prefix!r} is submitted to Slurm (JOB_SUBMIT); refusing to replace it",
            hint=f"mint-s3job cancel {prefix}, or wait for it to finish",
        )
    stat_key = layout.key(prefix, layout.JOB_STAT)
    # The state goes first so that nothing dispatches a half-replaced job.
    store.delete_keys([stat_key])
    store.delete_keys([o.key for o in existing if o.key != stat_key])
    log.info("replaced the %d object(s) of the old job %s", len(existing), prefix)
    return True


def submit(
    store: ObjectStore,
    prefix: str,
    inputs: Sequence[tuple[Path, str]],
    *,
    force: bool,
    progress: ProgressFactory,
    hash_workers: int = 2,
    clock: Callable[[], float] = time.monotonic,
) -> SubmitResult:
    layout.check_prefix(prefix)
    started = clock()
    replaced = _prepare_prefix(store, prefix, force)
    sizes = [path.stat().st_size for path, _ in inputs]
    total = sum(sizes)
    log.info(
        "uploading %d file(s), %d bytes to s3://%s/%s/", len(inputs), total, store.bucket, prefix
    )
    # Largest first: a big file's parts and its (slow) multipart completion then overlap
    # the small files instead of running alone at the end.
    order = sorted(range(len(inputs)), key=lambda n: sizes[n], reverse=True)
    uploads = [(inputs[n][0], layout.key(prefix, inputs[n][1])) for n in order]
    with ThreadPoolExecutor(max_workers=1) as hasher:
        # Hashing for the manifest overlaps the upload instead of adding a pass after it.
        entries = hasher.submit(describe_files, inputs, hash_workers, background=True)
        with progress(f"upload {prefix}", total) as advance:
            store.upload_files(uploads, advance)
        manifest = dump_manifest("submit", entries.result(), prefix=prefix)
    store.put_bytes(layout.key(prefix, layout.SUBMIT_MANIFEST), manifest)
    committed = store.put_bytes(
        layout.key(prefix, layout.JOB_STAT),
        layout.state_body(State.FILE_UPLOAD),
        if_none_match=True,
    )
    if not committed:
        raise CantCreateError(
            f"another submit committed prefix {prefix!r} while this one was uploading",
            hint="run mint-s3job status on it, and submit again under a new prefix",
        )
    log.info("committed %s: job-aws-stat.txt = FILE_UPLOAD", prefix)
    return SubmitResult(store.bucket, prefix, len(inputs), total, clock() - started, replaced)


def resolve_prefix(prefix: Optional[str]) -> str:
    return layout.check_prefix(prefix) if prefix else layout.default_prefix()
