"""`mint-poll serve`: an in-memory rehearsal broker speaking the mi-distcomp-api.

It implements both sides' endpoints, the progress states, the 30-minute
purge and the server's quirks as the protocol document lists them, and checks
the bearer token like the API gateway in front of the real server. Like the
real server it keeps everything in memory: a restart loses every record.

- `Broker`: the protocol logic (no HTTP), thread-safe, with an injectable clock.
- `DistcompServer`: a threaded HTTP(S) server around a Broker; start it in a
  thread (`with DistcompServer(...) as server:`) or run `serve_forever()`.
  Request and reply bodies are streamed (files are held as base64 bytes).

Test-only switches (constructor options, never set by the CLI):
`inject_result_files` adds extra entries (e.g. hostile names such as
`../x`, or `module.sh` nobody asked for) to every get-calc-result reply;
`fail_next()` answers the next requests to an endpoint with an HTTP error;
`hold_next()` parks the next request to an endpoint until released, then drops it
(`processed=True`: the broker handles it first, so only the reply is lost); its
`arrived` event tells a test the request is there (a kill point without sleeps).

Hostile mode (`DistcompServer.hostile(endpoint, scenario, times=...)`): the
server plays a compromised or broken peer on one endpoint. A `Hostile` scenario
lets the broker handle the request (or not) and then answers with raw bytes of
any size, streamed lazily so a 300 MB reply costs the server nothing, optionally
after a delay. Ready-made scenarios: `deep_nesting`, `reply_code` (`"²"`),
`huge_number`, `many_strings`, `many_values`, `calc_info` (any calc-info, e.g. a file name with a
lone surrogate), `absurd_id`, `slow`.
"""

from __future__ import annotations

import dataclasses
import hmac
import http.server
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from mint_common.errors import InputError
from mint_poll.api import (
    ABNORMAL,
    API_PATH,
    CALC_END,
    COMPLETE_SEND,
    COMPLETED,
    END_RESULTS,
    GETTING_RETURN,
    GOT_RETURN,
    NOT_START,
    RUNNING,
    SENDING_PARAMS,
)
from mint_poll.stream import (
    Base64MemorySink,
    Base64Text,
    JsonPath,
    StreamedJson,
    StringSink,
    b64encode,
    parse_json_stream,
)

log = logging.getLogger(__name__)

PURGE_AFTER = 30 * 60.0
#: Hostile names a test server can send back from get-calc-result.
HOSTILE_RESULT_NAMES = ("../x", "/etc/x", "a/../../x")
JSON_STYLES = ("python", "utf8", "pretty", "sorted")

MSG_OK = "正常に処理しました"
MSG_NOTHING = "このサイトで実行する計算はありません"
MSG_NOT_ALLOWED = "先頭の計算はまだ実行を許可されていません"
MSG_NO_CALC_INFO = "calc-infoがありません"
MSG_MISSING_KEYS = "accept_idまたはsite_idがありません"
MSG_NOT_JSON = "リクエストがJSONではありません"


def _msg_unknown_id(accept_id: str) -> str:
    return f"accept_id {accept_id} の情報はありません"


def _msg_unknown_site(site_id: str) -> str:
    return f"サイトID {site_id} は登録されていません"


def _msg_wrong_state(progress: str) -> str:
    return f"現在の状態({progress})ではこの操作はできません"


@dataclasses.dataclass
class _Record:
    accept_id: str
    site_id: str
    calc_info: dict[str, Any]
    accept_time: float
    wait_allow: Optional[float] = None
    calc_progress: str = NOT_START
    calc_status: str = "none"
    result_files: Optional[dict[str, Any]] = None

    def summary(self) -> dict[str, Any]:
        return {
            "accept_time": self.accept_time,
            "wait_allow": "none" if self.wait_allow is None else self.wait_allow,
            "calc_progress": self.calc_progress,
            "calc_status": self.calc_status,
            "command": self.calc_info.get("command"),
            "remote-site": self.site_id,
        }


Answer = tuple[int, Any]


def _wrap(code: Any, message: str, **extra: Any) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, **extra}]}


class Broker:
    """The server's table of calculations and the rules of every endpoint.

    `sites` maps each known site id to the command strings it may be asked to run.
    """

    def __init__(
        self,
        sites: Mapping[str, Sequence[str]],
        *,
        clock: Callable[[], float] = time.time,
        purge_after: float = PURGE_AFTER,
        inject_result_files: Optional[Mapping[str, bytes]] = None,
    ) -> None:
        self.sites = {site: tuple(commands) for site, commands in sites.items()}
        self.clock = clock
        self.purge_after = purge_after
        self.inject_result_files = dict(inject_result_files or {})
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def handle(self, method: str, endpoint: str, query: Mapping[str, str], body: Any) -> Answer:
        """Answer one request: (HTTP status, JSON document that may hold Base64Text values)."""
        handlers: dict[tuple[str, str], Callable[[Mapping[str, str], Any], Answer]] = {
            ("POST", "add-calcinfo"): self._add_calcinfo,
            ("POST", "allow-wait-calc"): self._allow_wait_calc,
            ("GET", "calc-status"): self._calc_status,
            ("GET", "calc-progress"): self._calc_progress,
            ("GET", "get-calc-result"): self._get_calc_result,
            ("POST", "cancel-wait-calc"): self._cancel_wait_calc,
            ("GET", "get-calcinfo"): self._get_calcinfo,
            ("GET", "calc-request"): self._calc_request,
            ("GET", "calc-params"): self._calc_params,
            ("POST", "calc-params-complete"): self._step(SENDING_PARAMS, COMPLETE_SEND),
            ("POST", "calc-start"): self._step(COMPLETE_SEND, RUNNING),
            ("POST", "calc-end"): self._calc_end,
            ("POST", "send-results"): self._send_results,
            ("POST", "end-send"): self._end_send,
        }
        handler = handlers.get((method, endpoint))
        if handler is None:
            return 404, _wrap(404, f"{method} /{endpoint} はありません")
        with self._lock:
            return handler(query, body)

    def restart(self) -> None:
        """Forget every record, as a restart of the real server does (quirk 6)."""
        with self._lock:
            self._records.clear()

    def progress_of(self, accept_id: str) -> Optional[str]:
        """The calc_progress of a record, None if unknown (for tests and the debug listing)."""
        with self._lock:
            record = self._records.get(accept_id)
            return record.calc_progress if record else None

    # ---- helpers ---------------------------------------------------------------------------

    def _purge(self) -> None:
        now = self.clock()
        for accept_id, record in list(self._records.items()):
            stale = now - record.accept_time > self.purge_after
            if stale and (record.wait_allow is None or record.calc_progress == NOT_START):
                log.info("purging calculation %s (older than 30 minutes, never ran)", accept_id)
                del self._records[accept_id]

    @staticmethod
    def _keys(query: Mapping[str, str], body: Any, *names: str) -> Optional[list[str]]:
        values: list[str] = []
        for name in names:
            value = query.get(name)
            if value is None and isinstance(body, dict):
                value = body.get(name)
            if not isinstance(value, str) or not value:
                return None
            values.append(value)
        return values

    def _remote_record(
        self, query: Mapping[str, str], body: Any
    ) -> tuple[Optional[_Record], Optional[Answer]]:
        keys = self._keys(query, body, "accept_id", "site_id")
        if keys is None:
            return None, (400, _wrap(400, MSG_MISSING_KEYS))
        accept_id, site_id = keys
        record = self._records.get(accept_id)
        if record is None:
            return None, (200, _wrap(400, _msg_unknown_id(accept_id)))
        if record.site_id != site_id:
            return None, (
                200,
                _wrap(400, f"accept_id {accept_id} はサイト {site_id} の計算ではありません"),
            )
        return record, None

    # ---- workflow side ---------------------------------------------------------------------

    def _add_calcinfo(self, query: Mapping[str, str], body: Any) -> Answer:
        self._purge()
        info = body.get("calc-info") if isinstance(body, dict) else None
        if not isinstance(info, dict):
            return 202, _wrap(400, MSG_NO_CALC_INFO)
        site_id = info.get("remote-site")
        if not isinstance(site_id, str) or site_id not in self.sites:
            return 202, _wrap("400", _msg_unknown_site(str(site_id)))
        command = info.get("command")
        if command not in self.sites[site_id]:
            return 202, _wrap(401, f"コマンド {command} はサイト {site_id} では実行できません")
        accept_id = str(uuid.uuid4())
        self._records[accept_id] = _Record(accept_id, site_id, info, self.clock())
        log.info("registered calculation %s for site %s: %s", accept_id, site_id, command)
        return 200, _wrap(200, MSG_OK, accept_id=accept_id)

    def _allow_wait_calc(self, query: Mapping[str, str], body: Any) -> Answer:
        keys = self._keys({}, body, "accept_id")
        record = self._records.get(keys[0]) if keys else None
        if record is None:
            return 400, _wrap(400, _msg_unknown_id(keys[0] if keys else ""))
        if record.wait_allow is not None:
            return 400, _wrap(400, "すでに許可されています")
        if record.calc_progress != NOT_START:
            return 400, _wrap(400, _msg_wrong_state(record.calc_progress))
        record.wait_allow = self.clock()
        return 200, _wrap(200, MSG_OK)

    def _status_word(self, query: Mapping[str, str], body: Any, field: str) -> Answer:
        keys = self._keys(query, body, "accept_id")
        record = self._records.get(keys[0]) if keys else None
        if record is None:
            return 200, _wrap(400, _msg_unknown_id(keys[0] if keys else ""))
        return 200, _wrap(200, f"status:{getattr(record, field)}")

    def _calc_status(self, query: Mapping[str, str], body: Any) -> Answer:
        return self._status_word(query, body, "calc_status")

    def _calc_progress(self, query: Mapping[str, str], body: Any) -> Answer:
        return self._status_word(query, body, "calc_progress")

    def _get_calc_result(self, query: Mapping[str, str], body: Any) -> Answer:
        keys = self._keys(query, body, "accept_id")
        record = self._records.get(keys[0]) if keys else None
        if record is None:
            return 200, _wrap(400, _msg_unknown_id(keys[0] if keys else ""))
        if record.calc_progress != GOT_RETURN:
            return 200, _wrap(400, _msg_wrong_state(record.calc_progress))
        files = dict(record.result_files or {})
        for name, content in self.inject_result_files.items():
            files[name] = {
                "content": Base64Text(b64encode(content)),
                "mimetype1": "text/plain;",
                "mimetype2": "charset=us-ascii",
            }
        del self._records[record.accept_id]
        return 200, _wrap(200, MSG_OK, **{"result-info": {"result_files": files}})

    def _cancel_wait_calc(self, query: Mapping[str, str], body: Any) -> Answer:
        keys = self._keys({}, body, "accept_id")
        accept_id = keys[0] if keys else ""
        record = self._records.get(accept_id)
        if record is None:
            return 400, accept_id
        force = isinstance(body, dict) and body.get("delete") == "force"
        if not force:
            if record.wait_allow is None:
                return 400, _wrap(401, "実行許可されていない計算は取り消せません")
            finished = record.calc_progress == GOT_RETURN or record.calc_status == ABNORMAL
            if record.calc_progress != NOT_START and not finished:
                return 400, _wrap(400, _msg_wrong_state(record.calc_progress))
        del self._records[accept_id]
        return 200, _wrap(200, MSG_OK)

    def _get_calcinfo(self, query: Mapping[str, str], body: Any) -> Answer:
        self._purge()
        table = {accept_id: r.summary() for accept_id, r in self._records.items()}
        return 200, _wrap(200, MSG_OK, table=table)

    # ---- remote side -----------------------------------------------------------------------

    def _calc_request(self, query: Mapping[str, str], body: Any) -> Answer:
        keys = self._keys(query, body, "site_id")
        if keys is None:
            return 400, _wrap(400, MSG_MISSING_KEYS)
        site_id = keys[0]
        if site_id not in self.sites:
            return 200, _wrap("400", _msg_unknown_site(site_id))
        for record in self._records.values():
            if record.site_id == site_id and record.calc_progress == NOT_START:
                if record.wait_allow is None:
                    return 200, _wrap("400", MSG_NOT_ALLOWED)
                return 200, _wrap(200, MSG_OK, accept_id=record.accept_id)
        return 200, _wrap("0300", MSG_NOTHING)

    def _calc_params(self, query: Mapping[str, str], body: Any) -> Answer:
        record, refusal = self._remote_record(query, body)
        if record is None:
            assert refusal is not None
            return refusal
        if record.calc_progress != NOT_START or record.wait_allow is None:
            # Quirk 3: code 200, but no calc-info.
            return 200, _wrap(200, _msg_wrong_state(record.calc_progress))
        record.calc_progress = SENDING_PARAMS
        return 200, {"calc-info": record.calc_info}

    def _step(self, before: str, after: str) -> Callable[[Mapping[str, str], Any], Answer]:
        def step(query: Mapping[str, str], body: Any) -> Answer:
            record, refusal = self._remote_record({}, body)
            if record is None:
                assert refusal is not None
                return refusal
            if record.calc_progress != before:
                return 200, _wrap(400, _msg_wrong_state(record.calc_progress))
            record.calc_progress = after
            return 200, _wrap(200, MSG_OK)

        return step

    def _calc_end(self, query: Mapping[str, str], body: Any) -> Answer:
        record, refusal = self._remote_record({}, body)
        if record is None:
            assert refusal is not None
            return refusal
        result = body.get("result")
        if result not in END_RESULTS:
            return 400, _wrap(402, f"resultの値 {result} が不正です")
        if record.calc_progress == RUNNING:
            record.calc_progress = CALC_END
            record.calc_status = COMPLETED if result == CALC_END else ABNORMAL
        # Quirk 4: code 200 whether or not anything changed.
        return 200, _wrap(200, MSG_OK)

    def _send_results(self, query: Mapping[str, str], body: Any) -> Answer:
        record, refusal = self._remote_record({}, body)
        if record is None:
            assert refusal is not None
            return refusal
        files = body.get("result_files")
        if not isinstance(files, dict):
            return 400, _wrap(400, "result_filesがありません")
        if record.calc_progress != CALC_END:
            return 200, _wrap(400, _msg_wrong_state(record.calc_progress))
        record.result_files = files
        record.calc_progress = GETTING_RETURN
        return 200, _wrap(200, MSG_OK)

    def _end_send(self, query: Mapping[str, str], body: Any) -> Answer:
        record, refusal = self._remote_record({}, body)
        if record is None:
            assert refusal is not None
            return refusal
        if body.get("result") != "end send":
            return 400, _wrap(402, f"resultの値 {body.get('result')} が不正です")
        if record.calc_progress != GETTING_RETURN:
            return 200, _wrap(400, _msg_wrong_state(record.calc_progress))
        record.calc_progress = GOT_RETURN
        return 200, _wrap(200, MSG_OK)


RawBody = Callable[[], Iterable[bytes]]


@dataclasses.dataclass(frozen=True)
class Hold:
    """One parked request (`DistcompServer.hold_next`): `arrived` is set when it is
    parked, setting `release` lets it end."""

    processed: bool = False
    arrived: threading.Event = dataclasses.field(default_factory=threading.Event)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)


HOSTILE_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Hostile:
    """How the server misbehaves on one request (see the module docstring).

    `body`: the raw reply (a factory of byte chunks; None: the broker's own answer);
    `process`: let the broker handle the request first (its state moves on as if the
    reply were sent); `delay`: seconds to wait before answering (a slow server).
    """

    body: Optional[RawBody] = None
    status: int = 200
    process: bool = True
    delay: float = 0.0


def _repeat(head: bytes, unit: bytes, count: int, tail: bytes) -> RawBody:
    """`head + unit * count + tail` produced chunk by chunk, never whole."""

    def chunks() -> Iterator[bytes]:
        yield head
        per_chunk = max(1, HOSTILE_CHUNK // max(1, len(unit)))
        left = count
        while left > 0:
            step = min(left, per_chunk)
            yield unit * step
            left -= step
        yield tail

    return chunks


def deep_nesting(depth: int) -> Hostile:
    """`[[[[...]]]]` nested `depth` times (a recursive parser dies of RecursionError)."""
    return Hostile(_repeat(b"", b"[", depth, b"]" * min(depth, HOSTILE_CHUNK)))


def reply_code(code: Any, **entry: Any) -> Hostile:
    """A wrapped reply whose code is `code` (e.g. `"²"`, a digit to str.isdigit only)."""
    body = StreamedJson(_wrap(code, MSG_OK, **entry)).read_all()
    return Hostile(lambda: [body])


def huge_number(digits: int) -> Hostile:
    """A calc-info holding a number literal `digits` long (quadratic to a parser that
    re-scans its buffer for the token's end after every chunk)."""
    return Hostile(_repeat(b'{"calc-info": {"command": "run.sh", "n": 2', b"0", digits, b"}}"))


def many_strings(count: int, length: int) -> Hostile:
    """A calc-info with `count` extra string values of `length` bytes each (none diverted)."""
    value = b'"' + b"a" * length + b'"'

    def chunks() -> Iterator[bytes]:
        yield b'{"calc-info": {"command": "run.sh"'
        for index in range(count):
            yield b', "x%d": ' % index + value
        yield b"}}"

    return Hostile(chunks)


def many_values(count: int) -> Hostile:
    """A calc-info holding a list of `count` zeros (each one a value to keep)."""
    return Hostile(_repeat(b'{"calc-info": {"command": "run.sh", "x": [0', b",0", count, b"]}}"))


def calc_info(info: Mapping[str, Any]) -> Hostile:
    """A calc-params reply with this calc-info (written with ASCII escapes, so lone
    surrogates go out as `\\udXXX`)."""
    body = StreamedJson({"calc-info": dict(info)}).read_all()
    return Hostile(lambda: [body])


def absurd_id(accept_id: str) -> Hostile:
    """A calc-request offer of this accept_id (`a/../../x`, `.`, megabytes, a line break)."""
    return reply_code(200, accept_id=accept_id)


def slow(seconds: float) -> Hostile:
    """The broker's own answer, `seconds` late."""
    return Hostile(delay=seconds)


def _request_divert(path: JsonPath) -> Optional[StringSink]:
    """File contents in request bodies are kept as base64 bytes, never decoded to str."""
    is_parameter = len(path) == 4 and path[:2] == ("calc-info", "parameter_files") and path[3] == 0
    is_result = len(path) == 3 and path[0] == "result_files" and path[2] == "content"
    return Base64MemorySink() if is_parameter or is_result else None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each reply waits for a
    # delayed ACK (~40 ms on Linux).
    disable_nagle_algorithm = True
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _request_chunks(self) -> Optional[Iterator[bytes]]:
        """The request body as chunks (Content-Length or chunked encoding); None if no body."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunked_chunks()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise InputError("invalid Content-Length") from None
        return self._body_chunks(length) if length > 0 else None

    def _chunked_chunks(self) -> Iterator[bytes]:
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise InputError("invalid chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    continue
                return
            yield from self._body_chunks(size)
            self.rfile.readline(1024)

    def _body_chunks(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1024 * 1024))
            if not chunk:
                raise InputError("request body ended early")
            remaining -= len(chunk)
            yield chunk

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        if not self._authorised(owner.token):
            self.close_connection = True
            self._answer(401, {"message": "Unauthorized"})
            return
        if not parts.path.startswith(API_PATH + "/"):
            self.close_connection = True
            self._answer(404, {"message": "Not Found"})
            return
        endpoint = parts.path[len(API_PATH) + 1 :]
        held = owner.take_hold(endpoint)
        if held is not None and not held.processed:
            self._park(held)
            return
        injected = owner.take_failure(endpoint)
        if injected is not None:
            self.close_connection = True
            self._answer(injected, {"message": "injected failure"})
            return
        scenario = owner.take_hostile(endpoint)
        try:
            chunks = self._request_chunks()
            body = (
                parse_json_stream(chunks, _request_divert, what="request")
                if chunks is not None
                else None
            )
        except InputError:
            self.close_connection = True
            self._answer(400, _wrap(400, MSG_NOT_JSON))
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if scenario is not None:
            self._hostile_answer(scenario, method, endpoint, query, body)
            return
        status, document = owner.broker.handle(method, endpoint, query, body)
        if held is not None:
            self._park(held)
            return
        self._answer(status, document)

    def _park(self, held: Hold) -> None:
        held.arrived.set()
        held.release.wait(timeout=120)
        self.close_connection = True
        self._answer(503, {"message": "held and dropped (test switch)"})

    def _hostile_answer(
        self, scenario: Hostile, method: str, endpoint: str, query: Mapping[str, str], body: Any
    ) -> None:
        owner = self.server.owner
        status, document = scenario.status, None
        if scenario.process:
            status, document = owner.broker.handle(method, endpoint, query, body)
        if scenario.delay and owner.stopping.wait(scenario.delay):
            return
        if scenario.body is None:
            self._answer(status, document)
            return
        # No Content-Length: the reply ends when the connection closes, as a broken proxy's.
        self.close_connection = True
        self.send_response(scenario.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in scenario.body():
                self.wfile.write(chunk)
        except OSError:
            log.debug("the client hung up on the hostile reply to %s", endpoint)

    def _authorised(self, token: str) -> bool:
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode("utf-8"), f"Bearer {token}".encode())

    def _answer(self, status: int, document: Any) -> None:
        body = self.server.owner.encode(document)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Authorization", "")  # quirk 9
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in body:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: DistcompServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake is not the server's problem.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class DistcompServer:
    """The broker on HTTP(S). `port=0` takes an ephemeral port; `url` tells which.

    `tls_cert`/`tls_key` (PEM files) make it HTTPS. `json_style` shapes the
    replies like the Flask versions the real server may run: "python" (ASCII
    escapes), "utf8" (raw UTF-8), "pretty" (indented, raw UTF-8), "sorted"
    (sorted keys, ASCII escapes) (quirk 7).
    """

    def __init__(
        self,
        broker: Broker,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: Optional[Path] = None,
        tls_key: Optional[Path] = None,
        json_style: str = "python",
    ) -> None:
        if json_style not in JSON_STYLES:
            raise ValueError(f"json_style must be one of {', '.join(JSON_STYLES)}")
        if not token:
            raise ValueError("the server needs a token to check")
        self.broker = broker
        self.token = token
        self.json_style = json_style
        self._failures: dict[str, list[int]] = {}
        self._holds: dict[str, list[Hold]] = {}
        self._hostile: dict[str, list[Hostile]] = {}
        self._hostile_always: dict[str, Hostile] = {}
        self._failures_lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = _HttpServer((host, port), _Handler)
        self._httpd.owner = self
        self.scheme = "http"
        if tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls_cert), str(tls_key) if tls_key else None)
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def url(self) -> str:
        """The root URL with its port, e.g. `http://127.0.0.1:40123`."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base, e.g. `http://127.0.0.1:40123/mi-distcomp-api`."""
        return self.url + API_PATH

    def encode(self, document: Any) -> StreamedJson:
        """A reply body in the configured JSON style."""
        style = self.json_style
        return StreamedJson(
            document,
            ensure_ascii=style in ("python", "sorted"),
            indent=4 if style == "pretty" else None,
            sort_keys=style == "sorted",
        )

    def fail_next(self, endpoint: str, count: int = 1, status: int = 503) -> None:
        """Test switch: answer the next `count` requests to `endpoint` with HTTP `status`."""
        with self._failures_lock:
            self._failures.setdefault(endpoint, []).extend([status] * count)

    def hold_next(self, endpoint: str, *, processed: bool = False) -> Hold:
        """Test switch: the next request to `endpoint` waits until `release` is set, then
        gets HTTP 503 (a peer that dies mid-request); `processed`: the broker has handled it
        by then, as if the reply were lost on the way."""
        hold = Hold(processed=processed)
        with self._failures_lock:
            self._holds.setdefault(endpoint, []).append(hold)
        return hold

    def hostile(self, endpoint: str, scenario: Hostile, *, times: Optional[int] = 1) -> None:
        """Hostile mode: answer the next `times` requests to `endpoint` (None: every one
        from now on) as `scenario` says."""
        with self._failures_lock:
            if times is None:
                self._hostile_always[endpoint] = scenario
            else:
                self._hostile.setdefault(endpoint, []).extend([scenario] * times)

    def calm(self, endpoint: str) -> None:
        """End hostile mode on `endpoint`."""
        with self._failures_lock:
            self._hostile.pop(endpoint, None)
            self._hostile_always.pop(endpoint, None)

    def take_hostile(self, endpoint: str) -> Optional[Hostile]:
        with self._failures_lock:
            pending = self._hostile.get(endpoint)
            if pending:
                return pending.pop(0)
            return self._hostile_always.get(endpoint)

    def take_hold(self, endpoint: str) -> Optional[Hold]:
        with self._failures_lock:
            pending = self._holds.get(endpoint)
            return pending.pop(0) if pending else None

    def take_failure(self, endpoint: str) -> Optional[int]:
        with self._failures_lock:
            pending = self._failures.get(endpoint)
            return pending.pop(0) if pending else None

    def serve_forever(self) -> None:
        """Serve in the calling thread until `shutdown()` (used by `mint-poll serve`)."""
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> DistcompServer:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="mint-serve")
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving (from another thread) and close the listening socket."""
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> DistcompServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port (for tests that restart a server on the same port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
