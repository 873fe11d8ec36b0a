"""A hostile bucket writer: jobs whose objects a malicious or broken submitter put there.

Everything goes in through the S3 API of the real moto server, as such a writer would
put it (no manifest, or a manifest that lies), and each job is committed last with
job-aws-stat.txt = FILE_UPLOAD, as the seed's procedure does.
"""

from __future__ import annotations

import hashlib

from mint_s3job.manifest import ManifestEntry, dump_manifest
from mint_s3job.store import S3ObjectStore

SCRIPT = b"#!/bin/bash\ntrue\n"
LONG_PART = "x" * 256  # one byte over Linux's NAME_MAX


class HostileBucket:
    def __init__(self, store: S3ObjectStore) -> None:
        self.store = store

    def job(
        self, prefix: str, files: dict[str, bytes], manifest: list[ManifestEntry] | None = None
    ) -> None:
        """A job of `files` (plus a script), with the given submit manifest if any."""
        self.store.put_bytes(f"{prefix}/job-aws-run.sh", SCRIPT)
        for name, data in files.items():
            self.store.put_bytes(f"{prefix}/{name}", data)
        if manifest is not None:
            self.store.put_bytes(
                f"{prefix}/.mint-s3job/manifest-submit.json", dump_manifest("submit", manifest)
            )
        self.store.put_bytes(f"{prefix}/job-aws-stat.txt", b"FILE_UPLOAD\n")

    def file_then_directory(self, prefix: str) -> None:
        """`a` and `a/b`: a file that must also be a directory."""
        self.job(prefix, {"a": b"file a\n", "a/b": b"file a/b\n", "z.txt": b"fine\n"})

    def long_component(self, prefix: str) -> None:
        """A key with one path component over 255 bytes (S3 allows 1024 for the whole key)."""
        self.job(prefix, {f"dir/{LONG_PART}": b"long\n", "z.txt": b"fine\n"})

    def same_file_twice(self, prefix: str) -> None:
        """`d//f` and `d/f` name one file: which one the job got would depend on order."""
        self.job(prefix, {"d//f": b"first\n", "d/f": b"second\n"})

    def manifest_lists_a_missing_file(self, prefix: str) -> None:
        """The manifest names `input.dat`, which never reached the bucket."""
        present = ManifestEntry("present.txt", 5, hashlib.sha256(b"here\n").hexdigest())
        missing = ManifestEntry("input.dat", 100, "1" * 64)
        self.job(prefix, {"present.txt": b"here\n"}, manifest=[present, missing])

    def plain(self, prefix: str) -> None:
        """A well-formed job, to show the hostile ones do not starve it."""
        self.job(prefix, {"input.txt": b"ok\n"})
