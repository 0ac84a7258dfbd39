"""Go-style durations and sizes: parsing, formatting and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25),
    ("1m30s", 90.0),
    ("1.5h", 5400.0),
    ("0", 0.0),
    (0, 0.0),
    (0.0, 0.0),
    ("15s", 15.0),
    ("100us", 100e-6),
    ("100\u00b5s", 100e-6),
    ("3ns", 3e-9),
    (".5s", 0.5),
    ("1h30m", 5400.0),
    ("2h45m30.5s", 2 * 3600 + 45 * 60 + 30.5),
    ("+5s", 5.0),
])
def test_parse_duration_accepts_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-15, abs=0)


@pytest.mark.parametrize("text", ["5 parsecs", "5", "1.5", "s", "", "5sec", "1e3s", "ms5", "-", "5s "])
def test_parse_duration_rejects_bad_text_naming_it(text):
    with pytest.raises(ValueError, match="not a valid duration") as caught:
        parse_duration(text)
    assert (text if text.strip() == text and text else repr(text)) in str(caught.value)


@pytest.mark.parametrize("number", [5, 1.5, -3, True])
def test_parse_duration_rejects_bare_numbers_other_than_zero(number):
    with pytest.raises(ValueError, match="expected a duration like 250ms or 1m30s"):
        parse_duration(number)


def test_parse_duration_rejects_negative_durations():
    with pytest.raises(ValueError, match=r"-5s is not a valid duration \(durations are never negative\)"):
        parse_duration("-5s")


@pytest.mark.parametrize(("text", "size_bytes"), [
    ("4KiB", 4096),
    ("512MiB", 512 * 1024**2),
    ("1GiB", 1024**3),
    ("14.4kB", 14400),
    ("10KB", 10000),
    ("3MB", 3_000_000),
    ("2GB", 2_000_000_000),
    ("100B", 100),
    ("512", 512),
    (512, 512),
    (0, 0),
    ("1.5B", 2),
    ("1.0009765625KiB", 1025),
    ("0.3kB", 300),
])
def test_parse_size(text, size_bytes):
    assert parse_size(text) == size_bytes


@pytest.mark.parametrize("text", ["4 KiB", "4kib", "1.5", "lots", "", "-5KiB", -1, 1.5, True])
def test_parse_size_rejects_bad_values_naming_them(text):
    with pytest.raises(ValueError, match="not a valid size") as caught:
        parse_size(text)
    assert str(text) in str(caught.value) or repr(text) in str(caught.value)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.25, "250ms"), (90.0, "1m30s"), (15.0, "15s"), (0.0, "0s"), (5400.0, "1h30m"),
    (0.0015, "1.5ms"), (1e-6, "1us"), (3e-9, "3ns"), (3661.5, "1h1m1.5s"), (3600.0, "1h"),
])
def test_format_duration_is_go_like_and_short(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("size_bytes", "text"), [
    (4096, "4KiB"), (512 * 1024**2, "512MiB"), (1024**3, "1GiB"), (1000, "1kB"),
    (10306, "10306"), (0, "0"), (32 * 1024**2, "32MiB"), (3_000_000, "3MB"),
])
def test_format_size_is_short(size_bytes, text):
    assert format_size(size_bytes) == text


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_format_duration_rejects_what_cannot_be_written(bad):
    with pytest.raises(ValueError):
        format_duration(bad)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_duration_round_trip_any_float(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(0, 10**6), st.sampled_from(["ns", "us", "ms", "s", "m", "h"]),
       st.integers(0, 3))
def test_duration_round_trip_from_written_values(count, unit, decimals):
    seconds = parse_duration(f"{count / 10**decimals}{unit}")
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert len(text) <= len(f"{count / 10**decimals}{unit}") + 8


@given(st.integers(min_value=0, max_value=2**62))
def test_size_round_trip_any_int(size_bytes):
    assert parse_size(format_size(size_bytes)) == size_bytes


@given(st.integers(0, 10**5), st.sampled_from(["B", "kB", "KB", "KiB", "MB", "MiB", "GB", "GiB"]),
       st.integers(0, 2))
def test_size_round_trip_from_written_values(count, unit, decimals):
    size_bytes = parse_size(f"{count / 10**decimals}{unit}")
    assert parse_size(format_size(size_bytes)) == size_bytes
