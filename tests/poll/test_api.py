"""DistcompApi against the rehearsal server over real HTTP(S) on loopback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests

from mint_common.errors import AuthError, UnavailableError
from mint_common.retry import RetryPolicy
from mint_poll.api import (
    STDERR_NAME,
    STDOUT_NAME,
    ApiRefusal,
    DistcompApi,
    OutgoingResult,
    UnknownCalculation,
    normalize_base_url,
    normalize_code,
)
from mint_poll.server import HOSTILE_RESULT_NAMES, Broker, DistcompServer, free_port
from tests.poll.certs import make_tls_files
from tests.poll.conftest import SITE, TOKEN, register

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, jitter=False)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://nims.mintsys.jp", "https://nims.mintsys.jp:50443/mi-distcomp-api"),
        ("https://nims.mintsys.jp/", "https://nims.mintsys.jp:50443/mi-distcomp-api"),
        ("https://h:8443", "https://h:8443/mi-distcomp-api"),
        ("http://h:1/mi-distcomp-api", "http://h:1/mi-distcomp-api"),
        ("https://h/prefix", "https://h:50443/prefix/mi-distcomp-api"),
    ],
    ids=["default-port", "trailing-slash", "own-port", "full", "prefix"],
)
def test_base_url_gets_the_default_port_and_api_path(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (200, 200),
        ("200", 200),
        ("400", 400),
        ("0300", 300),
        (402, 402),
        (None, None),
        ("x", None),
        (True, None),
    ],
    ids=["int", "str", "str400", "zero-padded", "int402", "none", "text", "bool"],
)
def test_codes_are_normalised(raw: object, code: object) -> None:
    assert normalize_code(raw) == code


def full_sequence(api: DistcompApi, accept_id: str, work: Path) -> None:
    api.calc_params(accept_id, SITE, work)
    api.calc_params_complete(accept_id, SITE)
    api.calc_start(accept_id, SITE)
    api.calc_end(accept_id, SITE, "calc end")
    (work / STDOUT_NAME).write_text("出力\n", encoding="utf-8")
    api.send_results(
        accept_id,
        SITE,
        [
            OutgoingResult(STDOUT_NAME, work / STDOUT_NAME, "text/plain;", "charset=utf-8"),
            OutgoingResult(STDERR_NAME, None, error="missing stderr"),
        ],
    )
    api.end_send(accept_id, SITE)


@pytest.mark.parametrize("style", ["python", "utf8", "pretty", "sorted"])
def test_every_reply_style_of_the_server_is_understood(tmp_path: Path, style: str) -> None:
    """Quirk 7: raw UTF-8 or \\u escapes, pretty-printed or not, sorted keys."""
    broker = Broker({SITE: ["run.sh"]})
    payload = bytes(range(256)) * 3
    with (
        DistcompServer(broker, TOKEN, json_style=style) as server,
        DistcompApi(server.url, TOKEN, retry=FAST) as api,
    ):
        accept_id = register(api, tmp_path, files={"データ/入力.bin": payload})
        work = tmp_path / "work"
        work.mkdir()
        info = api.calc_params(accept_id, SITE, work)
        assert info.command == "run.sh"
        assert info.parameters == "p=1"
        assert (work / "データ" / "入力.bin").read_bytes() == payload
        assert sorted(info.result_names) == sorted(("result.txt", STDOUT_NAME, STDERR_NAME))
        api.calc_params_complete(accept_id, SITE)
        api.calc_start(accept_id, SITE)
        assert api.calc_progress(accept_id) == "running"
        api.calc_end(accept_id, SITE, "abnormal")
        (work / STDOUT_NAME).write_text("出力\n", encoding="utf-8")
        api.send_results(
            accept_id,
            SITE,
            [OutgoingResult(STDOUT_NAME, work / STDOUT_NAME, "text/plain;", "charset=utf-8")],
        )
        api.end_send(accept_id, SITE)
        assert api.calc_status(accept_id) == "abnormal"
        result = api.get_calc_result(accept_id, tmp_path / "res")
        assert (tmp_path / "res" / STDOUT_NAME).read_text(encoding="utf-8") == "出力\n"
        assert [f.name for f in result.files] == [STDOUT_NAME]


def test_calc_request_nothing_and_not_allowed_and_unknown_site(
    workflow: DistcompApi, tmp_path: Path
) -> None:
    """Quirk 2: "0300" and "400" both mean nothing to do; only the unknown site is loud."""
    nothing = workflow.calc_request(SITE)
    assert (nothing.accept_id, nothing.code, nothing.unknown_site) == (None, 300, False)
    register(workflow, tmp_path, allow=False)
    waiting = workflow.calc_request(SITE)
    assert (waiting.accept_id, waiting.code, waiting.unknown_site) == (None, 400, False)
    unknown = workflow.calc_request("no-such-site")
    assert (unknown.accept_id, unknown.code, unknown.unknown_site) == (None, 400, True)


def test_calc_params_in_the_wrong_state_is_a_refusal(workflow: DistcompApi, tmp_path: Path) -> None:
    """Quirk 3: code 200 but no calc-info."""
    accept_id = register(workflow, tmp_path)
    workflow.calc_params(accept_id, SITE, tmp_path)
    with pytest.raises(ApiRefusal, match="calc-params refused") as caught:
        workflow.calc_params(accept_id, SITE, tmp_path)
    assert caught.value.code == 200


def test_calc_end_in_the_wrong_state_answers_ok_but_changes_nothing(
    workflow: DistcompApi, tmp_path: Path
) -> None:
    """Quirk 4."""
    accept_id = register(workflow, tmp_path)
    workflow.calc_params(accept_id, SITE, tmp_path)
    assert workflow.calc_end(accept_id, SITE, "calc end").ok
    assert workflow.calc_progress(accept_id) == "sending params"


def test_malformed_requests_are_http_400_refusals(server: DistcompServer) -> None:
    """Quirk 5: missing keys, body not JSON, unknown calc-end result (code 402)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    base = server.base_url
    missing = requests.post(
        f"{base}/calc-start", json={"site_id": SITE}, headers=headers, timeout=10
    )
    not_json = requests.post(f"{base}/calc-start", data=b"{nope", headers=headers, timeout=10)
    assert (missing.status_code, not_json.status_code) == (400, 400)
    with DistcompApi(server.url, TOKEN) as api:
        accept_id = api.add_calcinfo("run.sh", SITE)
        api.allow_wait_calc(accept_id)
        bad = requests.post(
            f"{base}/calc-end",
            json={"accept_id": accept_id, "site_id": SITE, "result": "finished"},
            headers=headers,
            timeout=10,
        )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["code"] == 402


def test_unknown_accept_id_is_reported_as_unknown(workflow: DistcompApi) -> None:
    """Quirks 6 and 8 (cancel answers with the bare id)."""
    with pytest.raises(UnknownCalculation):
        workflow.calc_progress("4f1c0e47-0000-4000-8000-000000000000")
    with pytest.raises(UnknownCalculation, match="4f1c0e47"):
        workflow.cancel_wait_calc("4f1c0e47-0000-4000-8000-000000000000")
    with pytest.raises(ApiRefusal, match="calc-start"):
        workflow.calc_start("4f1c0e47-0000-4000-8000-000000000000", SITE)


def test_cancel_refuses_a_never_allowed_calculation_without_force(
    workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(workflow, tmp_path, allow=False)
    with pytest.raises(ApiRefusal) as caught:
        workflow.cancel_wait_calc(accept_id)
    assert (caught.value.http_status, caught.value.code) == (400, 401)
    assert workflow.cancel_wait_calc(accept_id, force=True).ok
    with pytest.raises(UnknownCalculation):
        workflow.calc_status(accept_id)


def test_replies_carry_an_empty_authorization_header(server: DistcompServer) -> None:
    """Quirk 9: the client ignores it."""
    reply = requests.get(
        f"{server.base_url}/calc-request",
        params={"site_id": SITE},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert reply.headers["Authorization"] == ""


def test_result_fetched_the_legacy_way_and_only_once(workflow: DistcompApi, tmp_path: Path) -> None:
    """Quirk 10: GET with a JSON body and Accept */*; the record is deleted afterwards."""
    accept_id = register(workflow, tmp_path)
    work = tmp_path / "w"
    work.mkdir()
    full_sequence(workflow, accept_id, work)
    result = workflow.get_calc_result(accept_id, tmp_path / "r", legacy_request=True)
    assert (tmp_path / "r" / STDOUT_NAME).read_text(encoding="utf-8") == "出力\n"
    assert [(f.name, f.error) for f in result.missing] == [(STDERR_NAME, "missing stderr")]
    with pytest.raises(ApiRefusal, match="code 400"):
        workflow.get_calc_result(accept_id, tmp_path / "again")


def test_mime_words_are_advisory_and_bytes_exact(workflow: DistcompApi, tmp_path: Path) -> None:
    """Quirk 11: a binary file `file` calls image/x-tga is written as the exact bytes."""
    payload = bytes(range(256)) * 10
    accept_id = register(workflow, tmp_path, files={"x.bin": payload})
    info = workflow.calc_params(accept_id, SITE, tmp_path / "w")
    (entry,) = info.parameter_files
    assert entry.path is not None and entry.path.read_bytes() == payload
    assert entry.mimetype2 == "charset=binary"


def test_hostile_result_names_are_never_written(tmp_path: Path) -> None:
    broker = Broker(
        {SITE: ["run.sh"]}, inject_result_files={n: b"pwned" for n in HOSTILE_RESULT_NAMES}
    )
    with DistcompServer(broker, TOKEN) as server, DistcompApi(server.url, TOKEN) as api:
        accept_id = register(api, tmp_path)
        work = tmp_path / "w"
        work.mkdir()
        full_sequence(api, accept_id, work)
        dest = tmp_path / "deep" / "dest"
        result = api.get_calc_result(accept_id, dest)
    assert sorted(f.name for f in result.refused) == sorted(HOSTILE_RESULT_NAMES)
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()
    assert sorted(p.name for p in dest.rglob("*")) == [STDOUT_NAME]


def test_hostile_parameter_names_are_refused_and_nothing_escapes(
    workflow: DistcompApi, tmp_path: Path
) -> None:
    accept_id = register(
        workflow,
        tmp_path,
        files={"../x": b"1", "/tmp/abs-x": b"2", "a/../../x": b"3", "ok/y.txt": b"4"},
    )
    work = tmp_path / "base" / "work"
    work.mkdir(parents=True)
    info = workflow.calc_params(accept_id, SITE, work)
    refused = {f.name for f in info.parameter_files if f.refused}
    assert refused == {"../x", "/tmp/abs-x", "a/../../x"}
    assert (work / "ok" / "y.txt").read_bytes() == b"4"
    assert not (tmp_path / "base" / "x").exists()
    assert not Path("/tmp/abs-x").exists()


def test_registration_refusals_come_back_as_http_202(workflow: DistcompApi) -> None:
    with pytest.raises(ApiRefusal) as unknown_site:
        workflow.add_calcinfo("run.sh", "nowhere")
    with pytest.raises(ApiRefusal) as bad_command:
        workflow.add_calcinfo("rm -rf /", SITE)
    assert (unknown_site.value.http_status, unknown_site.value.code) == (202, 400)
    assert (bad_command.value.http_status, bad_command.value.code) == (202, 401)


def test_wrong_token_is_an_auth_error_and_not_retried(server: DistcompServer) -> None:
    calls: list[float] = []
    policy = RetryPolicy(max_attempts=5, base_delay=0.0, sleep=calls.append)
    with DistcompApi(server.url, "wrong" * 10, retry=policy) as api, pytest.raises(AuthError):
        api.calc_request(SITE)
    assert calls == []


def test_http_5xx_is_retried_then_succeeds(server: DistcompServer) -> None:
    pauses: list[float] = []
    policy = RetryPolicy(max_attempts=3, base_delay=0.5, jitter=False, sleep=pauses.append)
    server.fail_next("calc-request", count=2, status=502)
    with DistcompApi(server.url, TOKEN, retry=policy) as api:
        assert api.calc_request(SITE).code == 300
    assert pauses == [0.5, 1.0]


def test_http_4xx_is_not_retried(workflow: DistcompApi, server: DistcompServer) -> None:
    server.fail_next("calc-request", count=1, status=404)
    with pytest.raises(ApiRefusal, match="HTTP 404"):
        workflow.calc_request(SITE)


def test_server_down_then_up_is_bridged_by_retries() -> None:
    port = free_port()
    broker = Broker({SITE: ["run.sh"]})
    later: list[DistcompServer] = []

    def start_server_on_first_pause(seconds: float) -> None:
        if not later:
            later.append(DistcompServer(broker, TOKEN, port=port).start())

    policy = RetryPolicy(max_attempts=3, base_delay=0.01, sleep=start_server_on_first_pause)
    try:
        with DistcompApi(f"http://127.0.0.1:{port}", TOKEN, retry=policy) as api:
            assert api.calc_request(SITE).code == 300
    finally:
        for running in later:
            running.shutdown()


def test_retries_exhausted_is_unavailable() -> None:
    port = free_port()
    policy = RetryPolicy(max_attempts=2, base_delay=0.0, jitter=False)
    api = DistcompApi(f"http://127.0.0.1:{port}", TOKEN, retry=policy)
    with api, pytest.raises(UnavailableError, match=r": connection refused \(after 2 attempts\)$"):
        api.calc_request(SITE)


def test_non_json_reply_names_the_problem(html_proxy_url: str) -> None:
    api = DistcompApi(html_proxy_url, TOKEN, retry=FAST)
    with api, pytest.raises(UnavailableError, match=r"not JSON.*proxy login"):
        api.calc_request(SITE)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_with_the_site_ca_bundle(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    broker = Broker({SITE: ["run.sh"]})
    with DistcompServer(broker, TOKEN, tls_cert=tls.cert, tls_key=tls.key) as server:
        assert server.url.startswith("https://")
        with DistcompApi(server.url, TOKEN, verify=tls.ca, retry=FAST) as api:
            accept_id = register(api, tmp_path)
            assert api.calc_request(SITE).accept_id == accept_id
        with DistcompApi(server.url, TOKEN, retry=FAST) as untrusted:
            with pytest.raises(AuthError, match="TLS") as caught:
                untrusted.calc_request(SITE)
            assert caught.value.hint is not None and "ca_bundle" in caught.value.hint
        with DistcompApi(server.url, TOKEN, verify=False, retry=FAST) as unverified:
            assert unverified.calc_request(SITE).accept_id == accept_id


def test_token_never_appears_in_debug_logs(
    workflow: DistcompApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    accept_id = register(workflow, tmp_path)
    work = tmp_path / "w"
    work.mkdir()
    full_sequence(workflow, accept_id, work)
    bad = DistcompApi(workflow.base_url, "bad-token-" * 7, retry=FAST)
    with bad, pytest.raises(AuthError) as caught:
        bad.calc_request(SITE)
    assert "calc-request" in caplog.text
    assert TOKEN not in caplog.text
    assert "bad-token-" not in str(caught.value)
