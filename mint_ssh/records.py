"""Local run records: one JSON file per run, replaced atomically, so `resume` can reattach."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any, Optional

from mint_common.errors import InputError, NoInputError, UsageError
from mint_common.files import JsonState
from mint_common.timeutil import iso_from_epoch

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RUN_ID_PREFIX = re.compile(r"^[0-9a-f]{1,32}$")
STATES = ("uploading", "running", "downloading", "done", "failed")
UPLOADING, RUNNING, DOWNLOADING, DONE, FAILED = STATES
ENDED = (DONE, FAILED)


@dataclasses.dataclass
class RunRecord:
    run_id: str
    host: str
    command: list[str]
    dest: str
    workdir: str = ""
    inputs: list[str] = dataclasses.field(default_factory=list)
    get: list[str] = dataclasses.field(default_factory=list)
    exclude: list[str] = dataclasses.field(default_factory=list)
    keep: bool = False
    state: str = UPLOADING
    pid: Optional[int] = None
    exit_status: Optional[int] = None
    output_offset: int = 0  # bytes of the command's stdout shown so far
    errors_offset: int = 0  # and of its stderr
    # The inputs travel on the start request, and that start is not known to have happened yet.
    inputs_with_start: bool = False
    message: str = ""
    created_at: float = dataclasses.field(default_factory=time.time)
    updated_at: float = dataclasses.field(default_factory=time.time)

    @classmethod
    def from_json(cls, data: Any, source: Path) -> RunRecord:
        if not isinstance(data, dict):
            raise InputError(f"run record {source} is not a JSON object; it was left as it is")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            record = cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise InputError(f"run record {source} is incomplete: {exc}") from exc
        if record.state not in STATES:
            raise InputError(f"run record {source} has an unknown state {record.state!r}")
        return record

    def as_json(self) -> dict[str, Any]:
        """The record for scripts. `created_at` and `updated_at` carried epoch seconds before
        ISO times were the rule; scripts may compute with them, so they keep that meaning
        until the next release, with the ISO 8601 form beside them as `..._at_iso`."""
        data = dataclasses.asdict(self)
        for name in ("created_at", "updated_at"):
            data[f"{name}_iso"] = iso_from_epoch(data[name])
        return data


class RunStore:
    """`<runs_dir>/<run id>.json` and a lock file per run."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir

    def path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def lock_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.lock"

    def save(self, record: RunRecord) -> None:
        record.updated_at = time.time()
        self.runs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        JsonState(self.path(record.run_id)).save(dataclasses.asdict(record))

    def load(self, run_id: str) -> RunRecord:
        if not RUN_ID.match(run_id):
            raise InputError(f"{run_id!r} is not a run id (32 hex digits; see `mint-ssh runs`)")
        path = self.path(run_id)
        data = JsonState(path).load(default=None)
        if data is None:
            raise NoInputError(f"no run record {path}", hint="`mint-ssh runs` lists the runs")
        return RunRecord.from_json(data, path)

    def find(self, prefix: str) -> str:
        """The one run id starting with `prefix` (see `mint-ssh runs`)."""
        if not RUN_ID_PREFIX.match(prefix):
            raise InputError(f"{prefix!r} is not a run id (hex digits; see `mint-ssh runs`)")
        # By file name: a record that cannot be read is still found, and `load` says why.
        matches = [run_id for run_id in self._run_ids() if run_id.startswith(prefix)]
        if not matches:
            raise NoInputError(
                f"no run {prefix} in {self.runs_dir}", hint="`mint-ssh runs` lists the runs"
            )
        if len(matches) > 1:
            raise UsageError(
                f"{prefix!r} matches {len(matches)} runs: {', '.join(matches)}; give more digits"
            )
        return matches[0]

    def newest(self) -> str:
        records, unreadable = self.scan()
        if unreadable:
            # The unreadable one may be the newest: resuming an older run instead would surprise.
            raise unreadable[0]
        if not records:
            raise NoInputError(f"no runs in {self.runs_dir}")
        return records[0].run_id

    def scan(self) -> tuple[list[RunRecord], list[InputError]]:
        """Every readable run, newest first, and why each other record could not be read."""
        records: list[RunRecord] = []
        unreadable: list[InputError] = []
        for run_id in self._run_ids():
            try:
                records.append(self._read(self.path(run_id)))
            except InputError as exc:
                unreadable.append(exc)
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records, unreadable

    def _read(self, path: Path) -> RunRecord:
        try:
            data = JsonState(path).load(default={})
        except OSError as exc:
            raise InputError(f"run record {path} cannot be read: {exc.strerror}") from exc
        return RunRecord.from_json(data, path)

    def _run_ids(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.stem for p in self.runs_dir.glob("*.json") if RUN_ID.match(p.stem))
