"""`mint-poll check`: everything an admin needs to know before the first calculation arrives."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from mint_common.checks import FAIL, WARN, CheckResult, CheckRunner
from mint_common.errors import AuthError, MintError
from mint_common.retry import RetryPolicy
from mint_poll.api import PollAnswer, TlsError, normalize_base_url
from mint_poll.config import PollConfig, build_api

CERT_WARN_DAYS = 30
NET_TIMEOUT = 10.0


class PollChecks:
    """Runs the checks in order; later checks are skipped when what they need failed."""

    def __init__(self, load: Callable[[], PollConfig]) -> None:
        self._load = load
        self.config: Optional[PollConfig] = None
        self.runner = CheckRunner()
        self._answer: Optional[PollAnswer] = None
        self._api_error: Optional[MintError] = None

    def run(self) -> CheckRunner:
        run = self.runner.run
        run("config", self._config)
        run("dns", self._dns, requires="config")
        run("tcp", self._tcp, requires="dns")
        run("tls", self._tls, requires="tcp")
        run("api", self._api, requires="tls")
        run("token", self._token, requires="api")
        run("site_id", self._site, requires="token")
        run("calc_base", self._calc_base, requires="config")
        run("state_dir", self._state_dir, requires="config")
        run("commands", self._commands, requires="config")
        return self.runner

    def _cfg(self) -> PollConfig:
        assert self.config is not None
        return self.config

    def _endpoint(self) -> tuple[str, int, str]:
        parts = urlsplit(normalize_base_url(self._cfg().url))
        assert parts.hostname is not None and parts.port is not None
        return parts.hostname, parts.port, parts.scheme

    def _config(self) -> str:
        self.config = self._load()
        return f"url {normalize_base_url(self.config.url)}, site_id {self.config.site_id}"

    def _dns(self) -> str:
        host, port, _ = self._endpoint()
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise MintError(f"cannot resolve {host}: {exc.strerror}") from exc
        addresses = sorted({str(info[4][0]) for info in infos})
        return f"{host} -> {', '.join(addresses)}"

    def _tcp(self) -> str:
        host, port, _ = self._endpoint()
        try:
            with socket.create_connection((host, port), timeout=NET_TIMEOUT):
                return f"connected to {host}:{port}"
        except OSError as exc:
            raise MintError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc

    def _tls(self) -> Any:
        host, port, scheme = self._endpoint()
        cfg = self._cfg()
        if scheme != "https":
            return (WARN, "plain HTTP: the token and the data travel unencrypted")
        if not cfg.verify:
            return (WARN, "certificate verification is OFF (verify: false)")
        bundle = str(cfg.ca_bundle) if cfg.ca_bundle else _default_bundle()
        context = ssl.create_default_context(cafile=bundle)
        try:
            cert = _peer_certificate(context, host, port)
        except ssl.SSLCertVerificationError as exc:
            raise MintError(
                f"certificate of {host} not trusted with CA bundle {bundle}: {exc.verify_message}"
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            raise MintError(f"TLS handshake with {host}:{port} failed: {exc}") from exc
        not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
        expires = datetime.fromtimestamp(not_after, timezone.utc)
        days = (expires - datetime.now(timezone.utc)).days
        detail = (
            f"chain verified with {bundle}; subject {_name(cert.get('subject'))}, issuer"
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
        _probe_writable(base, "calc_base")
        free_mb = shutil.disk_usage(base).free // (1024 * 1024)
        detail = f"{base} is writable; {free_mb} MiB free"
        if free_mb < self._cfg().min_free_mb:
            return CheckResult(
                "calc_base", FAIL, detail + f" (below min_free_mb {self._cfg().min_free_mb})"
            )
        return detail

    def _state_dir(self) -> str:
        root = self._cfg().state_dir
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _probe_writable(root, "state_dir")
        return f"{root} is writable"

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


def _peer_certificate(context: ssl.SSLContext, host: str, port: int) -> dict[str, Any]:
    raw = socket.create_connection((host, port), timeout=NET_TIMEOUT)
    with context.wrap_socket(raw, server_hostname=host) as tls:
        return dict(tls.getpeercert() or {})


def _probe_writable(directory: Path, key: str) -> None:
    if not directory.is_dir():
        raise MintError(f"{key} {directory} does not exist or is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".mint-poll-check-"):
            pass
    except OSError as exc:
        raise MintError(f"{key} {directory} is not writable: {exc.strerror}") from exc


def _default_bundle() -> str:
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    return str(DEFAULT_CA_BUNDLE_PATH)


def _name(parts: Any) -> str:
    if not parts:
        return "?"
    return ", ".join(f"{k}={v}" for rdn in parts for (k, v) in rdn)
