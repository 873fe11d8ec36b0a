"""Small helpers shared by the mint-s3job tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

from mint_s3job.store import ObjectInfo, Progress, S3ObjectStore

BINARY = bytes(range(256)) * 37 + b"\x00\xff\x00"
JAPANESE_NAME = "結果_データ.txt"


@contextlib.contextmanager
def no_progress(_description: str, _total: int) -> Iterator[Progress]:
    yield lambda _n: None


def make_job(root: Path, failing: bool = False) -> tuple[Path, Path]:
    """A job script and an input directory with nested dirs, binary data and Japanese names."""
    root.mkdir(parents=True, exist_ok=True)
    script = root / "run.sh"
    marker = "#FAKE_SBATCH_FAIL\n" if failing else ""
    script.write_text(
        "#!/bin/bash\n#SBATCH -J test\n" + marker + "cat input/params.txt > out/result.txt\n"
    )
    inputs = root / "input"
    (inputs / "deep" / "深い").mkdir(parents=True)
    (inputs / "params.txt").write_text("alpha=1\n")
    (inputs / "deep" / "blob.bin").write_bytes(BINARY)
    (inputs / "deep" / "深い" / JAPANESE_NAME).write_text("日本語の内容\n", encoding="utf-8")
    return script, inputs


class RecordingStore:
    """Wraps a store to record the order of writes and to fail on demand."""

    def __init__(self, inner: S3ObjectStore, fail_upload_after: Optional[int] = None) -> None:
        self.inner = inner
        self.bucket = inner.bucket
        self.writes: list[str] = []
        self.calls: list[str] = []
        self.fail_upload_after = fail_upload_after

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if callable(attribute):

            def traced(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attribute(*args, **kwargs)

            return traced
        return attribute

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> bool:
        self.calls.append("put_bytes")
        self.writes.append(key)
        return self.inner.put_bytes(key, data, **kwargs)

    def upload_files(
        self, items: Sequence[tuple[Union[Path, BinaryIO], str]], progress: Progress
    ) -> None:
        self.calls.append("upload_files")
        if self.fail_upload_after is not None:
            self.inner.upload_files(items[: self.fail_upload_after], progress)
            self.writes.extend(k for _, k in items[: self.fail_upload_after])
            raise KeyboardInterrupt
        self.inner.upload_files(items, progress)
        self.writes.extend(k for _, k in items)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        self.calls.append(f"list_objects:{prefix}")
        return self.inner.list_objects(prefix)
