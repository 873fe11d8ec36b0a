"""The agent's local record: one JSON file per calculation, plus a heartbeat file.

Layout of `state_dir`:
    calcs/<accept_id>.json   one CalcRecord, replaced atomically after every step
    agent.json               heartbeat (`mint_common.heartbeat`): when, pid, what the agent does
    agent.lock               single-instance lock (`run`, `once`)

A record never holds the token or file contents; its messages are saved with
every registered secret masked, whatever they quote.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Optional

from mint_common.errors import CantCreateError, InputError, NoInputError
from mint_common.files import JsonState, check_relative_name
from mint_common.heartbeat import Heartbeat
from mint_common.logging import redact
from mint_common.timeutil import epoch_from_iso, now_iso
from mint_poll.batch import BatchJob

log = logging.getLogger(__name__)


class Step:
    """A record's step, the last thing done: named constants of plain strings (records stay
    plain JSON and older records read back unchanged)."""

    RECEIVING: Final = "receiving"
    PARAMS: Final = "params"
    COMPLETE: Final = "complete"
    STARTED: Final = "started"
    RAN: Final = "ran"
    ENDED: Final = "ended"
    SENT: Final = "sent"
    DONE: Final = "done"
    # Where a record ends without delivery:
    LOST: Final = "lost"
    RELEASED: Final = "released"
    TAKEN: Final = "taken"
    FAILED: Final = "failed"


#: Steps in the order they happen; each means "this has been done".
STEPS = (
    Step.RECEIVING,
    Step.PARAMS,
    Step.COMPLETE,
    Step.STARTED,
    Step.RAN,
    Step.ENDED,
    Step.SENT,
    Step.DONE,
)
TERMINAL = (Step.DONE, Step.LOST, Step.RELEASED, Step.TAKEN, Step.FAILED)

#: The heartbeat's state once the agent has stopped on purpose: an old beat is no stall.
STOPPED = "stopped"


@dataclass
class ResultEntry:
    """A requested result file as it will be sent: a path, or why it cannot be."""

    name: str
    path: Optional[str]
    error: Optional[str] = None
    #: Over the protocol's size limit: the run cannot count as completed without it.
    too_large: bool = False


@dataclass(frozen=True)
class DirIdentity:
    """Which directory this agent made: device, inode and (where the file system keeps one)
    the inode's generation number, read from the directory right after its mkdir."""

    device: int
    inode: int
    generation: Optional[int] = None

    @classmethod
    def from_json(cls, data: Any) -> Optional[DirIdentity]:
        """The identity saved in a record; None (no proof) for anything malformed."""
        if not isinstance(data, dict):
            return None
        device, inode, generation = (data.get(k) for k in ("device", "inode", "generation"))
        if type(device) is not int or type(inode) is not int:
            return None
        if generation is not None and type(generation) is not int:
            return None
        return cls(device, inode, generation)


@dataclass
class CalcRecord:
    """Everything the agent must remember about one calculation to finish it after a restart."""

    accept_id: str
    site_id: str
    workdir: str
    staging_dir: str
    step: str = Step.RECEIVING
    command: Optional[str] = None
    parameters: Optional[str] = None
    result_names: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    outcome: Optional[str] = None
    reason: Optional[str] = None
    exit_status: Optional[int] = None
    pid: Optional[int] = None
    results: list[ResultEntry] = field(default_factory=list)
    accepted_at: str = field(default_factory=now_iso)
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    delivered_at: Optional[str] = None
    updated_at: str = field(default_factory=now_iso)
    message: Optional[str] = None
    pruned: bool = False
    #: The proof that this agent made the working dir, taken right after its own mkdir;
    #: None when it made none (or the record predates the proof): pruning leaves that alone.
    created_dir: Optional[DirIdentity] = None
    #: Why keep_days pruning leaves the working dir in place (logged once).
    prune_skipped: Optional[str] = None
    #: The last unexpected error while handling this calculation, how many times in a row
    #: it failed that same way, and whether it was quarantined for it (failed, not retried).
    last_error: Optional[str] = None
    failures: int = 0
    quarantined: bool = False
    #: The calculation's batch job (runner slurm/pbs): its name is saved before it is
    #: submitted, its id the moment it is known, so a restart follows it (never submits again).
    batch_job: Optional[BatchJob] = None

    @property
    def terminal(self) -> bool:
        return self.step in TERMINAL

    def reached(self, step: str) -> bool:
        """True if this record has done `step` (for steps of the normal sequence)."""
        return self.step in STEPS and STEPS.index(self.step) >= STEPS.index(step)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: Path) -> CalcRecord:
        if not isinstance(data, dict):
            raise InputError(f"state file {source} does not hold a calculation record")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["results"] = [
            ResultEntry(**{k: v for k, v in r.items() if k in _RESULT_FIELDS})
            for r in values.get("results") or []
            if isinstance(r, dict)
        ]
        values["created_dir"] = DirIdentity.from_json(values.get("created_dir"))
        saved_job = values.get("batch_job")
        values["batch_job"] = BatchJob.from_json(saved_job)
        if saved_job is not None and values["batch_job"] is None:
            # Never treated as "no job": that would submit the calculation a second time.
            raise InputError(f"state file {source}: its batch job cannot be read")
        try:
            return cls(**values)
        except TypeError as exc:
            raise InputError(f"state file {source} is incomplete: {exc}") from exc


_RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(ResultEntry))


class CalcStore:
    """Reads and writes the calculation records and the heartbeat under `state_dir`
    (created with mode 0700)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir)
        self.calcs = self.root / "calcs"
        self.heartbeat_file = self.root / "agent.json"
        self.lock_path = self.root / "agent.lock"

    def ensure(self) -> None:
        try:
            self.calcs.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise CantCreateError(
                f"cannot create state_dir {self.root}: {exc.strerror}",
                hint="set state_dir to a directory this user can write",
            ) from exc

    def _file(self, accept_id: str) -> Path:
        check_relative_name(accept_id)
        if "/" in accept_id:
            raise InputError(f"refusing accept_id {accept_id!r}: it contains '/'")
        return self.calcs / f"{accept_id}.json"

    def save(self, record: CalcRecord) -> None:
        """Write the record atomically (temp file, fsync, rename). Its free-text fields
        (messages quoting a server or a library) are saved with secrets masked."""
        record.updated_at = now_iso()
        document = record.to_json()
        for key in ("message", "reason", "last_error"):
            if isinstance(document[key], str):
                document[key] = redact(document[key])
        document["refusals"] = [redact(text) for text in document["refusals"]]
        JsonState(self._file(record.accept_id)).save(document)

    def load(self, accept_id: str) -> Optional[CalcRecord]:
        path = self._file(accept_id)
        data = JsonState(path).load(None)
        return None if data is None else CalcRecord.from_json(data, path)

    def all(self) -> list[CalcRecord]:
        """Every readable record, newest first; unreadable files are reported and skipped."""
        return self.read_all().records

    def read_all(self) -> Listing:
        """Every readable record, newest first, and the files that could not be read (each
        named in a warning): a listing shows what it can and then fails (65)."""
        listing = Listing()
        if not self.calcs.is_dir():
            return listing
        for path in sorted(self.calcs.glob("*.json")):
            try:
                listing.records.append(CalcRecord.from_json(JsonState(path).load(None), path))
            except InputError as exc:
                log.warning("skipping %s", exc.message)
                listing.unreadable.append(path)
        listing.records.sort(key=_accepted, reverse=True)
        return listing

    def unfinished(self) -> list[CalcRecord]:
        """Records an earlier run left mid-sequence, oldest first."""
        return sorted((r for r in self.all() if not r.terminal), key=_accepted)

    def require_state(self) -> None:
        """NoInputError (66) unless this directory holds an agent's state: a mistyped
        --state-dir must not read as "no calculations"."""
        if self.calcs.is_dir() or self.heartbeat_file.is_file():
            return
        raise NoInputError(
            f"no mint-poll agent state in {self.root}",
            hint="give the state_dir of the agent (see `mint-poll check`); an agent that has"
            " never run as this user has no state yet",
        )

    def beat(self, state: str, **details: Any) -> None:
        """Write the heartbeat file (every loop of the daemon): the shared heartbeat, with
        what the agent is doing beside it."""
        beat = Heartbeat.beat().to_json()
        document = {
            **beat,
            # the names of older releases, kept for one release
            "beat_at": beat["at"],
            "time": beat["at"],
            "pid": os.getpid(),
            "state": state,
            **details,
        }
        JsonState(self.heartbeat_file).save(document)

    def heartbeat(self) -> Optional[dict[str, Any]]:
        try:
            data = JsonState(self.heartbeat_file).load(None)
        except InputError as exc:
            log.warning("%s", exc.message)
            return None
        return data if isinstance(data, dict) else None


@dataclass
class Listing:
    """What `CalcStore.read_all` found: the readable records and the unreadable files."""

    records: list[CalcRecord] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)

    def check(self) -> None:
        """InputError (65) naming the unreadable files, if there were any."""
        if self.unreadable:
            names = ", ".join(str(p) for p in self.unreadable)
            raise InputError(
                f"{len(self.unreadable)} calculation record(s) could not be read: {names}",
                hint="move the file(s) aside (the agent no longer resumes them) or restore them",
            )


def _accepted(record: CalcRecord) -> tuple[float, str]:
    """Sort key: when a record was accepted (records of older releases are in UTC, newer
    ones carry the local offset, so compare instants, not strings)."""
    try:
        return epoch_from_iso(record.accepted_at), record.accept_id
    except ValueError:
        return 0.0, record.accept_id
