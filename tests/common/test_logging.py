from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_common import logging as logging_module
from mint_common.logging import (
    MASK,
    PlainFormatter,
    level_for,
    redact,
    register_secret,
    setup_logging,
)

PLAIN_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d (INFO|WARNING|DEBUG|ERROR) mint-poll: (.*)$"
)


@pytest.fixture(autouse=True)
def _reset_root() -> None:
    yield
    setup_logging("mint-test", stream=io.StringIO())


def test_plain_format_is_timestamped_with_offset() -> None:
    stream = io.StringIO()
    log = setup_logging("mint-poll", log_format="plain", stream=stream)
    log.info("polling %s", "nims-dev")
    line = stream.getvalue().strip()
    match = PLAIN_LINE.match(line)
    assert match, line
    assert match.group(2) == "polling nims-dev"


def test_auto_format_is_plain_when_not_a_tty() -> None:
    stream = io.StringIO()
    setup_logging("mint-poll", stream=stream).warning("x")
    assert PLAIN_LINE.match(stream.getvalue().strip())


def test_rich_format_on_request() -> None:
    stream = io.StringIO()
    setup_logging("mint-poll", log_format="rich", stream=stream).info("rich line")
    assert "rich line" in stream.getvalue()
    assert not PLAIN_LINE.match(stream.getvalue().strip())


def test_verbosity_levels() -> None:
    assert (level_for(-1), level_for(0), level_for(1), level_for(2)) == (
        logging.WARNING,
        logging.INFO,
        logging.DEBUG,
        logging.DEBUG,
    )
    stream = io.StringIO()
    log = setup_logging("mint-poll", verbosity=-1, log_format="plain", stream=stream)
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()


def test_library_loggers_quiet_unless_very_verbose() -> None:
    stream = io.StringIO()
    setup_logging("mint-poll", verbosity=1, log_format="plain", stream=stream)
    logging.getLogger("urllib3.connectionpool").debug("chatter")
    assert "chatter" not in stream.getvalue()
    setup_logging("mint-poll", verbosity=2, log_format="plain", stream=stream)
    logging.getLogger("urllib3.connectionpool").debug("chatter")
    assert "chatter" in stream.getvalue()


def test_json_format_one_object_per_line_with_extras() -> None:
    stream = io.StringIO()
    log = setup_logging("mint-poll", log_format="json", stream=stream)
    log.info("計算開始 %s", "abc", extra={"accept_id": "1234"})
    log.warning("second")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["message"] == "計算開始 abc"
    assert first["level"] == "INFO"
    assert first["tool"] == "mint-poll"
    assert first["accept_id"] == "1234"


def test_redaction_in_plain_json_and_file(tmp_path: Path) -> None:
    secret = "0123456789abcdef0123456789abcdef"
    register_secret(secret)
    plain, as_json = io.StringIO(), io.StringIO()
    log_file = tmp_path / "logs" / "agent.log"
    setup_logging("mint-poll", log_format="plain", stream=plain, log_file=log_file)
    logging.getLogger("some.library").info("Authorization: Bearer %s", secret)
    setup_logging("mint-poll", log_format="json", stream=as_json)
    logging.getLogger("mint-poll").info("token=" + secret, extra={"header": f"Bearer {secret}"})
    for text in (plain.getvalue(), as_json.getvalue(), log_file.read_text()):
        assert secret not in text
        assert MASK in text
    assert json.loads(as_json.getvalue())["header"] == f"Bearer {MASK}"


def test_redaction_in_tracebacks() -> None:
    secret = "tb-secret-value-42"
    register_secret(secret)
    stream = io.StringIO()
    log = setup_logging("mint-poll", log_format="plain", stream=stream)
    try:
        raise RuntimeError(f"server said {secret}")
    except RuntimeError:
        log.exception("request failed")
    assert secret not in stream.getvalue()
    assert "RuntimeError: server said ********" in stream.getvalue()


def test_short_or_empty_secrets_are_not_registered() -> None:
    register_secret("")
    register_secret(None)
    register_secret("ab")
    assert redact("ab abc") == "ab abc"


def test_setup_twice_does_not_duplicate_lines() -> None:
    stream = io.StringIO()
    setup_logging("mint-poll", log_format="plain", stream=stream)
    log = setup_logging("mint-poll", log_format="plain", stream=stream)
    log.info("once")
    assert stream.getvalue().count("once") == 1


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        setup_logging("mint-poll", log_format="xml")


def test_plain_formatter_appends_exception_text() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    record.exc_text = "Traceback: here"
    assert PlainFormatter("mint-ssh").format(record).endswith("mint-ssh: boom\nTraceback: here")


@contextlib.contextmanager
def _own_secrets() -> Iterator[None]:
    """Register secrets for one test only (random ones must not mask other tests' output)."""
    saved = set(logging_module._secrets)
    try:
        yield
    finally:
        with logging_module._secrets_lock:
            logging_module._secrets.clear()
            logging_module._secrets.update(saved)


def _printed_forms(secret: str) -> list[str]:
    """How requests, urllib3, json and repr print a secret (the forms seen leaking)."""
    quoted = urllib.parse.quote(secret, safe="")
    return [
        repr(f"Bearer {secret}"),
        repr({"Authorization": f"Bearer {secret}".encode()}),
        json.dumps({"token": secret}),
        json.dumps({"token": secret}, ensure_ascii=False),
        f"https://h/x?token={quoted}",
        "https://h/x?token=" + re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted),
        f"https://h/x?token={urllib.parse.quote_plus(secret)}",
    ]


@pytest.mark.parametrize(
    "secret",
    ["tokA-first\nen-second-line", "tok'\"\\en-0123", "トークン-0123456", "tok en/+&=?%-0123"],
    ids=["two-lines", "quotes-backslash", "non-ascii", "url-reserved"],
)
def test_redaction_covers_repr_json_and_percent_forms(secret: str) -> None:
    with _own_secrets():
        register_secret(secret)
        for text in _printed_forms(secret):
            shown = redact(text)
            assert MASK in shown, text
            for line in secret.splitlines():
                assert line not in shown, text


def test_any_bearer_credential_is_masked_even_unregistered() -> None:
    text = "InvalidHeader: 'Bearer abcdef0123456789\\nsecond' in {'Authorization': 'Bearer zz99zz99zz'}"
    shown = redact(text)
    assert "abcdef0123456789" not in shown and "zz99zz99zz" not in shown
    assert shown.count(f"Bearer {MASK}") == 2


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=4, max_size=40).filter(lambda s: s.strip() == s and s))
def test_redaction_of_every_printed_form_of_random_secrets(body: str) -> None:
    secret = "S3c!" + body
    with _own_secrets():
        register_secret(secret)
        for text in _printed_forms(secret):
            assert secret not in redact(text)
            assert MASK in redact(text)
