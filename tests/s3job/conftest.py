"""Fixtures for mint-s3job: moto servers on loopback, a bucket per test, fake Slurm commands."""

from __future__ import annotations

import http.client
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional, TypeVar

import boto3
import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from mint_common.retry import RetryPolicy
from mint_s3job.config import S3JobConfig
from mint_s3job.store import S3ObjectStore

from .hostile import HostileBucket

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto S3 over HTTP on 127.0.0.1 (threaded, like the benchmarks use)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class _OneAtATimeHandler(MotoRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, so clients take turns


@pytest.fixture(scope="session")
def serial_moto_endpoint() -> Iterator[str]:
    """moto served one request at a time.

    moto 5.2.5 checks `If-None-Match: *` and then stores the object in two steps
    without a lock, so on its threaded server two simultaneous conditional puts
    could in principle both succeed (not seen in 100 trials of 10 simultaneous
    puts, but not guaranteed); S3 applies them atomically. Serving one request at
    a time gives S3's atomicity while the dispatchers still interleave request by
    request, so the exactly-once test tests our protocol, not moto's locking.
    """
    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=_OneAtATimeHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def make_bucket(endpoint: str) -> str:
    name = f"jobs-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    return make_bucket(moto_endpoint)


@pytest.fixture
def config(moto_endpoint: str, bucket: str, tmp_path: Path) -> S3JobConfig:
    return S3JobConfig(
        bucket=bucket,
        endpoint_url=moto_endpoint,
        region="us-east-1",
        retry=RetryPolicy(max_attempts=3),
        poll_interval=0.05,
        workdir=tmp_path / "headnode" / "job-aws",
        rescan_interval=3600.0,
    )


@pytest.fixture
def store(config: S3JobConfig) -> S3ObjectStore:
    assert config.bucket
    return S3ObjectStore(config, config.bucket)


@pytest.fixture
def hostile_bucket(store: S3ObjectStore) -> HostileBucket:
    return HostileBucket(store)


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@dataclass
class FakeSlurm:
    log: Path

    def calls(self, command: str = "sbatch") -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [e for e in entries if e["command"] == command]


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    log = tmp_path / "slurm-calls.jsonl"
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    return FakeSlurm(log)


@pytest.fixture
def cli_env(config: S3JobConfig, fake_slurm: FakeSlurm) -> dict[str, str]:
    """Environment for running the console script against the moto server."""
    env = dict(os.environ)
    env.update(
        MINT_S3JOB_BUCKET=str(config.bucket),
        MINT_S3JOB_ENDPOINT_URL=str(config.endpoint_url),
        MINT_S3JOB_REGION="us-east-1",
        MINT_S3JOB_POLL_INTERVAL="0.1",
        MINT_S3JOB_RETRY="retry:2,0",
    )
    return env


Reply = tuple[int, list[tuple[str, str]], bytes]
NO_ANSWER: Reply = (0, [], b"")


class MotoProxy:
    """A loopback HTTP proxy in front of moto. Subclasses may answer a request themselves
    (`intercept`), or forward it and then drop moto's answer (`drop_answer`); `NO_ANSWER`
    closes the exchange without a reply."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                reply = proxy.intercept(self.command, path)
                if reply is None:
                    reply = proxy.forward(self.command, self.path, self.headers, body)
                    if proxy.drop_answer(self.command, path):
                        reply = NO_ANSWER
                status, headers, data = reply
                if reply is NO_ANSWER:
                    return
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def intercept(self, method: str, path: str) -> Optional[Reply]:
        return None

    def drop_answer(self, method: str, path: str) -> bool:
        return False

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> Reply:
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() != "connection"}
            connection.request(method, path, body=body, headers=sent)
            reply = connection.getresponse()
            return reply.status, reply.getheaders(), reply.read()
        finally:
            connection.close()


MotoProxyT = TypeVar("MotoProxyT", bound=MotoProxy)


@contextmanager
def serving(proxy: MotoProxyT) -> Iterator[MotoProxyT]:
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.thread.join()


class FlakyProxy(MotoProxy):
    """Answers the first `failures` requests with an S3 error (e.g. 503 SlowDown, 500
    InternalError), then forwards the rest to moto."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.failures = 0
        self.status = 503
        self.code = "SlowDown"
        self.seen = 0
        self.failed = 0
        self.lock = threading.Lock()

    def intercept(self, method: str, path: str) -> Optional[Reply]:
        with self.lock:
            self.seen += 1
            if self.failed >= self.failures:
                return None
            self.failed += 1
        payload = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.code}</Code>"
            f"<Message>injected by the test proxy</Message></Error>"
        ).encode()
        return self.status, [("Content-Type", "application/xml")], payload

    def fail_next(self, count: int, status: int, code: str) -> None:
        with self.lock:
            self.failures, self.failed, self.status, self.code = count, 0, status, code


@pytest.fixture
def flaky_proxy(moto_endpoint: str) -> Iterator[FlakyProxy]:
    with serving(FlakyProxy(moto_endpoint)) as proxy:
        yield proxy


@pytest.fixture
def proxied_store(config: S3JobConfig, flaky_proxy: FlakyProxy) -> S3ObjectStore:
    assert config.bucket
    return S3ObjectStore(replace(config, endpoint_url=flaky_proxy.endpoint), config.bucket)
