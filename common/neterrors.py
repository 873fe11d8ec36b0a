"""One human line for a network failure, instead of the repr chain requests and urllib3 build.

`network_error_line(exc, attempts)` walks the exception's `__cause__` / `__context__`
chain (requests -> urllib3 -> socket/ssl) and says what went wrong in the words an
admin would use:

    cannot connect to mint.example.jp:50443: connection refused (after 2 attempts)
    cannot resolve mint.example.jp: name or service not known
    no reply from mint.example.jp:50443 within the read timeout
    TLS handshake with mint.example.jp:50443 failed: certificate verify failed: ...
    cannot connect to proxy proxy.example.jp:3128: connection refused

Classes are recognised by name, so this module needs neither requests nor urllib3.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any, Optional

MAX_DETAIL = 200


def network_error_line(
    exc: BaseException,
    attempts: int = 1,
    *,
    target: Optional[str] = None,
    request: Optional[str] = None,
) -> str:
    """The one line for `exc`; `target` (`HOST:PORT`) is used when the chain names none, and
    `request` (`GET /path`) is named when the server took it but did not answer in time."""
    chain = list(_chain(exc))
    where = _endpoint(chain) or target or "the server"
    line = _describe(chain, where, request)
    return line + (f" (after {attempts} attempts)" if attempts > 1 else "")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        nested = _nested(current)
        current = current.__cause__ or nested or current.__context__


def _nested(exc: BaseException) -> Optional[BaseException]:
    """urllib3 keeps the real reason in `.reason` or in its args rather than as a cause."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        return reason
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, BaseException):
            return arg
    return None


def _named(exc: BaseException, *names: str) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def _first(chain: list[BaseException], *names: str) -> Optional[BaseException]:
    return next((e for e in chain if _named(e, *names)), None)


def _host_port(holder: Any) -> Optional[str]:
    host = getattr(holder, "host", None)
    port = getattr(holder, "port", None)
    if not isinstance(host, str) or not host:
        return None
    return f"{host}:{port}" if isinstance(port, int) else host


def _endpoint(chain: list[BaseException]) -> Optional[str]:
    """HOST:PORT of the connection that failed (urllib3 keeps it on `.conn` or `.pool`)."""
    for exc in reversed(chain):
        for attr in ("conn", "pool"):
            found = _host_port(getattr(exc, attr, None))
            if found:
                return found
    return None


def _describe(chain: list[BaseException], where: str, request: Optional[str]) -> str:
    """The line of the first kind of failure the chain shows, in the order they are told
    apart (a proxy's failure before the target's, name resolution before connecting)."""
    for recognise in _KINDS:
        line = recognise(chain, where, request)
        if line is not None:
            return line
    return f"cannot talk to {where}: {_one_line(chain[-1])}"


def _proxy(chain: list[BaseException], where: str, _request: Optional[str]) -> Optional[str]:
    return None if _first(chain, "ProxyError") is None else _proxy_problem(chain, where)


def _resolution(chain: list[BaseException], where: str, _request: Optional[str]) -> Optional[str]:
    gai = next((e for e in chain if isinstance(e, socket.gaierror)), None)
    if gai is None and _first(chain, "NameResolutionError") is None:
        return None
    host = where.rsplit(":", 1)[0] if ":" in where else where
    return f"cannot resolve {host}: {_reason(gai) if gai else 'name not found'}"


def _tls(chain: list[BaseException], where: str, _request: Optional[str]) -> Optional[str]:
    if _first(chain, "SSLError", "SSLCertVerificationError") is None:
        return None
    return f"TLS handshake with {where} failed: {_ssl_reason(chain)}"


def _read_timeout(chain: list[BaseException], where: str, request: Optional[str]) -> Optional[str]:
    if _first(chain, "ReadTimeout", "ReadTimeoutError") is None:
        return None
    to = f" to {request}" if request else ""
    return f"no reply{to} from {where} within the read timeout"


def _connect_timeout(
    chain: list[BaseException], where: str, _request: Optional[str]
) -> Optional[str]:
    os_error = _last_os_error(chain)
    # urllib3's NewConnectionError is a ConnectTimeoutError whatever the cause: ask the socket
    if isinstance(os_error, TimeoutError) or (
        os_error is None and _first(chain, "ConnectTimeout", "ConnectTimeoutError") is not None
    ):
        return f"cannot connect to {where}: timed out"
    return None


def _broken(chain: list[BaseException], where: str, _request: Optional[str]) -> Optional[str]:
    if _first(chain, "ProtocolError", "RemoteDisconnected", "ChunkedEncodingError") is None:
        return None
    os_error = _last_os_error(chain)
    detail = _reason(os_error) if os_error else "the server closed the connection"
    return f"connection to {where} broke: {detail}"


def _not_connected(
    chain: list[BaseException], where: str, _request: Optional[str]
) -> Optional[str]:
    os_error = _last_os_error(chain)
    return None if os_error is None else f"cannot connect to {where}: {_reason(os_error)}"


_KINDS: tuple[Callable[[list[BaseException], str, Optional[str]], Optional[str]], ...] = (
    _proxy,
    _resolution,
    _tls,
    _read_timeout,
    _connect_timeout,
    _broken,
    _not_connected,
)


def _proxy_problem(chain: list[BaseException], where: str) -> str:
    os_error = _last_os_error(chain)
    text = _one_line(os_error) if os_error is not None else ""
    if "Tunnel connection failed" in text:
        answer = text.split("Tunnel connection failed:", 1)[1].strip()
        return f"the proxy refused the connection to {where}: {answer}"
    detail = _reason(os_error) if os_error is not None else "no usable answer"
    return f"cannot connect to proxy {where}: {detail}"


def _last_os_error(chain: list[BaseException]) -> Optional[BaseException]:
    """The innermost plain OSError (the socket's own), skipping the library wrappers."""
    for exc in reversed(chain):
        if isinstance(exc, OSError) and not _named(exc, "RequestException", "HTTPError"):
            return exc
    return None


def _reason(exc: Optional[BaseException]) -> str:
    if exc is None:
        return "unknown error"
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror[0].lower() + strerror[1:]
    return _one_line(exc)


def _ssl_reason(chain: list[BaseException]) -> str:
    for exc in reversed(chain):
        message = getattr(exc, "verify_message", None)
        if isinstance(message, str) and message:
            return f"certificate verify failed: {message}"
        reason = getattr(exc, "reason", None)
        if isinstance(reason, str) and reason:
            return reason.replace("_", " ").lower()
    return _one_line(chain[-1])


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "..."
