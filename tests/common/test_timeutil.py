from __future__ import annotations

from datetime import datetime

import pytest

from mint_common.errors import ConfigError
from mint_common.timeutil import (
    Duration,
    epoch_from_iso,
    format_duration,
    iso_from_epoch,
    now_iso,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("600", 600.0),
        (600, 600.0),
        (1.5, 1.5),
        ("1.5", 1.5),
        ("45s", 45.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        (" 1H 30M ", 5400.0),
        ("1.5h", 5400.0),
        ("0", 0.0),
    ],
)
def test_every_duration_form_gives_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "h", "1h-30m", "ten", True, None, [1], "nan", "inf"])
def test_bad_durations_say_which_forms_are_accepted(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|expected seconds"):
        parse_duration(text)


def test_duration_config_type_names_source_and_key() -> None:
    assert Duration.from_config("2h", source="f.yaml", key="poll_interval") == 7200.0
    with pytest.raises(ConfigError, match=r"environment variable MINT_X_T: key 't'.*'2 hours'"):
        Duration.from_config("2 hours", source="environment variable MINT_X_T", key="t")


@pytest.mark.parametrize(
    ("seconds", "text"), [(5400, "1h30m"), (90, "1m30s"), (0.5, "0.5s"), (86400, "1d"), (7, "7s")]
)
def test_format_duration_reads_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_iso_times_carry_an_offset_and_round_trip() -> None:
    stamp = iso_from_epoch(1_700_000_000)
    assert stamp is not None
    assert datetime.fromisoformat(stamp).utcoffset() is not None
    assert epoch_from_iso(stamp) == 1_700_000_000
    assert iso_from_epoch(None) is None
    assert datetime.fromisoformat(now_iso()).utcoffset() is not None
    assert epoch_from_iso("2026-11-30T00:00:00Z") == epoch_from_iso("2026-11-30T09:00:00+09:00")
    assert epoch_from_iso("2026-11-30T00:00:00") == epoch_from_iso("2026-11-30T00:00:00+00:00")
