"""The remote command set: every command `run` builds parses back to itself; nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_ssh import protocol
from mint_ssh.connection import _UntilMark

RUN_ID = "fedcba9876543210fedcba9876543210"
WORKDIR = f"/tmp/{RUN_ID}"
ITEM = protocol.UploadItem("x", 1)
OTHER = f"/tmp/{'0' * 32}"
START = protocol.start(WORKDIR, ["sh"])
POLICY = protocol.GatePolicy(
    bases=("/tmp", "/work base"), allowed=("~/bin/run.sh", "sh"), home="/h"
)


def parse(command: str, policy: protocol.GatePolicy = POLICY) -> protocol.Operation:
    """The gate's parse of `command` as this client sends it (led by its protocol version)."""
    return protocol.parse(protocol.versioned(command), policy)


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
    op = parse(protocol.upload(WORKDIR, files))
    assert (op.kind, op.workdir, op.files) == ("upload", WORKDIR, tuple(files))


@given(
    rest=args,
    offset=st.integers(min_value=0, max_value=2**40),
    patterns=st.lists(names, max_size=4),
)
def test_start_round_trips(rest: list[str], offset: int, patterns: list[str]) -> None:
    argv = ["~/bin/run.sh", *rest]
    op = parse(protocol.start(WORKDIR, argv, offset, (), patterns))
    assert (op.kind, op.argv, op.offset, op.patterns) == (
        "start",
        tuple(argv),
        offset,
        tuple(patterns),
    )


def test_a_command_that_looks_like_the_fetch_step_still_round_trips() -> None:
    start = protocol.start(WORKDIR, ["sh"], 0, [ITEM], ["out"])
    lookalike = ["sh", "-c", start.partition("/dev/null;")[2]]
    op = parse(protocol.start(WORKDIR, lookalike, 0, [ITEM], ["out"]))
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
    op = parse(protocol.start(WORKDIR, argv, offset, files))
    assert (op.kind, op.argv, op.offset, op.files) == ("start", tuple(argv), offset, tuple(files))


@given(patterns=st.lists(names, min_size=1, max_size=4))
def test_fetch_round_trips(patterns: list[str]) -> None:
    op = parse(protocol.fetch(WORKDIR, patterns))
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
    assert parse(command).kind == kind


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
            protocol.upload(WORKDIR, [ITEM]).replace(f"of={WORKDIR}/x", f"of={OTHER}/x", 1),
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
        ("cd -- /etc && test ! -h /etc && tar -c -f - -- .", "not <base>/<run id>"),
        ("tar -c -f - -C /etc -- .", "does not match"),
        (protocol.upload(WORKDIR, [ITEM]).replace(" oflag=nofollow", ""), "does not end in"),
        (protocol.upload(WORKDIR, [ITEM]).replace(" && test ! -h", " && true", 1), "match"),
        (protocol.fetch(WORKDIR).replace(" && test ! -h " + WORKDIR, ""), "does not match"),
        (protocol.start(WORKDIR, ["bash"], 0, [ITEM]), "not in the allowed list"),
        (protocol.start(f"/var/{RUN_ID}", ["sh"], 0, [ITEM]), "outside the work base"),
        (
            protocol.start(WORKDIR, ["sh"], 0, [ITEM]).replace(
                f"of={WORKDIR}/x", f"of=/tmp/{'0' * 32}/x", 1
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
        "tar-of-a-dir-not-entered",
        "dd-following-links",
        "upload-without-link-check",
        "fetch-without-link-check",
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
        parse(command)


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (
            protocol.versioned(protocol.remove(WORKDIR)).replace(" 3; ", " 2; ", 1),
            "client speaks protocol 2, gate protocol 3; upgrade this client to protocol 3",
        ),
        (
            protocol.versioned(protocol.remove(WORKDIR)).replace(" 3; ", " 4; ", 1),
            "client speaks protocol 4, gate protocol 3; upgrade the gate",
        ),
    ],
    ids=["protocol-2-client", "newer-client"],
)
def test_a_client_of_another_protocol_is_told_both_versions(sent: str, message: str) -> None:
    with pytest.raises(protocol.RefusedCommand) as refused:
        protocol.parse(sent, POLICY)
    assert message in str(refused.value)
    assert "upgrade order: the remote gate first, then its clients" in str(refused.value)


@pytest.mark.parametrize("sent", [protocol.remove(WORKDIR), "cat /etc/passwd"])
def test_a_bare_command_is_told_it_is_not_a_mint_ssh_request(sent: str) -> None:
    with pytest.raises(protocol.RefusedCommand) as refused:
        protocol.parse(sent, POLICY)
    assert str(refused.value).startswith(
        "not a mint-ssh request: this key only runs the commands of mint-ssh protocol 3"
    )
    assert "protocol mismatch" not in str(refused.value)


def test_the_version_leads_every_request_as_a_shell_no_op() -> None:
    assert protocol.versioned("true") == f": mint-ssh protocol {protocol.VERSION}; true"


@pytest.mark.parametrize(
    ("text", "status"),
    [("0", 0), ("1", 1), ("255", 255), ("256", None), ("-1", None), ("²", None),
     ("٣", None), ("１", None), ("", None), ("1 2", None), ("0" * 5000, None)],
    ids=["zero", "one", "max", "over-255", "negative", "superscript-two", "arabic-indic-three",
         "fullwidth-one", "empty", "two-numbers", "huge"],
)  # fmt: skip
def test_only_an_ascii_shell_status_is_an_exit_status(text: str, status: object) -> None:
    assert protocol.parse_exit_status(text) == status


@settings(max_examples=300, deadline=500)
@given(text=st.text(max_size=50))
def test_any_status_text_parses_to_a_shell_status_or_none(text: str) -> None:
    status = protocol.parse_exit_status(text)
    assert status is None or (0 <= status <= 255 and str(status) == text.lstrip("0").rjust(1, "0"))


@settings(max_examples=300, deadline=500)
@given(command=st.text(max_size=300))
def test_random_commands_are_refused_cleanly(command: str) -> None:
    """Refused with a reason, or (`true`, say) exactly a command the client sends."""
    with pytest.raises(protocol.RefusedCommand):
        protocol.parse(command, POLICY)
    try:
        op = parse(command)
    except protocol.RefusedCommand:
        return
    assert protocol.rebuild(op) == command


@given(
    output=st.binary(max_size=200),
    after=st.binary(max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
)
def test_stdout_is_passed_on_up_to_the_end_mark_however_it_is_cut(
    output: bytes, after: bytes, cuts: list[int]
) -> None:
    mark = protocol.new_end_mark().encode()
    stream = output + mark + after
    passed: list[bytes] = []
    until = _UntilMark(mark, passed.append)
    rest = b""
    edges = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    for begin, end in zip(edges, edges[1:]):
        chunk = stream[begin:end]
        rest += chunk if until.seen else until.feed(chunk)
    assert b"".join(passed) == output and rest == after and until.seen


def test_a_start_with_a_forged_end_mark_is_refused() -> None:
    forged = protocol.start(WORKDIR, ["sh"], end_mark=":mint-ssh-end:x; rm -rf ~:")
    with pytest.raises(protocol.RefusedCommand):
        parse(forged)
    honest = protocol.start(WORKDIR, ["sh"], 3, errors_offset=9, end_mark=protocol.new_end_mark())
    op = parse(honest)
    assert (op.offset, op.errors_offset) == (3, 9)
