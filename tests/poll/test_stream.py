"""Streaming base64-in-JSON: exact lengths, incremental parsing, decoding straight to disk."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_common.errors import InputError, TransferError
from mint_poll.stream import (
    MAX_BASE64_LENGTH,
    Base64File,
    Base64FileSink,
    Base64Text,
    JsonPath,
    StreamedJson,
    StringSink,
    _strict_b64decode,
    base64_length,
    check_encodable,
    parse_json_stream,
    stdlib_strict_b64decode,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@given(document=json_values, chunk=st.integers(min_value=1, max_value=17))
@settings(max_examples=150, deadline=None)
def test_parser_agrees_with_json_module_for_any_document_and_chunking(
    document: Any, chunk: int
) -> None:
    for text in (json.dumps(document), json.dumps(document, ensure_ascii=False, indent=2)):
        assert parse_json_stream(split(text.encode(), chunk)) == json.loads(text)


@given(document=json_values)
@settings(max_examples=100, deadline=None)
@pytest.mark.parametrize(
    "style",
    [{}, {"indent": 4}, {"sort_keys": True, "ensure_ascii": False}],
    ids=["python", "pretty", "sorted-utf8"],
)
def test_streamed_json_matches_json_dumps_byte_for_byte(document: Any, style: dict) -> None:
    body = StreamedJson(document, **style)
    assert body.read_all() == json.dumps(document, **style).encode()
    assert len(body) == len(body.read_all())


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 786431, 786432, 786433, 2_000_003])
def test_file_round_trip_through_body_and_sink(tmp_path: Path, size: int) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(bytes(i % 256 for i in range(size)))
    body = StreamedJson({"files": {"名前.bin": [Base64File(source), "a;", "b"]}})
    raw = body.read_all()
    assert len(raw) == len(body)
    assert json.loads(raw)["files"]["名前.bin"][0] == base64.b64encode(source.read_bytes()).decode()
    target = tmp_path / "out" / "copy.bin"

    def divert(path: JsonPath) -> Optional[StringSink]:
        return Base64FileSink(target, what="t") if path == ("files", "名前.bin", 0) else None

    document = parse_json_stream(split(raw, 65536), divert)
    assert document == {"files": {"名前.bin": [size, "a;", "b"]}}
    assert target.read_bytes() == source.read_bytes()


def test_body_can_be_iterated_again_for_a_retry(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x" * 1000)
    body = StreamedJson({"f": Base64File(source)})
    assert b"".join(body) == b"".join(body)


def test_file_that_grows_after_sizing_is_refused_not_sent_corrupt(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"abc")
    body = StreamedJson({"f": Base64File(source)})
    source.write_bytes(b"abcdef")
    with pytest.raises(TransferError, match="changed size"):
        body.read_all()


def test_base64_limit_is_checked_from_the_size_alone(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.bin"
    with open(sparse, "wb") as handle:
        handle.truncate(1_700_000_000)
    assert base64_length(1_700_000_000) > MAX_BASE64_LENGTH
    with pytest.raises(InputError, match="2 GiB"):
        check_encodable(sparse, sparse.stat().st_size)
    with pytest.raises(InputError, match="2 GiB"):
        Base64File(sparse)


def test_escaped_slashes_and_unicode_in_base64_strings_are_decoded(tmp_path: Path) -> None:
    payload = bytes([0xFB, 0xFF, 0xBF]) * 5
    encoded = base64.b64encode(payload).decode().replace("/", "\\/")
    text = '{"c": "' + encoded + '"}'
    target = tmp_path / "o"
    parse_json_stream(split(text.encode(), 3), lambda p: Base64FileSink(target, what="t"))
    assert target.read_bytes() == payload


@pytest.mark.parametrize(
    "text",
    ['{"a": 1', '{"a" 1}', "[1, 2,]", '{"a": "x}', '{"a": 1} extra', '{"a": "\\q"}', ""],
    ids=[
        "unclosed",
        "no-colon",
        "trailing-comma",
        "open-string",
        "trailing-data",
        "bad-escape",
        "empty",
    ],
)
def test_malformed_json_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match="malformed JSON"):
        parse_json_stream([text.encode()], what="reply")


def test_invalid_base64_aborts_and_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "o"
    with pytest.raises(InputError, match="invalid base64"):
        parse_json_stream([b'{"c": "QUJD', b'!!!!"}'], lambda p: Base64FileSink(target, what="t"))
    assert list(tmp_path.iterdir()) == []


def test_truncated_stream_removes_the_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "o"
    with pytest.raises(InputError, match="unterminated"):
        parse_json_stream([b'{"c": "QUJD'], lambda p: Base64FileSink(target, what="t"))
    assert list(tmp_path.iterdir()) == []


def test_memory_blob_is_written_verbatim() -> None:
    body = StreamedJson({"c": Base64Text(b"QUJD")})
    assert body.read_all() == b'{"c": "QUJD"}'


@pytest.mark.parametrize(
    "decode", [_strict_b64decode, stdlib_strict_b64decode], ids=["pybase64", "stdlib"]
)
def test_both_decoders_are_strict_and_agree(decode: Any) -> None:
    payload = bytes(range(256)) * 3
    assert decode(base64.b64encode(payload)) == payload
    with pytest.raises((binascii.Error, ValueError)):
        decode(b"QUJD\nQUJD")
    with pytest.raises((binascii.Error, ValueError)):
        decode(b"QU*D")
