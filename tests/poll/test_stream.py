"""Streaming base64-in-JSON: exact lengths, incremental parsing, decoding straight to disk."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_common.errors import InputError, TransferError
from mint_poll.stream import (
    MAX_BASE64_LENGTH,
    MAX_DEPTH,
    MAX_LITERAL,
    Base64File,
    Base64FileSink,
    Base64Text,
    JsonLimitError,
    JsonLimits,
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


class CountingChunks:
    """Chunks made on demand, counting how many the parser pulled (to show it stopped early)."""

    def __init__(self, head: bytes, unit: bytes, count: int, tail: bytes = b"") -> None:
        self.head, self.unit, self.count, self.tail = head, unit, count, tail
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        self.pulled += 1
        yield self.head
        for _ in range(self.count):
            self.pulled += 1
            yield self.unit
        yield self.tail


SMALL = JsonLimits(depth=8, values=100, string=1000, held=10_000, literal=64)
CHUNKS = 10_000


@pytest.mark.parametrize(
    ("head", "unit", "bound"),
    [
        (b"", b"[", "nested too deeply"),
        (b"[", b"0,", "too many values"),
        (b'{"a": "', b"x" * 100, "a string longer than the limit"),
        (b'{"a": "', b"\\n" * 50, "a string longer than the limit"),
        (b"[", b'"' + b"s" * 500 + b'",', "too much text held"),
        (b'{"n": 1', b"0" * 10, "a number or literal token too long"),
        (b'{"k', b"k" * 100, "a string longer than the limit"),
    ],
    ids=["depth", "values", "string", "escapes", "held", "number", "key"],
)
def test_each_bound_refuses_far_larger_input_early(head: bytes, unit: bytes, bound: str) -> None:
    chunks = CountingChunks(head, unit, CHUNKS)
    with pytest.raises(JsonLimitError, match=bound):
        parse_json_stream(chunks, limits=SMALL, what="reply")
    assert chunks.pulled < CHUNKS // 10, "refused as soon as the bound was passed"


def test_default_depth_bound_stops_a_million_brackets_without_recursion_error() -> None:
    with pytest.raises(JsonLimitError, match=f"nested too deeply .limit {MAX_DEPTH}"):
        parse_json_stream([b"[" * 1_000_000], what="reply")


def test_a_number_literal_in_one_byte_chunks_is_refused_within_its_bound() -> None:
    chunks = CountingChunks(b'{"n": 1', b"0", 10_000_000)
    with pytest.raises(JsonLimitError, match="token too long"):
        parse_json_stream(chunks, what="reply")
    assert chunks.pulled <= MAX_LITERAL + 2


def test_diverted_strings_are_not_held_and_keep_streaming(tmp_path: Path) -> None:
    sinks: list[Base64FileSink] = []

    def divert(path: JsonPath) -> Optional[StringSink]:
        sinks.append(Base64FileSink(tmp_path / f"f{len(sinks)}", what="file"))
        return sinks[-1]

    body = b'["' + base64.b64encode(b"x" * 30_000) + b'"]'
    assert parse_json_stream(split(body, 1000), divert, limits=SMALL) == [30_000]


@pytest.mark.parametrize(
    "text",
    ['{"\\ud800": 1}', '["a\\udfffb"]', '{"a": "\\udc80"}', '["\\ud83d"]'],
    ids=["key", "low-alone", "value", "high-at-end"],
)
def test_a_lone_surrogate_is_malformed_and_the_message_is_ascii(text: str) -> None:
    with pytest.raises(InputError, match="lone surrogate") as info:
        parse_json_stream([text.encode()], what="reply")
    assert str(info.value).isascii()


def test_a_surrogate_pair_is_one_character() -> None:
    assert parse_json_stream([b'["\\ud83d\\ude00"]']) == ["\U0001f600"]


@given(data=st.binary(max_size=300), chunk=st.integers(min_value=1, max_value=64))
@settings(max_examples=300, deadline=None)
def test_random_bytes_give_a_document_or_an_input_error_only(data: bytes, chunk: int) -> None:
    with contextlib.suppress(InputError):
        parse_json_stream(split(data, chunk), limits=SMALL)


@given(
    document=json_values,
    cut=st.integers(min_value=0, max_value=400),
    junk=st.binary(min_size=1, max_size=8),
)
@settings(max_examples=200, deadline=None)
def test_damaged_documents_give_a_document_or_an_input_error_only(
    document: Any, cut: int, junk: bytes
) -> None:
    text = json.dumps(document).encode()
    damaged = text[:cut] + junk + text[cut:]
    with contextlib.suppress(InputError):
        parse_json_stream(split(damaged, 7), limits=SMALL)
