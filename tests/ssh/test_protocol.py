"""The remote command set: every command `run` builds parses back to itself; nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mint_ssh import protocol

RUN_ID = "fedcba9876543210fedcba9876543210"
WORKDIR = f"/tmp/{RUN_ID}"
ITEM = protocol.UploadItem("x", 1)
OTHER = f"/tmp/{'0' * 32}"
START = protocol.start(WORKDIR, ["sh"])
POLICY = protocol.GatePolicy(
    bases=("/tmp", "/work base"), allowed=("~/bin/run.sh", "sh"), home="/h"
)

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\0"),
    min_size=1,
    max_size=30,
).filter(lambda n: n not in (".", "..", protocol.CONTROL_DIR))
args = st.lists(st.text(max_size=20).filter(lambda a: "\0" not in a and "\n" not in a), max_size=5)


upload_items = st.builds(
    protocol.UploadItem,
    name=names,
    size=st.integers(min_value=0, max_value=2**40),
    sha256=st.sampled_from(["", "ab" * 32]),
)


@given(files=st.lists(upload_items, min_size=1, max_size=5))
def test_upload_round_trips(files: list[protocol.UploadItem]) -> None:
    op = protocol.parse(protocol.upload(WORKDIR, files), POLICY)
    assert (op.kind, op.workdir, op.files) == ("upload", WORKDIR, tuple(files))


@given(
    rest=args,
    offset=st.integers(min_value=0, max_value=2**40),
    patterns=st.lists(names, max_size=4),
)
def test_start_round_trips(rest: list[str], offset: int, patterns: list[str]) -> None:
    argv = ["~/bin/run.sh", *rest]
    op = protocol.parse(protocol.start(WORKDIR, argv, offset, (), patterns), POLICY)
    assert (op.kind, op.argv, op.offset, op.patterns) == (
        "start",
        tuple(argv),
        offset,
        tuple(patterns),
    )


def test_a_command_that_looks_like_the_fetch_step_still_round_trips() -> None:
    start = protocol.start(WORKDIR, ["sh"], 0, [ITEM], ["out"])
    lookalike = ["sh", "-c", start.partition("/dev/null;")[2]]
    op = protocol.parse(protocol.start(WORKDIR, lookalike, 0, [ITEM], ["out"]), POLICY)
    assert (op.argv, op.files, op.patterns) == (tuple(lookalike), (ITEM,), ("out",))


@given(
    rest=args,
    offset=st.integers(min_value=0, max_value=2**40),
    files=st.lists(upload_items, min_size=1, max_size=5),
)
def test_start_with_inputs_round_trips(
    rest: list[str], offset: int, files: list[protocol.UploadItem]
) -> None:
    argv = ["~/bin/run.sh", *rest]
    op = protocol.parse(protocol.start(WORKDIR, argv, offset, files), POLICY)
    assert (op.kind, op.argv, op.offset, op.files) == ("start", tuple(argv), offset, tuple(files))


@given(patterns=st.lists(names, min_size=1, max_size=4))
def test_fetch_round_trips(patterns: list[str]) -> None:
    op = protocol.parse(protocol.fetch(WORKDIR, patterns), POLICY)
    assert (op.kind, op.patterns) == ("fetch", tuple(patterns))


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (protocol.make_workdir(WORKDIR), "make_workdir"),
        (protocol.kill(WORKDIR), "kill"),
        (protocol.fetch(WORKDIR), "fetch"),
        (protocol.remove(WORKDIR), "remove"),
        (protocol.remove(f"/work base/{RUN_ID}"), "remove"),
        (protocol.free_space("/tmp"), "free_space"),
        (protocol.is_executable("~/bin/run.sh"), "is_executable"),
        (protocol.noop(), "noop"),
    ],
    ids=["mkdir", "kill", "fetch-all", "remove", "remove-spaced-base", "df", "test-x", "true"],
)
def test_fixed_operations_parse(command: str, kind: str) -> None:
    assert protocol.parse(command, POLICY).kind == kind


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("bash -i", "does not match"),
        ("", "interactive"),
        ("sh -c 'id'", "does not match"),
        (protocol.start(WORKDIR, ["bash"]), "not in the allowed list"),
        (protocol.start(WORKDIR, ["/h/bin/other.sh"]), "not in the allowed list"),
        (protocol.upload("/tmp/notarun", [ITEM]), "not <base>/<run id>"),
        (protocol.upload(f"/var/{RUN_ID}", [ITEM]), "outside the work base"),
        (protocol.upload(WORKDIR, []), "does not match"),
        (
            protocol.upload(WORKDIR, [ITEM]).replace(f"> {WORKDIR}/x", f"> /tmp/{'0' * 32}/x", 1),
            "two different working dirs",
        ),
        (protocol.upload(WORKDIR, [ITEM]).replace("count=1 ", "count=-1 "), "negative size"),
        (protocol.remove("/tmp"), "not <base>/<run id>"),
        (protocol.remove(WORKDIR) + " /etc", "does not match"),
        (protocol.remove(WORKDIR) + "\nrm -rf /", "newline"),
        (protocol.free_space("/etc"), "not a work base"),
        (protocol.is_executable("/bin/bash"), "not in the allowed list"),
        (protocol.kill(WORKDIR).replace(".mint-ssh/pid", "x"), "pid"),
        (protocol.upload(WORKDIR, [ITEM]).replace(",count_bytes", ""), "does not match"),
        (
            protocol.upload(WORKDIR, [ITEM]).replace("status=none", "status=none of=/etc/x"),
            "does not end in",
        ),
        (protocol.start(WORKDIR, ["sh"]).replace("sh -c", "bash -c", 1), "does not match"),
        ("tar -c -f - -C /etc -- .", "not <base>/<run id>"),
        (protocol.start(WORKDIR, ["bash"], 0, [ITEM]), "not in the allowed list"),
        (protocol.start(f"/var/{RUN_ID}", ["sh"], 0, [ITEM]), "outside the work base"),
        (
            protocol.start(WORKDIR, ["sh"], 0, [ITEM]).replace(
                f"> {WORKDIR}/x", f"> /tmp/{'0' * 32}/x", 1
            ),
            "two different working dirs",
        ),
        (
            protocol.start(WORKDIR, ["sh"], 0, [ITEM]).replace("count=1 ", "count=-1 "),
            "negative size",
        ),
        (
            protocol.start(WORKDIR, ["sh"], 0, [ITEM]).replace(
                "head -c 1 > /dev/null", "head -c 1 > /etc/x", 1
            ),
            "does not match",
        ),
        (
            protocol.start(WORKDIR, ["sh"], 0, [ITEM]).replace("|| exit 74", "|| true", 1),
            "does not match",
        ),
        (START.replace(protocol.fetch(WORKDIR), protocol.fetch(OTHER)), "two different"),
        (START.replace(protocol.fetch(WORKDIR), protocol.fetch("/etc")), "not <base>/<run id>"),
        (START.replace(protocol.fetch(WORKDIR), protocol.remove(WORKDIR)), "does not match"),
        (START.replace(protocol.fetch(WORKDIR), "sh"), "does not match"),
        (START.rpartition(" if cat")[0] + " cat -- .mint-ssh/status; true", "does not match"),
        (START + "; rm -rf /", "does not match"),
        (START.replace("= fetch", "= x"), "does not match"),
        (START.replace("echo removed", "echo removed; id"), "does not match"),
        (f"{protocol.FETCH_GO} && {protocol.fetch(WORKDIR)}", "does not match"),
    ],
    ids=[
        "interactive-shell",
        "empty",
        "other-command",
        "program-not-allowed",
        "other-program-in-home",
        "workdir-not-run-id",
        "workdir-outside-base",
        "upload-without-files",
        "upload-into-another-workdir",
        "upload-negative-size",
        "remove-the-base",
        "extra-argument",
        "newline",
        "df-elsewhere",
        "test-other-program",
        "kill-other-pid",
        "dd-count-in-blocks",
        "dd-extra-output",
        "other-shell",
        "tar-etc",
        "start-inputs-program-not-allowed",
        "start-inputs-outside-base",
        "start-inputs-into-another-workdir",
        "start-inputs-negative-size",
        "start-inputs-discard-elsewhere",
        "start-inputs-ignoring-a-failed-check",
        "start-fetching-another-workdir",
        "start-fetching-etc",
        "start-then-remove",
        "start-then-shell",
        "start-without-fetch-step",
        "start-with-appended-command",
        "start-other-go-word",
        "fetch-appended-command",
        "fetch-step-alone",
    ],
)
def test_other_commands_are_refused(command: str, reason: str) -> None:
    with pytest.raises(
        protocol.RefusedCommand, match=reason.replace("(", r"\(").replace(")", r"\)")
    ):
        protocol.parse(command, POLICY)
