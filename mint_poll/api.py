"""Client of the MInt distributed-computing WebAPI (`mi-distcomp-api`), both sides.

`DistcompApi` is the only place that talks HTTP (requests). It:
- builds the base URL (`https://host` -> `https://host:50443/mi-distcomp-api`);
- sends the bearer token on every request and never logs it;
- retries connection errors, timeouts and HTTP 5xx per the RetryPolicy, and
  nothing else (4xx and protocol refusals are answers, not faults);
- normalises the reply codes (`200`, `"400"`, `"0300"`; quirk 1) and turns
  refusals into `ApiRefusal` / `UnknownCalculation`, HTTP 401/403 into
  AuthError, TLS failures into AuthError with a hint, everything else
  transport-related into UnavailableError (exit 69);
- streams file contents both ways (see `mint_poll.stream`);
- treats every reply as possibly hostile: small replies are bounded in size and
  parsed with the same bounded parser as the file-carrying ones (depth, values,
  string and token length; `JsonLimits`), a result file nobody asked for is not
  written, and what cannot be understood is an InputError, never a crash.

Endpoint methods are named after the endpoints (`calc-params` -> `calc_params`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union
from urllib.parse import urlsplit, urlunsplit

from mint_common.config import Secret, one_line_secret
from mint_common.errors import (
    AuthError,
    ConfigError,
    InputError,
    MintError,
    TransferError,
    UnavailableError,
    UnsafePathError,
)
from mint_common.files import safe_join
from mint_common.neterrors import network_error_line
from mint_common.progress import transfer_progress
from mint_common.retry import RetryPolicy
from mint_poll.mime import mime_words
from mint_poll.stream import (
    DEFAULT_LIMITS,
    Base64File,
    Base64FileSink,
    DiscardSink,
    JsonLimitError,
    JsonLimits,
    JsonPath,
    StreamedJson,
    StringSink,
    parse_json_stream,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

API_PATH = "/mi-distcomp-api"
DEFAULT_PORT = 50443
STDOUT_NAME = "計算標準出力.txt"
STDERR_NAME = "計算標準エラー出力.txt"
STD_NAMES = (STDOUT_NAME, STDERR_NAME)
#: Ordinary (non-file) replies are small; refuse to buffer a runaway one.
MAX_SMALL_REPLY = 16 * 1024 * 1024
READ_CHUNK = 1024 * 1024
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
UNREQUESTED = "not requested: the server sent a file nobody asked for; not written"
CODE_OK = 200
#: A reply code is a few ASCII digits (`"²"` and `"٣"` are digits to str.isdigit, not to int).
_CODE_FORM = re.compile(r"[0-9]{1,6}")
CODE_NOTHING = 300

# The protocol's words, typed once: what calc-progress answers (in order), what calc-end
# sends, what calc-status answers at the end.
NOT_START = "not start"
SENDING_PARAMS = "sending params"
COMPLETE_SEND = "complete send"
RUNNING = "running"
CALC_END = "calc end"
GETTING_RETURN = "getting return"
GOT_RETURN = "got return"
PROGRESS_STEPS = (
    NOT_START,
    SENDING_PARAMS,
    COMPLETE_SEND,
    RUNNING,
    CALC_END,
    GETTING_RETURN,
    GOT_RETURN,
)
#: calc-status at the end of a run.
COMPLETED = "completed"
ABNORMAL = "abnormal"
#: calc-end's `result`: "calc end" (the run completed) or "abnormal".
END_RESULTS = (CALC_END, ABNORMAL)


def normalize_base_url(url: str) -> str:
    """`https://host` -> `https://host:50443/mi-distcomp-api` (the legacy clients add the port).

    A URL that already names a port or ends in `/mi-distcomp-api` keeps it.
    """
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"url {url!r} is not an http(s) URL", hint="e.g. url: https://nims.mintsys.jp"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"url {url!r} has an invalid port: {exc}") from exc
    netloc = parts.netloc if port is not None else f"{parts.netloc}:{DEFAULT_PORT}"
    path = parts.path.rstrip("/")
    if not path.endswith(API_PATH):
        path += API_PATH
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def normalize_code(value: Any) -> Optional[int]:
    """Reply codes come as int or string (`200`, `"400"`, `"0300"`); None if absent or odd."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _CODE_FORM.fullmatch(value.strip()):
        return int(value.strip())
    return None


class ApiRefusal(MintError):
    """The server answered but refused (a code other than 200, or a reply without its data)."""

    exit_status = 69

    def __init__(
        self,
        endpoint: str,
        message: str,
        *,
        http_status: int = 200,
        code: Optional[int] = None,
        hint: Optional[str] = None,
    ) -> None:
        shown = f"code {code}" if code is not None else "no code"
        super().__init__(f"{endpoint} refused (HTTP {http_status}, {shown}): {message}", hint=hint)
        self.endpoint = endpoint
        self.http_status = http_status
        self.code = code
        self.server_message = message


class UnknownCalculation(ApiRefusal):
    """The server has no record of the accept_id (fetched, cancelled, purged, or restarted)."""


class TlsError(AuthError):
    """The server's certificate could not be verified, or the TLS handshake failed."""


class _Transient(UnavailableError):
    """A failure worth retrying: no connection, a timeout, HTTP 5xx.

    `network` is the requests exception of a network failure, so that the final message
    can say how many attempts were made in one line (`mint_common.neterrors`).
    """

    def __init__(
        self,
        message: str,
        *,
        network: Optional[BaseException] = None,
        target: str = "",
        request: str = "",
    ) -> None:
        super().__init__(message)
        self.network = network
        self.target = target
        self.request = request

    def after(self, attempts: int) -> str:
        """The one-line message once `attempts` attempts have failed."""
        if self.network is not None:
            return network_error_line(
                self.network, attempts, target=self.target, request=self.request
            )
        return self.message + (f" (after {attempts} attempts)" if attempts > 1 else "")


@dataclass(frozen=True)
class Reply:
    """A decoded small reply: the first `errors` entry (or the whole body when not wrapped)."""

    endpoint: str
    http_status: int
    code: Optional[int]
    message: str
    entry: Mapping[str, Any]
    body: Any

    @property
    def ok(self) -> bool:
        return self.code == CODE_OK


@dataclass(frozen=True)
class PollAnswer:
    """What `calc-request` said: an accept_id to work on, or why there is nothing to do."""

    accept_id: Optional[str]
    code: Optional[int]
    message: str
    unknown_site: bool = False


@dataclass(frozen=True)
class ParameterFile:
    """One received parameter file; `path` is None when it was refused or missing."""

    name: str
    path: Optional[Path]
    size: int
    mimetype1: str
    mimetype2: str
    refused: Optional[str] = None
    missing: bool = False


@dataclass(frozen=True)
class CalcInfo:
    """The calc-info of a calculation, parameter files already decoded to disk."""

    accept_id: str
    command: str
    remote_site: str
    parameters: str
    parameter_files: tuple[ParameterFile, ...]
    result_names: tuple[str, ...]

    @property
    def refusals(self) -> list[str]:
        return [f.refused for f in self.parameter_files if f.refused]


@dataclass(frozen=True)
class OutgoingResult:
    """One entry of `send-results`: a file to send, or (path None) the reason it is missing."""

    name: str
    path: Optional[Path]
    mimetype1: str = ""
    mimetype2: str = ""
    error: Optional[str] = None


@dataclass(frozen=True)
class ReceivedResult:
    """One file of `get-calc-result`; `path` is None if refused (unsafe name, or not
    requested: `unrequested`) or missing."""

    name: str
    path: Optional[Path]
    size: int
    mimetype1: str
    mimetype2: str
    refused: Optional[str] = None
    error: Optional[str] = None
    unrequested: bool = False


@dataclass(frozen=True)
class CalcResult:
    """What `get-calc-result` delivered into the destination directory."""

    accept_id: str
    files: tuple[ReceivedResult, ...]

    @property
    def refused(self) -> list[ReceivedResult]:
        """Files refused for their name (unsafe), not counting unrequested ones."""
        return [f for f in self.files if f.refused and not f.unrequested]

    @property
    def unrequested(self) -> list[ReceivedResult]:
        """Files the server sent that were not asked for (never written)."""
        return [f for f in self.files if f.unrequested]

    @property
    def missing(self) -> list[ReceivedResult]:
        return [f for f in self.files if f.error]


class RemoteSideApi(Protocol):
    """The endpoints the polling agent uses (what tests may replace)."""

    def calc_request(self, site_id: str) -> PollAnswer: ...
    def calc_params(self, accept_id: str, site_id: str, workdir: Optional[Path]) -> CalcInfo: ...
    def calc_params_complete(self, accept_id: str, site_id: str) -> Reply: ...
    def calc_start(self, accept_id: str, site_id: str) -> Reply: ...
    def calc_end(self, accept_id: str, site_id: str, result: str) -> Reply: ...
    def send_results(
        self, accept_id: str, site_id: str, files: Sequence[OutgoingResult]
    ) -> Reply: ...
    def end_send(self, accept_id: str, site_id: str) -> Reply: ...
    def calc_progress(self, accept_id: str) -> str: ...


def _is_json_type(value: Any) -> bool:
    return isinstance(value, (dict, list, str, int, float, bool)) or value is None


class DistcompApi:
    """One connection to a mi-distcomp-api server (both the remote and the workflow side).

    `verify` is True (system CAs), False (no verification; testing only) or the
    path of a CA bundle. `retry` governs connection errors, timeouts and 5xx;
    its `retry_on` is replaced by this class's own transient-error type.
    """

    def __init__(
        self,
        url: str,
        token: Union[Secret, str],
        *,
        verify: Union[bool, str, Path] = True,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: Optional[RetryPolicy] = None,
        session: Optional[requests.Session] = None,
        limits: JsonLimits = DEFAULT_LIMITS,
    ) -> None:
        import requests

        self.base_url = normalize_base_url(url)
        secret = token.reveal() if isinstance(token, Secret) else token
        if not secret:
            raise ConfigError("the API token is empty")
        one_line_secret(secret, "the API token")
        self.limits = limits
        self.verify: Union[bool, str] = str(verify) if isinstance(verify, Path) else verify
        self.timeout = (connect_timeout, read_timeout)
        policy = retry if retry is not None else RetryPolicy()
        self.retry = dataclasses.replace(policy, retry_on=(_Transient,))
        self.session = session if session is not None else requests.Session()
        parts = urlsplit(self.base_url)
        self._target = f"{parts.hostname}:{parts.port}"
        self.session.headers.update(
            {
                "Authorization": f"Bearer {secret}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self.session.close()

    def __enter__(self) -> DistcompApi:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- transport -------------------------------------------------------------------------

    def _send_once(
        self,
        method: str,
        endpoint: str,
        params: Optional[Mapping[str, str]],
        body: Optional[Union[StreamedJson, _CountedBody]],
        stream: bool,
        headers: Optional[Mapping[str, str]],
    ) -> requests.Response:
        import requests

        url = f"{self.base_url}/{endpoint}"
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                data=body,
                timeout=self.timeout,
                verify=self.verify,
                stream=stream,
                headers=headers,
            )
        except requests.exceptions.SSLError as exc:
            raise TlsError(
                network_error_line(exc, target=self._target),
                hint="set ca_bundle to the CA file of the MInt server's certificate chain",
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            what = f"{method} {endpoint}"
            line = network_error_line(exc, target=self._target, request=what)
            raise _Transient(line, network=exc, target=self._target, request=what) from exc
        except requests.exceptions.RequestException as exc:
            raise UnavailableError(network_error_line(exc, target=self._target)) from exc
        log.debug("%s %s -> HTTP %d", method, endpoint, response.status_code)
        if response.status_code >= 500:
            response.close()
            raise _Transient(
                f"{method} {endpoint}: the server answered HTTP {response.status_code}"
            )
        if response.status_code in (401, 403):
            response.close()
            raise AuthError(
                f"{method} {endpoint}: the server refused the API token (HTTP"
                f" {response.status_code})",
                hint="check token/token_file: it must be the MInt API token of the workflow's user",
            )
        return response

    def _send(
        self,
        method: str,
        endpoint: str,
        *,
        params: Optional[Mapping[str, str]] = None,
        body: Optional[Union[StreamedJson, _CountedBody]] = None,
        stream: bool = False,
        headers: Optional[Mapping[str, str]] = None,
    ) -> requests.Response:
        what = f"{method} {endpoint}"
        tried = 0
        try:
            for attempt in self.retry.attempts(what):
                tried = attempt.number
                with attempt:
                    return self._send_once(method, endpoint, params, body, stream, headers)
        except UnavailableError as exc:
            last = exc.__cause__
            if isinstance(last, _Transient) and not isinstance(exc, _Transient):
                raise UnavailableError(last.after(tried)) from last
            raise
        raise AssertionError("unreachable: attempts() returns a success or raises")

    def _small(self, endpoint: str, response: requests.Response) -> Any:
        """Read and decode a small JSON reply (bounded in size)."""
        import requests

        try:
            data = bytearray()
            for chunk in response.iter_content(READ_CHUNK):
                data += chunk
                if len(data) > MAX_SMALL_REPLY:
                    raise InputError(f"{endpoint}: reply larger than {MAX_SMALL_REPLY} bytes")
        except requests.exceptions.RequestException as exc:
            raise TransferError(
                f"{endpoint}: reading the reply failed: {network_error_line(exc)}"
            ) from exc
        finally:
            response.close()
        try:
            return parse_json_stream([bytes(data)], what=f"{endpoint} reply", limits=self.limits)
        except JsonLimitError:
            raise
        except InputError as exc:
            shown = bytes(data[:200]).decode("utf-8", "replace")
            raise UnavailableError(
                f"{endpoint}: the server answered HTTP {response.status_code} with something"
                f" that is not JSON ({exc.message}): {shown!r}",
                hint="check that url points at the mi-distcomp-api (a proxy may be in the way)",
            ) from None

    def _reply(self, endpoint: str, response: requests.Response, body: Any) -> Reply:
        entry: Mapping[str, Any] = {}
        if isinstance(body, dict):
            errors = body.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                entry = errors[0]
            else:
                entry = body
        raw_message = entry.get("message", "") if entry else ""
        message = raw_message if isinstance(raw_message, str) else json.dumps(raw_message)
        reply = Reply(
            endpoint=endpoint,
            http_status=response.status_code,
            code=normalize_code(entry.get("code")) if entry else None,
            message=message,
            entry=entry,
            body=body,
        )
        log.debug(
            "%s: HTTP %d code %s message %s", endpoint, reply.http_status, reply.code, message
        )
        return reply

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        params: Optional[Mapping[str, str]] = None,
        document: Any = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Reply:
        body = StreamedJson(document) if document is not None else None
        total = len(body) if body is not None else 0
        with transfer_progress(f"{endpoint} ↑", total, enabled=_show(total)) as advance:
            sent = _CountedBody(body, advance) if body is not None else None
            response = self._send(method, endpoint, params=params, body=sent, headers=headers)
        return self._reply(endpoint, response, self._small(endpoint, response))

    @staticmethod
    def _require_ok(reply: Reply) -> Reply:
        if reply.ok and reply.http_status == 200:
            return reply
        raise ApiRefusal(
            reply.endpoint, reply.message, http_status=reply.http_status, code=reply.code
        )

    def _stream_document(
        self,
        endpoint: str,
        params: Mapping[str, str],
        divert: Callable[[JsonPath], Optional[StringSink]],
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[StreamedJson] = None,
    ) -> tuple[int, Any]:
        import requests

        response = self._send(
            "GET", endpoint, params=params, body=body, stream=True, headers=headers
        )
        total = _content_length(response.headers.get("Content-Length"))
        try:
            with transfer_progress(f"{endpoint} ↓", total, enabled=_show(total)) as advance:
                chunks = _counted(response.iter_content(READ_CHUNK), advance)
                document = parse_json_stream(
                    chunks, divert, what=f"{endpoint} reply", limits=self.limits
                )
        except requests.exceptions.RequestException as exc:
            raise TransferError(
                f"{endpoint}: the transfer broke: {network_error_line(exc)}"
            ) from exc
        finally:
            response.close()
        return response.status_code, document

    # ---- remote side -----------------------------------------------------------------------

    def calc_request(self, site_id: str) -> PollAnswer:
        """GET /calc-request: is a calculation waiting for `site_id`?

        Returns a PollAnswer with `accept_id` set, or None with the reason.
        Codes 0300 and 400 both mean "nothing to do now" (quirk 2);
        `unknown_site` is True when the 400's message names the site id.
        """
        reply = self._call("GET", "calc-request", params={"site_id": site_id})
        accept_id = reply.entry.get("accept_id")
        if reply.ok and isinstance(accept_id, str) and accept_id:
            return PollAnswer(accept_id, reply.code, reply.message)
        if reply.http_status == 200 and reply.code in (CODE_NOTHING, 400):
            unknown = reply.code == 400 and site_id in reply.message
            return PollAnswer(None, reply.code, reply.message, unknown_site=unknown)
        raise ApiRefusal(
            "calc-request", reply.message, http_status=reply.http_status, code=reply.code
        )

    def calc_params(self, accept_id: str, site_id: str, workdir: Optional[Path]) -> CalcInfo:
        """GET /calc-params: fetch the calc-info and decode each parameter file into `workdir`
        (None: read and drop them, for a calculation refused before it has a directory).

        Names are joined with safe_join: an absolute or escaping name is not
        written anywhere and is listed with its reason in `ParameterFile.refused`.
        Files are decoded as they arrive (constant memory). A reply without
        `calc-info` (quirk 3: wrong state, or another agent took it) raises ApiRefusal.
        """
        receivers: dict[str, ParameterFile] = {}

        def divert(path: JsonPath) -> Optional[StringSink]:
            if len(path) == 4 and path[:2] == ("calc-info", "parameter_files") and path[3] == 0:
                return self._parameter_sink(str(path[2]), workdir, receivers)
            return None

        status, document = self._stream_document(
            "calc-params", {"accept_id": accept_id, "site_id": site_id}, divert
        )
        info = document.get("calc-info") if isinstance(document, dict) else None
        if status != 200 or not isinstance(info, dict):
            reply = _reply_of("calc-params", status, document)
            raise ApiRefusal(
                "calc-params",
                reply.message or "the reply carries no calc-info",
                http_status=status,
                code=reply.code,
            )
        return _calc_info(accept_id, info, receivers)

    @staticmethod
    def _parameter_sink(
        name: str, workdir: Optional[Path], receivers: dict[str, ParameterFile]
    ) -> StringSink:
        def note(path: Optional[Path], refused: Optional[str]) -> None:
            receivers[name] = ParameterFile(name, path, 0, "", "", refused=refused)

        if workdir is None:
            note(None, f"parameter file {name!r} not written: the calculation was refused")
            return DiscardSink()
        return _file_sink(name, workdir, "parameter file", 0o600, note)

    def _step(self, endpoint: str, document: Mapping[str, Any]) -> Reply:
        return self._require_ok(self._call("POST", endpoint, document=document))

    def calc_params_complete(self, accept_id: str, site_id: str) -> Reply:
        """POST /calc-params-complete (step 3); ApiRefusal unless code 200."""
        return self._step("calc-params-complete", {"accept_id": accept_id, "site_id": site_id})

    def calc_start(self, accept_id: str, site_id: str) -> Reply:
        """POST /calc-start (step 4); ApiRefusal unless code 200."""
        return self._step("calc-start", {"accept_id": accept_id, "site_id": site_id})

    def calc_end(self, accept_id: str, site_id: str, result: str) -> Reply:
        """POST /calc-end with result "calc end" or "abnormal" (step 5).

        Code 200 in the wrong state changes nothing on the server (quirk 4);
        callers that care confirm with `calc_progress`.
        """
        if result not in END_RESULTS:
            raise ValueError(f"calc-end result must be 'calc end' or 'abnormal', not {result!r}")
        return self._step(
            "calc-end", {"accept_id": accept_id, "site_id": site_id, "result": result}
        )

    def send_results(self, accept_id: str, site_id: str, files: Sequence[OutgoingResult]) -> Reply:
        """POST /send-results (step 6), the body streamed from disk with an exact Content-Length.

        A file that would exceed the 2 GiB base64 limit raises InputError
        before anything is sent (callers refuse it and send an error entry).
        """
        entries: dict[str, Any] = {}
        for item in files:
            if item.path is None:
                entries[item.name] = {
                    "content": "",
                    "mimetype1": "Error",
                    "mimetype2": item.error or f"{item.name} does not exist",
                }
            else:
                entries[item.name] = {
                    "content": Base64File(item.path),
                    "mimetype1": item.mimetype1,
                    "mimetype2": item.mimetype2,
                }
        document = {"accept_id": accept_id, "site_id": site_id, "result_files": entries}
        return self._step("send-results", document)

    def end_send(self, accept_id: str, site_id: str) -> Reply:
        """POST /end-send (step 7); progress becomes `got return`."""
        return self._step(
            "end-send", {"accept_id": accept_id, "site_id": site_id, "result": "end send"}
        )

    # ---- workflow side ---------------------------------------------------------------------

    def add_calcinfo(
        self,
        command: str,
        site_id: str,
        *,
        parameters: str = "",
        parameter_files: Mapping[str, Optional[Path]] = {},
        result_names: Sequence[str] = (),
        mime: Callable[[Path], tuple[str, str]] = mime_words,
    ) -> str:
        """POST /add-calcinfo: register a calculation; return its accept_id.

        Each parameter file is streamed from disk (exact Content-Length); a
        None path is sent as `["", "", ""]` (a file the workflow side could not
        find). The two stdout/stderr result names are always added.
        Refusals (HTTP 202 with code 400/401) raise ApiRefusal.
        """
        files: dict[str, Any] = {}
        for name, path in parameter_files.items():
            if path is None:
                files[name] = ["", "", ""]
            else:
                words = mime(path)
                files[name] = [Base64File(path), words[0], words[1]]
        wanted = list(dict.fromkeys([*result_names, *STD_NAMES]))
        calc_info = {
            "command": command,
            "remote-site": site_id,
            "parameters": parameters,
            "parameter_files": files,
            "result_files": {n: {"content": "", "mimetype1": "", "mimetype2": ""} for n in wanted},
        }
        reply = self._call("POST", "add-calcinfo", document={"calc-info": calc_info})
        accept_id = reply.entry.get("accept_id")
        if reply.ok and reply.http_status == 200 and isinstance(accept_id, str) and accept_id:
            return accept_id
        raise ApiRefusal(
            "add-calcinfo", reply.message, http_status=reply.http_status, code=reply.code
        )

    def allow_wait_calc(self, accept_id: str) -> Reply:
        """POST /allow-wait-calc: let the remote side pick the calculation up."""
        return self._step("allow-wait-calc", {"accept_id": accept_id})

    def _status_word(self, endpoint: str, accept_id: str) -> str:
        reply = self._call("GET", endpoint, params={"accept_id": accept_id})
        if reply.ok and reply.message.startswith("status:"):
            return reply.message[len("status:") :]
        if reply.http_status == 200 and reply.code == 400:
            raise UnknownCalculation(endpoint, reply.message, code=reply.code)
        raise ApiRefusal(endpoint, reply.message, http_status=reply.http_status, code=reply.code)

    def calc_status(self, accept_id: str) -> str:
        """GET /calc-status: `none`, `completed` or `abnormal`; UnknownCalculation if unknown."""
        return self._status_word("calc-status", accept_id)

    def calc_progress(self, accept_id: str) -> str:
        """GET /calc-progress: one of PROGRESS_STEPS; UnknownCalculation if unknown."""
        return self._status_word("calc-progress", accept_id)

    def get_calc_result(
        self,
        accept_id: str,
        dest_dir: Path,
        *,
        legacy_request: bool = False,
        wanted: Optional[Collection[str]] = None,
    ) -> CalcResult:
        """GET /get-calc-result: decode every result file into `dest_dir` (works once).

        The reply is parsed incrementally; each file goes through safe_join and
        an atomic write. Unsafe names (`../x`, `/etc/x`) are never written:
        they are listed in `CalcResult.refused`. With `wanted`, a file of any other
        name is read and dropped, listed in `CalcResult.unrequested` (a hostile site
        must not plant `module.sh` next to the results). An entry with mimetype1
        "Error" is listed in `CalcResult.missing` with its message and no file.
        `legacy_request=True` sends the GET with a JSON body and `Accept: */*`
        like the legacy workflow client (quirk 10).
        """
        receivers: dict[str, ReceivedResult] = {}

        def divert(path: JsonPath) -> Optional[StringSink]:
            if (
                len(path) == 6
                and path[:4] == ("errors", 0, "result-info", "result_files")
                and path[5] == "content"
            ):
                return _result_sink(str(path[4]), dest_dir, receivers, wanted)
            return None

        headers = {"Accept": "*/*"} if legacy_request else None
        body = StreamedJson({"accept_id": accept_id}) if legacy_request else None
        status, document = self._stream_document(
            "get-calc-result", {"accept_id": accept_id}, divert, headers=headers, body=body
        )
        reply = _reply_of("get-calc-result", status, document)
        info = reply.entry.get("result-info")
        files = info.get("result_files") if isinstance(info, dict) else None
        if not (reply.ok and status == 200 and isinstance(files, dict)):
            raise ApiRefusal("get-calc-result", reply.message, http_status=status, code=reply.code)
        return CalcResult(accept_id, tuple(_received(files, receivers)))

    def cancel_wait_calc(self, accept_id: str, *, force: bool = False) -> Reply:
        """POST /cancel-wait-calc, with `"delete": "force"` when `force`.

        An unknown accept_id (HTTP 400 whose body is only the id; quirk 8)
        raises UnknownCalculation; other refusals raise ApiRefusal.
        """
        document: dict[str, str] = {"accept_id": accept_id}
        if force:
            document["delete"] = "force"
        reply = self._call("POST", "cancel-wait-calc", document=document)
        if isinstance(reply.body, str):
            raise UnknownCalculation(
                "cancel-wait-calc",
                f"the server has no calculation {reply.body}",
                http_status=reply.http_status,
            )
        return self._require_ok(reply)

    def get_calcinfo(self) -> Any:
        """GET /get-calcinfo: the server's whole table (a debug endpoint)."""
        return self._call("GET", "get-calcinfo").body


class _CountedBody:
    """A request body that reports each chunk to a progress bar as requests sends it."""

    def __init__(self, body: StreamedJson, advance: Callable[[int], None]) -> None:
        self._body = body
        self._advance = advance

    def __len__(self) -> int:
        return len(self._body)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._advance(len(chunk))
            yield chunk


def _counted(chunks: Iterator[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in chunks:
        advance(len(chunk))
        yield chunk


def _show(total: int) -> Optional[bool]:
    """Progress bars only for bodies big enough to watch (and only on a terminal)."""
    return None if total >= PROGRESS_MIN_BYTES else False


def _content_length(value: Optional[str]) -> int:
    """The announced length for the progress bar; 0 (unknown) for anything odd."""
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 0


def _reply_of(endpoint: str, status: int, document: Any) -> Reply:
    entry: Mapping[str, Any] = {}
    if isinstance(document, dict):
        errors = document.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            entry = errors[0]
    message = entry.get("message", "")
    return Reply(
        endpoint=endpoint,
        http_status=status,
        code=normalize_code(entry.get("code")),
        message=message if isinstance(message, str) else json.dumps(message),
        entry=entry,
        body=document if _is_json_type(document) else None,
    )


def _calc_info(
    accept_id: str, info: Mapping[str, Any], receivers: dict[str, ParameterFile]
) -> CalcInfo:
    def text(key: str) -> str:
        value = info.get(key, "")
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    command = info.get("command")
    if not isinstance(command, str) or not command:
        raise InputError(f"calc-params: calc-info of {accept_id} has no command")
    files: list[ParameterFile] = []
    raw_files = info.get("parameter_files") or {}
    if not isinstance(raw_files, dict):
        raise InputError(f"calc-params: parameter_files of {accept_id} is not a mapping")
    for name, entry in raw_files.items():
        files.append(_parameter_file(name, entry, receivers.get(name)))
    raw_results = info.get("result_files") or {}
    if not isinstance(raw_results, dict):
        raise InputError(f"calc-params: result_files of {accept_id} is not a mapping")
    return CalcInfo(
        accept_id=accept_id,
        command=command,
        remote_site=text("remote-site"),
        parameters=text("parameters"),
        parameter_files=tuple(files),
        result_names=tuple(str(n) for n in raw_results),
    )


def _parameter_file(name: str, entry: Any, received: Optional[ParameterFile]) -> ParameterFile:
    words = [w if isinstance(w, str) else "" for w in entry[1:3]] if isinstance(entry, list) else []
    mime1, mime2 = [*words, "", ""][:2]
    if received is None:
        return ParameterFile(name, None, 0, mime1, mime2, refused=f"malformed entry for {name!r}")
    if received.refused or received.path is None:
        return dataclasses.replace(received, mimetype1=mime1, mimetype2=mime2)
    size = received.path.stat().st_size
    if size == 0 and mime1 == "" and mime2 == "":
        # ["", "", ""]: the workflow side could not find this file; do not pretend it exists.
        received.path.unlink()
        return ParameterFile(name, None, 0, "", "", missing=True)
    return dataclasses.replace(received, size=size, mimetype1=mime1, mimetype2=mime2)


def _result_sink(
    name: str,
    dest_dir: Path,
    receivers: dict[str, ReceivedResult],
    wanted: Optional[Collection[str]],
) -> StringSink:
    def note(path: Optional[Path], refused: Optional[str]) -> None:
        receivers[name] = ReceivedResult(name, path, 0, "", "", refused=refused)

    if wanted is not None and name not in wanted and _is_safe_name(dest_dir, name):
        receivers[name] = ReceivedResult(name, None, 0, "", "", UNREQUESTED, unrequested=True)
        return DiscardSink()
    return _file_sink(name, dest_dir, "result file", 0o644, note)


def _is_safe_name(base: Path, name: str) -> bool:
    """An unsafe name is reported as such (refused), whether requested or not."""
    try:
        safe_join(base, name)
    except UnsafePathError:
        return False
    return True


def _file_sink(
    name: str,
    base: Path,
    what: str,
    mode: int,
    note: Callable[[Optional[Path], Optional[str]], None],
) -> StringSink:
    """A sink decoding one base64 string into `base/name`; an unsafe name or a file that cannot
    be created gets a sink that discards the data. `note(path, refusal)` records which."""
    try:
        target = safe_join(base, name)
        sink: StringSink = Base64FileSink(target, what=f"{what} {name!r}", mode=mode)
    except UnsafePathError as exc:
        note(None, exc.message)
        return DiscardSink()
    except OSError as exc:
        note(None, f"cannot create {what} {name!r}: {exc.strerror}")
        return DiscardSink()
    note(target, None)
    return sink


def _received(
    files: Mapping[str, Any], receivers: dict[str, ReceivedResult]
) -> Iterator[ReceivedResult]:
    for name, entry in files.items():
        entry = entry if isinstance(entry, dict) else {}
        mime1 = _word(entry.get("mimetype1"))
        mime2 = _word(entry.get("mimetype2"))
        received = receivers.get(name)
        if received is None:
            yield ReceivedResult(name, None, 0, mime1, mime2, refused="malformed entry")
            continue
        if received.refused or received.path is None:
            yield dataclasses.replace(received, mimetype1=mime1, mimetype2=mime2)
            continue
        size = received.path.stat().st_size
        if mime1 == "Error" and size == 0:
            received.path.unlink()
            yield ReceivedResult(name, None, 0, mime1, mime2, error=mime2 or "missing")
            continue
        yield dataclasses.replace(received, size=size, mimetype1=mime1, mimetype2=mime2)


def _word(value: Any) -> str:
    return value if isinstance(value, str) else ""
