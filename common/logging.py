"""One logging set-up per tool: rich on a terminal, plain timestamped lines otherwise, or JSON.

Every handler carries the redaction filter, so a secret registered with
`register_secret` is masked in every record, whatever logger emitted it, and in
the forms libraries print it in: Python repr escapes, JSON escapes,
percent-encoding, each line of a multi-line value; anything after `Bearer ` is
masked whether registered or not.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, TextIO
from urllib.parse import quote, quote_plus

from mint_common.terminal import terminal

MASK = "********"
LOG_FORMATS = ("auto", "plain", "json", "rich")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# Attributes every LogRecord has; anything else was passed with `extra=` and goes into JSON.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


#: Shorter values (and shorter lines of a multi-line value) are not masked: too many false hits.
MIN_SECRET_LENGTH = 4
#: An HTTP bearer credential as requests, urllib3 or a curl trace print it (header dicts,
#: `InvalidHeader` messages with repr escapes, percent-encoded URLs).
_BEARER = re.compile(r"(?i)(\bBearer(?:\s+|%20|\+))[^\s'\"<>,;&]{8,}")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def secret_forms(value: str) -> set[str]:
    """The ways a library may print `value`: as is, repr and JSON escaped, percent-encoded
    (upper- and lower-case hex), and each of its lines alone."""
    forms = {
        value,
        repr(value)[1:-1],
        repr(value.encode("utf-8", "surrogatepass"))[2:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value, safe="")):
        forms.add(encoded)
        forms.add(_PERCENT.sub(lambda match: match.group(0).lower(), encoded))
    forms.update(line.strip() for line in value.splitlines())
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def register_secret(value: Optional[str]) -> None:
    """Mask this value (in every printed form, see `secret_forms`) in every log record and
    error message from now on."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        forms = secret_forms(value)
        with _secrets_lock:
            _secrets.update(forms)


def redact(text: str) -> str:
    """Replace every registered secret in `text`, and any bearer credential, with a mask."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _BEARER.sub(lambda match: match.group(1) + MASK, text)


class RedactingFilter(logging.Filter):
    """Freezes the message with secrets masked, including any traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def local_iso(created: float) -> str:
    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="seconds")


def _rich_time(moment: datetime) -> Any:
    """The same ISO 8601 stamp as the plain lines (rich's default is `[11/29/26 20:43:24]`)."""
    from rich.text import Text

    return Text(moment.astimezone().isoformat(timespec="seconds"))


class PlainFormatter(logging.Formatter):
    """`2026-11-21T10:00:00+09:00 INFO mint-poll: message`, readable in journald and cron mail."""

    def __init__(self, tool: str) -> None:
        super().__init__()
        self.tool = tool

    def format(self, record: logging.LogRecord) -> str:
        line = f"{local_iso(record.created)} {record.levelname} {self.tool}: {record.getMessage()}"
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed with `extra=` are kept."""

    def __init__(self, tool: str) -> None:
        super().__init__()
        self.tool = tool

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": local_iso(record.created),
            "level": record.levelname,
            "tool": self.tool,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["traceback"] = record.exc_text
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


def level_for(verbosity: int) -> int:
    """-q -> WARNING, default INFO, -v and more -> DEBUG."""
    if verbosity < 0:
        return logging.WARNING
    if verbosity == 0:
        return logging.INFO
    return logging.DEBUG


def _console_handler(tool: str, log_format: str, stream: TextIO) -> logging.Handler:
    use_rich = log_format == "rich" or (log_format == "auto" and terminal().is_tty(stream))
    if use_rich:
        from rich.console import Console
        from rich.logging import RichHandler

        return RichHandler(
            console=Console(file=stream),
            show_path=False,
            rich_tracebacks=False,
            markup=False,
            log_time_format=_rich_time,
        )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(tool) if log_format == "json" else PlainFormatter(tool))
    return handler


def setup_logging(
    tool: str,
    *,
    verbosity: int = 0,
    log_format: str = "auto",
    log_file: Optional[Path] = None,
    stream: Optional[TextIO] = None,
) -> logging.Logger:
    """Configure the root logger for `tool` and return the tool's logger.

    Calling it again replaces the handlers it installed before (tests and
    long-running daemons re-configure without duplicating lines).
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(
            f"unknown log format {log_format!r}; choose one of {', '.join(LOG_FORMATS)}"
        )
    level = level_for(verbosity)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_mint_handler", False)]:
        root.removeHandler(old)
        old.close()
    handlers: list[logging.Handler] = [
        _console_handler(tool, log_format, stream if stream is not None else sys.stderr)
    ]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(
            JsonFormatter(tool) if log_format == "json" else PlainFormatter(tool)
        )
        handlers.append(file_handler)
    for handler in handlers:
        handler.addFilter(RedactingFilter())
        handler.setLevel(level)
        handler._mint_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (paramiko transport, botocore, urllib3) only with -vv.
    for noisy in ("paramiko", "botocore", "boto3", "urllib3", "s3transfer", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    return logging.getLogger(tool)
