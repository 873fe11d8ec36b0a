"""network_error_line: the chains requests really raises on loopback, reduced to one line."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from mint_common.neterrors import network_error_line


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _failure(url: str, **kwargs: Any) -> BaseException:
    with pytest.raises(requests.exceptions.RequestException) as caught:
        requests.get(url, timeout=kwargs.pop("timeout", 5), **kwargs)
    return caught.value


class _TunnelRefused(socketserver.StreamRequestHandler):
    """A proxy that refuses every CONNECT, as a site proxy does for a host it blocks."""

    def handle(self) -> None:
        while self.rfile.readline().strip():
            pass
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def refusing_proxy() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TunnelRefused)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_connection_refused_is_one_line_with_the_attempts() -> None:
    port = _free_port()
    exc = _failure(f"http://127.0.0.1:{port}/x")
    assert len(str(exc)) > 150
    line = network_error_line(exc, 2)
    assert line == f"cannot connect to 127.0.0.1:{port}: connection refused (after 2 attempts)"


def test_a_single_attempt_is_not_counted() -> None:
    port = _free_port()
    line = network_error_line(_failure(f"http://127.0.0.1:{port}/x"), 1)
    assert line == f"cannot connect to 127.0.0.1:{port}: connection refused"


def test_name_resolution_failure_names_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(*_args: Any, **_kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    line = network_error_line(_failure("https://mint.example.invalid:50443/x"), 3)
    assert (
        line == "cannot resolve mint.example.invalid: name or service not known (after 3 attempts)"
    )


def test_read_timeout_says_no_reply() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        exc = _failure(f"http://127.0.0.1:{port}/x", timeout=(5, 0.2))
    assert network_error_line(exc) == f"no reply from 127.0.0.1:{port} within the read timeout"
    assert network_error_line(exc, request="GET /x") == (
        f"no reply to GET /x from 127.0.0.1:{port} within the read timeout"
    )


def test_tls_failure_says_handshake_and_why() -> None:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = httpd.server_address[1]
        exc = _failure(f"https://127.0.0.1:{port}/x")
    finally:
        httpd.shutdown()
        httpd.server_close()
    line = network_error_line(exc)
    assert line.startswith(f"TLS handshake with 127.0.0.1:{port} failed: ")
    assert "wrong version number" in line and "\n" not in line


def test_unreachable_proxy_names_the_proxy() -> None:
    proxy = _free_port()
    exc = _failure("http://127.0.0.1:9/x", proxies={"http": f"http://127.0.0.1:{proxy}"})
    assert network_error_line(exc, 2) == (
        f"cannot connect to proxy 127.0.0.1:{proxy}: connection refused (after 2 attempts)"
    )


def test_proxy_refusing_the_tunnel_names_the_target_and_the_answer(refusing_proxy: int) -> None:
    exc = _failure(
        "https://mint.example.jp:50443/x",
        proxies={"https": f"http://127.0.0.1:{refusing_proxy}"},
    )
    line = network_error_line(exc)
    assert line == "the proxy refused the connection to mint.example.jp:50443: 403 Forbidden"


def test_an_unknown_error_falls_back_to_its_text_cut_short() -> None:
    line = network_error_line(ValueError("x" * 500), target="h:1")
    assert line.startswith("cannot talk to h:1: ") and len(line) < 250


class _HangUp(socketserver.StreamRequestHandler):
    """A server that reads the request and closes the connection without a reply."""

    def handle(self) -> None:
        while self.rfile.readline().strip():
            pass


def test_a_connection_closed_without_a_reply_is_said_to_break() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HangUp)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = int(server.server_address[1])
    try:
        exc = _failure(f"http://127.0.0.1:{port}/x")
    finally:
        server.shutdown()
        server.server_close()
    # the chain names no endpoint here: the caller's target is used
    assert network_error_line(exc, target=f"127.0.0.1:{port}") == (
        f"connection to 127.0.0.1:{port} broke: Remote end closed connection without response"
    )


def test_a_connect_timeout_without_a_socket_error_says_timed_out() -> None:
    exc = requests.exceptions.ConnectTimeout("pool timed out")
    assert network_error_line(exc, target="h:1") == "cannot connect to h:1: timed out"
    plain_timeout = requests.exceptions.ConnectionError("x")
    plain_timeout.__cause__ = TimeoutError(110, "Connection timed out")
    assert network_error_line(plain_timeout, target="h:1") == "cannot connect to h:1: timed out"
