"""Diagnostics (`<tool> check`): a list of named checks, shown as a table or JSON.

A check that raises is recorded as failed with the error's message; a check
whose prerequisite did not pass (failed, or was itself skipped) is skipped and
not run. A skip is not a failure: the exit status is 1 only if a check failed.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Optional, TextIO, Union

from mint_common.exitcodes import ExitStatus, describe
from mint_common.output import emit_json, emit_table

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class CheckResult:
    name: str
    status: str
    detail: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Passed (perhaps with a warning): what a dependent check needs before it runs."""
        return self.status in (PASS, WARN)

    @property
    def failed(self) -> bool:
        return self.status == FAIL


CheckOutcome = Union[str, tuple[str, str], CheckResult]


class CheckRunner:
    """Run checks in order; each check returns a detail string (pass), or raises (fail)."""

    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    def run(
        self, name: str, check: Callable[[], CheckOutcome], *, requires: Optional[str] = None
    ) -> CheckResult:
        if requires is not None and not self.passed(requires):
            result = CheckResult(name, SKIP, f"skipped: {requires!r} did not pass")
        else:
            try:
                outcome = check()
            except Exception as exc:
                result = CheckResult(name, FAIL, describe(exc))
            else:
                if isinstance(outcome, CheckResult):
                    result = outcome
                elif isinstance(outcome, tuple):
                    result = CheckResult(name, outcome[0], outcome[1])
                else:
                    result = CheckResult(name, PASS, outcome)
        log.debug("check %s: %s %s", result.name, result.status, result.detail)
        self.results.append(result)
        return result

    def passed(self, name: str) -> bool:
        return any(r.name == name and r.ok for r in self.results)

    @property
    def all_ok(self) -> bool:
        return not any(r.failed for r in self.results)

    def render(self, *, as_json: bool, title: str, stream: Optional[TextIO] = None) -> ExitStatus:
        status = ExitStatus.OK if self.all_ok else ExitStatus.JOB_FAILED
        if as_json:
            emit_json(
                {"ok": self.all_ok, "checks": [dataclasses.asdict(r) for r in self.results]},
                stream=stream,
            )
        else:
            rows = [(r.name, r.status.upper(), r.detail) for r in self.results]
            emit_table(("check", "result", "detail"), rows, title=title, stream=stream)
        return status
