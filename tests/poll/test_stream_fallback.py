"""The standard-library base64 decoding used when pybase64 is not installed (any Python >= 3.9)."""

from __future__ import annotations

import base64
import binascii
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_common.errors import InputError
from mint_poll import stream
from mint_poll.stream import Base64FileSink, parse_json_stream, stdlib_strict_b64decode

# Short texts over the alphabet, padding and a few intruders find every edge of strictness.
base64ish = st.binary(max_size=12).map(lambda raw: bytes(b"QJ+/=\n*A"[byte % 8] for byte in raw))


def _outcome(decode: object, text: bytes) -> object:
    try:
        return decode(text)  # type: ignore[operator]
    except (binascii.Error, ValueError):
        return "refused"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="strict_mode exists from Python 3.11")
@given(text=base64ish)
@settings(max_examples=400, deadline=None)
def test_fallback_refuses_exactly_what_strict_mode_refuses(text: bytes) -> None:
    def strict(data: bytes) -> bytes:
        return binascii.a2b_base64(data, strict_mode=True)  # novermin

    assert _outcome(stdlib_strict_b64decode, text) == _outcome(strict, text)


@pytest.mark.parametrize(
    "text", [b"QUJD=QUJD", b"QU=D", b"=QUJ", b"QUJD\nQUJD", b"QU*D", b"QUJDRA=A", b"QQ==QQ=="]
)
def test_fallback_refuses_misplaced_padding_and_foreign_characters(text: bytes) -> None:
    with pytest.raises((binascii.Error, ValueError)):
        stdlib_strict_b64decode(text)


def test_decoding_to_a_file_without_pybase64(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stream, "_fast_base64", None)
    payload = bytes(range(256)) * 50
    encoded = base64.b64encode(payload)
    # Odd chunk sizes make the decoder carry partial quanta between pieces (memoryview slices).
    chunks = [b'{"c": "'] + [encoded[i : i + 1001] for i in range(0, len(encoded), 1001)] + [b'"}']
    target = tmp_path / "out.bin"
    parse_json_stream(chunks, lambda path: Base64FileSink(target, what="t"))
    assert target.read_bytes() == payload

    bad = tmp_path / "bad.bin"
    with pytest.raises(InputError, match="invalid base64"):
        parse_json_stream([b'{"c": "QUJD=QUJD"}'], lambda path: Base64FileSink(bad, what="t"))
    assert not bad.exists()
