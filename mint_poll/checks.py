"""`mint-poll check`: everything an admin needs to know before the first calculation arrives."""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import socket
import ssl
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

from mint_common.checks import FAIL, PASS, SKIP, WARN, CheckResult, CheckRunner
from mint_common.errors import AuthError, MintError
from mint_common.heartbeat import Heartbeat, heartbeat_check
from mint_common.neterrors import network_error_line
from mint_common.retry import RetryPolicy
from mint_poll.api import PollAnswer, TlsError, normalize_base_url
from mint_poll.batch import (
    BatchRunner,
    BatchSettings,
    check_commands,
    check_queue,
    check_retention,
    make_scheduler,
    probe_shared_dir,
)
from mint_poll.config import PollConfig, build_api, default_state_dir, old_default_state_dir
from mint_poll.state import STOPPED, CalcStore

CERT_WARN_DAYS = 30
#: How long `check` waits for its probe job to run (longer: WARN, nothing proved).
PROBE_TIMEOUT = 120.0
#: The rows of a scheduler: its commands, the partition, MinJobAge, the shared-dir probe.
_BATCH_ROWS = ("scheduler", "partition", "job_retention", "shared_dir")
NET_TIMEOUT = 10.0
#: Where requests finds a CA bundle when verify is on and no ca_bundle is set.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class Proxy(NamedTuple):
    """The proxy requests will use for the server's URL, and where that was set."""

    host: str
    port: int
    variable: str
    authorization: Optional[str]

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class PollChecks:
    """Runs the checks in order; later checks are skipped when what they need failed."""

    def __init__(self, load: Callable[[], PollConfig]) -> None:
        self._load = load
        self.config: Optional[PollConfig] = None
        self.runner = CheckRunner()
        self._answer: Optional[PollAnswer] = None
        self._api_error: Optional[MintError] = None
        self._proxy: Optional[Proxy] = None

    def run(self) -> CheckRunner:
        run = self.runner.run
        run("config", self._config)
        if self._proxy is not None:
            # Through a proxy, the server's name is resolved and reached by the proxy only.
            run("proxy", self._through_proxy, requires="config")
            reached = "proxy"
        else:
            run("dns", self._dns, requires="config")
            run("tcp", self._tcp, requires="dns")
            reached = "tcp"
        run("tls", self._tls, requires=reached)
        run("api", self._api, requires="tls")
        run("token", self._token, requires="api")
        run("site_id", self._site, requires="token")
        run("calc_base", self._calc_base, requires="config")
        run("state_dir", self._state_dir, requires="config")
        run("heartbeat", self._heartbeat, requires="state_dir")
        run("commands", self._commands, requires="config")
        for kind, settings in self._schedulers():
            self._batch_checks(kind, settings)
        return self.runner

    def _schedulers(self) -> list[tuple[str, BatchSettings]]:
        """The schedulers calculations go to (the runner, commands' own runners)."""
        if self.config is None:
            return []
        found = {s.runner: s for s in map(self.config.batch_for, sorted(self.config.commands)) if s}
        if self.config.batch.batch:
            found.setdefault(self.config.batch.runner, self.config.batch)
        return sorted(found.items())

    def _batch_checks(self, kind: str, settings: BatchSettings) -> None:
        """The scheduler's commands answer, the partition / queue exists, ended jobs stay
        visible long enough, and a probe job proves calc_base is shared with the nodes."""
        several = len(self._schedulers()) > 1
        names = [f"{row} ({kind})" if several else row for row in _BATCH_ROWS]
        runner = BatchRunner(make_scheduler(settings), settings)
        scheduler = runner.scheduler
        run = self.runner.run
        run(names[0], lambda: check_commands(scheduler), requires="config")
        run(names[1], lambda: check_queue(scheduler, settings), requires=names[0])
        run(names[2], lambda: check_retention(scheduler, settings), requires=names[0])
        run(names[3], lambda: self._probe(runner), requires=names[1])

    def _probe(self, runner: BatchRunner) -> tuple[str, str]:
        base = self._cfg().calc_base
        if not base.is_dir():
            return (SKIP, f"calc_base {base} does not exist yet: no probe job was sent")
        return probe_shared_dir(runner, base, timeout=PROBE_TIMEOUT)

    def _cfg(self) -> PollConfig:
        assert self.config is not None
        return self.config

    def _endpoint(self) -> tuple[str, int, str]:
        parts = urlsplit(normalize_base_url(self._cfg().url))
        assert parts.hostname is not None and parts.port is not None
        return parts.hostname, parts.port, parts.scheme

    def _config(self) -> str:
        self.config = self._load()
        url = normalize_base_url(self.config.url)
        self._proxy = proxy_for(url)
        via = f"; through proxy {self._proxy.where} ({self._proxy.variable})" if self._proxy else ""
        return f"url {url}, site_id {self.config.site_id}{via}"

    def _dns(self) -> str:
        host, port, _ = self._endpoint()
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise MintError(network_error_line(exc, target=f"{host}:{port}")) from exc
        addresses = sorted({str(info[4][0]) for info in infos})
        return f"{host} -> {', '.join(addresses)}"

    def _tcp(self) -> str:
        host, port, _ = self._endpoint()
        with self._connect():
            return f"connected to {host}:{port}"

    def _through_proxy(self) -> str:
        host, port, scheme = self._endpoint()
        proxy = self._proxy
        assert proxy is not None
        with self._connect():
            pass
        if scheme != "https":
            return f"proxy {proxy.where} ({proxy.variable}) is reachable; it forwards to {host}"
        return f"reached {host}:{port} through proxy {proxy.where} ({proxy.variable})"

    def _connect(self) -> socket.socket:
        """A TCP connection to the server: direct, or a tunnel through the proxy (CONNECT)."""
        host, port, scheme = self._endpoint()
        proxy = self._proxy
        if proxy is None:
            try:
                return socket.create_connection((host, port), timeout=NET_TIMEOUT)
            except OSError as exc:
                raise MintError(network_error_line(exc, target=f"{host}:{port}")) from exc
        try:
            raw = socket.create_connection((proxy.host, proxy.port), timeout=NET_TIMEOUT)
        except OSError as exc:
            detail = network_error_line(exc, target=proxy.where)
            raise MintError(detail.replace("cannot connect to", "cannot connect to proxy")) from exc
        if scheme == "https":
            _tunnel(raw, proxy, host, port)
        return raw

    def _tls(self) -> Any:
        host, port, scheme = self._endpoint()
        cfg = self._cfg()
        if scheme != "https":
            return (WARN, "plain HTTP: the token and the data travel unencrypted")
        if not cfg.verify:
            return (WARN, "certificate verification is OFF (verify: false)")
        bundle, source = ca_bundle_in_use(cfg)
        shown = f"{bundle} ({source})"
        if os.path.isdir(bundle):
            context = ssl.create_default_context(capath=bundle)
        else:
            context = ssl.create_default_context(cafile=bundle)
        try:
            with context.wrap_socket(self._connect(), server_hostname=host) as tls:
                cert = dict(tls.getpeercert() or {})
        except ssl.SSLCertVerificationError as exc:
            raise MintError(
                f"certificate of {host} not trusted with CA bundle {shown}: {exc.verify_message}"
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            raise MintError(network_error_line(exc, target=f"{host}:{port}")) from exc
        not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
        expires = datetime.fromtimestamp(not_after, timezone.utc)
        days = (expires - datetime.now(timezone.utc)).days
        detail = (
            f"chain verified with {shown}; subject {_name(cert.get('subject'))}, issuer"
            f" {_name(cert.get('issuer'))}; expires {expires:%Y-%m-%d} ({days} days)"
        )
        return (WARN, detail) if days < CERT_WARN_DAYS else detail

    def _api(self) -> Any:
        # One attempt only: an admin waiting at a terminal wants the answer, not five retries.
        cfg = dataclasses.replace(self._cfg(), retry=RetryPolicy(max_attempts=1))
        with build_api(cfg) as api:
            try:
                self._answer = api.calc_request(cfg.site_id)
            except TlsError:
                raise
            except AuthError as exc:
                self._api_error = exc
                return "the API answered (and refused the token)"
        return f"the API answered: code {self._answer.code} {self._answer.message}"

    def _token(self) -> str:
        if self._api_error is not None:
            raise self._api_error
        return "accepted"

    def _site(self) -> str:
        assert self._answer is not None
        if self._answer.unknown_site:
            raise MintError(f"the server does not know site_id {self._cfg().site_id!r}")
        if self._answer.accept_id:
            return f"known; calculation {self._answer.accept_id} is waiting"
        return "known"

    def _calc_base(self) -> Any:
        base = self._cfg().calc_base
        status, detail = _directory_row(base, "calc_base")
        free_mb = shutil.disk_usage(_existing_ancestor(base)).free // (1024 * 1024)
        detail += f"; {free_mb} MiB free"
        if free_mb < self._cfg().min_free_mb:
            return CheckResult(
                "calc_base", FAIL, detail + f" (below min_free_mb {self._cfg().min_free_mb})"
            )
        return (status, detail)

    def _state_dir(self) -> Any:
        root = self._cfg().state_dir
        old = old_default_state_dir()
        if root == default_state_dir() and not root.exists() and old.is_dir():
            return (
                WARN,
                f"{old} (state of an older release) will be moved to {root} on first start",
            )
        return _directory_row(root, "state_dir")

    def _heartbeat(self) -> CheckResult:
        cfg = self._cfg()
        return heartbeat_row(CalcStore(cfg.state_dir), cfg.poll_interval)

    def _commands(self) -> Any:
        cfg = self._cfg()
        problems = cfg.command_problems()
        if problems:
            return CheckResult("commands", FAIL, "; ".join(problems))
        if cfg.allow_any_command:
            return (WARN, "allow_any_command is on: any command string from the server runs")
        if not cfg.commands:
            return CheckResult("commands", FAIL, "no commands configured: every run is refused")
        return f"{len(cfg.commands)} command(s) found and executable: " + ", ".join(
            sorted(cfg.commands)
        )


def heartbeat_row(store: CalcStore, interval: float, now: Optional[float] = None) -> CheckResult:
    """The agent's heartbeat judged by the one rule (`mint_common.heartbeat.stale_after`):
    WARN when the agent never ran, stopped, or stalled."""
    document = store.heartbeat()
    where = str(store.heartbeat_file)
    if document is not None and document.get("state") == STOPPED:
        when = document.get("beat_at") or document.get("time")
        return CheckResult("heartbeat", WARN, f"{where}: the agent stopped at {when}")
    beat = Heartbeat.from_json(document)
    return heartbeat_check("heartbeat", beat, interval=interval, where=where, now=now)


def proxy_for(url: str) -> Optional[Proxy]:
    """The proxy requests would use for `url` (HTTPS_PROXY, https_proxy, ALL_PROXY, ...,
    minus NO_PROXY), by requests' own rules; None when it connects directly."""
    from requests.utils import get_environ_proxies

    scheme = urlsplit(url).scheme
    proxies = get_environ_proxies(url)
    value = proxies.get(scheme) or proxies.get("all")
    if not value:
        return None
    parts = urlsplit(value if "://" in value else f"http://{value}")
    if not parts.hostname:
        return None
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(parts.hostname, parts.port or 8080, _proxy_variable(scheme), authorization)


def _proxy_variable(scheme: str) -> str:
    for name in (f"{scheme}_proxy", "all_proxy"):
        for variable in (name, name.upper()):
            if os.environ.get(variable):
                return variable
    return "the system proxy settings"


def _tunnel(raw: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    """Ask the proxy for a tunnel to host:port, as requests does for HTTPS (CONNECT)."""
    request = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if proxy.authorization:
        request += f"Proxy-Authorization: {proxy.authorization}\r\n"
    try:
        raw.sendall((request + "\r\n").encode("ascii"))
        reader = raw.makefile("rb")
        status_line = reader.readline(65536).decode("latin-1").strip()
        while reader.readline(65536).strip():
            pass
        reader.close()
    except OSError as exc:
        raw.close()
        raise MintError(f"proxy {proxy.where} did not answer the tunnel request: {exc}") from exc
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        raw.close()
        answer = " ".join(parts[1:]) or "no answer"
        raise MintError(
            f"the proxy {proxy.where} refused the connection to {host}:{port}: {answer}"
        )


def ca_bundle_in_use(config: PollConfig) -> tuple[str, str]:
    """The CA bundle requests verifies the server with, and why that one: ca_bundle from the
    config, else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's (not the system store)."""
    if config.ca_bundle is not None:
        return str(config.ca_bundle), "ca_bundle"
    for variable in CA_BUNDLE_VARIABLES:
        if os.environ.get(variable):
            return os.environ[variable], variable
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    return str(DEFAULT_CA_BUNDLE_PATH), "certifi, the default of requests"


def _existing_ancestor(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _directory_row(directory: Path, key: str) -> tuple[str, str]:
    """One rule for a directory the agent uses: one that does not exist yet is a WARN "will be
    created" (as `once` and `run` create it), a FAIL only if it cannot be; never made here."""
    if directory.is_dir():
        _probe_writable(directory, key)
        return (PASS, f"{directory} is writable")
    if directory.exists():
        raise MintError(f"{key} {directory} is not a directory")
    parent = _existing_ancestor(directory)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MintError(
            f"{key} {directory} does not exist and cannot be created: {parent} is not a"
            " writable directory"
        )
    return (WARN, f"{directory} does not exist yet; will be created on first start")


def _probe_writable(directory: Path, key: str) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".mint-poll-check-"):
            pass
    except OSError as exc:
        raise MintError(f"{key} {directory} is not writable: {exc.strerror}") from exc


def _name(parts: Any) -> str:
    if not parts:
        return "?"
    return ", ".join(f"{k}={v}" for rdn in parts for (k, v) in rdn)
