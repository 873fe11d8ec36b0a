"""The checks `mint-poll submit` makes before sending anything, and the legacy positional form."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mint_common.errors import (
    CantCreateError,
    ConfigError,
    InputError,
    NoInputError,
    UnsafePathError,
    UsageError,
)
from mint_common.logging import redact
from mint_poll.submit_args import (
    LOG_NAMES,
    build_request,
    check_inputs,
    check_result_targets,
    check_results,
    legacy_url,
    parse_legacy_args,
    prepare_out_dir,
    split_colon_list,
)

# File names as module scripts use them: no ':' (the legacy separator), no control characters.
name_text = st.text(
    alphabet=st.characters(
        exclude_categories=("Cs", "Cc"), exclude_characters=":/\\\x00", min_codepoint=32
    ),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() != "" and s not in (".", ".."))
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True)
tokens = st.text(alphabet="abcdef0123456789", min_size=64, max_size=64)
words = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=15
)


@given(st.lists(name_text, max_size=6))
def test_colon_list_round_trips(names: list[str]) -> None:
    assert split_colon_list(":".join(names)) == tuple(names)


@given(st.lists(st.sampled_from(["", "a", "b.dat"]), max_size=8))
def test_colon_list_drops_empty_items(items: list[str]) -> None:
    assert split_colon_list(":".join(items)) == tuple(i for i in items if i)


@given(st.sampled_from(["http", "https"]), hosts, st.sampled_from(["", "/"]))
def test_legacy_url_appends_the_legacy_port(scheme: str, host: str, slash: str) -> None:
    url = legacy_url(f"{scheme}://{host}{slash}")
    assert url == f"{scheme}://{host}:50443"
    assert legacy_url(url) == url


@given(hosts, st.integers(min_value=1, max_value=65535))
def test_legacy_url_keeps_a_port_already_given(host: str, port: int) -> None:
    assert legacy_url(f"https://{host}:{port}") == f"https://{host}:{port}"


@pytest.mark.parametrize(
    "url",
    ["nims.mintsys.jp", "ftp://nims.mintsys.jp", "https://", "https://host:99999", ""],
    ids=["no-scheme", "ftp", "no-host", "bad-port", "empty"],
)
def test_legacy_url_refuses_what_is_not_an_http_url(url: str) -> None:
    with pytest.raises(ConfigError, match="base url"):
        legacy_url(url)


@given(
    hosts,
    name_text,
    tokens,
    name_text,
    st.lists(name_text, max_size=4),
    st.lists(name_text, max_size=4),
    st.lists(words, max_size=3),
)
def test_legacy_arguments_parse_to_their_meaning(
    host: str,
    site: str,
    token: str,
    command: str,
    inputs: list[str],
    results: list[str],
    parameters: list[str],
) -> None:
    argv = [f"https://{host}", site, token, command, ":".join(inputs), ":".join(results)]
    parsed = parse_legacy_args([*argv, *parameters])
    assert parsed.url == f"https://{host}:50443"
    assert (parsed.site_id, parsed.token, parsed.command) == (site, token, command)
    assert parsed.inputs == tuple(inputs)
    assert parsed.results == tuple(results)
    assert parsed.parameters == " ".join(parameters)
    assert token not in repr(parsed)
    assert token not in redact(f"token {token} on argv")


@pytest.mark.parametrize("count", [0, 1, 5], ids=["none", "one", "five"])
def test_legacy_form_with_too_few_arguments_is_a_usage_error(count: int) -> None:
    argv = ["https://h", "site", "t" * 64, "cmd", "a", "b"][:count]
    with pytest.raises(UsageError, match="at least 6 arguments"):
        parse_legacy_args(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["https://h", "site", "login", "cmd", "", ""], "no 'login' form"),
        (["https://h", " ", "t" * 64, "cmd", "", ""], "<site id> is empty"),
        (["https://h", "site", "t" * 64, "", "", ""], "<command> is empty"),
    ],
    ids=["login", "empty-site", "empty-command"],
)
def test_legacy_form_refuses_unusable_values(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_legacy_args(argv)


def test_missing_input_is_refused_with_exit_66(tmp_path: Path) -> None:
    (tmp_path / "there.dat").write_text("x")
    with pytest.raises(NoInputError, match=r"absent\.dat does not exist") as info:
        check_inputs(["there.dat", "absent.dat"], tmp_path)
    assert info.value.exit_status == 66


def test_directory_as_input_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(NoInputError, match="not a regular file"):
        check_inputs(["d"], tmp_path)


def test_input_names_keep_inner_folders_and_drop_outer_ones(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.dat").write_bytes(b"abc")
    outside = tmp_path / "outside.dat"
    outside.write_bytes(b"12345")
    work = tmp_path / "sub"
    inputs = check_inputs(["a.dat", str(outside)], work)
    assert [(i.name, i.size) for i in inputs] == [("a.dat", 3), ("outside.dat", 5)]
    assert check_inputs(["../outside.dat"], work)[0].name == "outside.dat"
    nested = check_inputs(["sub/a.dat"], tmp_path)
    assert nested[0].name == "sub/a.dat"
    assert nested[0].path == tmp_path / "sub" / "a.dat"


def test_two_inputs_with_the_same_sent_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "a.dat").write_text("1")
    (tmp_path / "x" / "a.dat").write_text("2")
    with pytest.raises(InputError, match=r"would both be sent as 'a\.dat'"):
        check_inputs(["a.dat", str(tmp_path / "x" / "a.dat")], tmp_path)


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x", "bad\nname", ""], ids=str.encode)
def test_unsafe_result_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafePathError):
        check_results(["ok.dat", name])


def test_result_names_are_kept_once_and_the_log_files_always_asked_for(tmp_path: Path) -> None:
    request = build_request(
        site_id="s",
        command="c",
        inputs=[],
        results=["out.dat", "out.dat", LOG_NAMES[0]],
        cwd=tmp_path,
    )
    assert request.results == ("out.dat", LOG_NAMES[0])
    assert request.requested_results == ("out.dat", *LOG_NAMES)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"command": " "}, UsageError, "command is empty"),
        ({"site_id": ""}, ConfigError, "no site id"),
        ({"timeout": 0.0}, UsageError, "--timeout must be positive"),
        ({"poll_interval": -1.0}, UsageError, "--poll-interval must be positive"),
    ],
    ids=["empty-command", "no-site", "zero-timeout", "negative-interval"],
)
def test_build_request_refuses_bad_settings(
    tmp_path: Path, changes: dict[str, object], error: type[Exception], message: str
) -> None:
    settings: dict[str, object] = {"site_id": "s", "command": "c", "inputs": [], "results": []}
    settings.update(changes)
    with pytest.raises(error, match=message):
        build_request(cwd=tmp_path, **settings)  # type: ignore[arg-type]


def test_out_dir_is_created_and_an_unusable_one_refused(tmp_path: Path) -> None:
    assert prepare_out_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(CantCreateError, match="nothing was sent"):
        prepare_out_dir(tmp_path / "file" / "sub")


def test_result_targets_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "taken").mkdir(parents=True)
    (out / "plain").write_text("")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (out / "link").symlink_to(outside)
    check_result_targets(out, ["fine.dat", "new/dir/file.dat", *LOG_NAMES])
    with pytest.raises(CantCreateError, match="would replace the directory"):
        check_result_targets(out, ["taken"])
    with pytest.raises(CantCreateError, match="a file is there"):
        check_result_targets(out, ["plain/inner.dat"])
    with pytest.raises(UnsafePathError, match="through a symlink"):
        check_result_targets(out, ["link/stolen.dat"])
