"""Durations and sizes as scenario files write them.

This module owns the text form of the two unit-carrying scalar types of the
schema: ``Duration`` (float seconds, written as Go durations such as ``250ms``,
``1m30s`` or ``0``) and ``Size`` (int bytes, written as ``4KiB``, ``512MiB``,
``14.4kB`` or a bare integer). Parsing follows Go's ``time.ParseDuration``
grammar; formatting gives the shortest text that parses back to exactly the same
value, so exported scenarios round-trip. Errors are ``ValueError``s whose
message names the offending text; ``sim.scenario_loader`` prefixes the setting's
path.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal, localcontext

DURATION_EXAMPLE = "expected a duration like 250ms or 1m30s"
SIZE_EXAMPLE = "expected a size like 4KiB, 512MiB, 14.4kB or a whole number of bytes"

# Enough digits for any finite float written out in full (about 1e308 or 5e-324).
_PRECISION_DIGITS = 800

_SECONDS_PER_UNIT: dict[str, Decimal] = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "\u00b5s": Decimal("1e-6"),  # micro sign, as Go accepts
    "\u03bcs": Decimal("1e-6"),  # Greek mu, as Go accepts
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_DURATION_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")

_BYTES_PER_UNIT: dict[str, int] = {
    "B": 1,
    "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
}
_SIZE_TEXT = re.compile(r"(\d+\.?\d*|\.\d+)(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?")
# Units format_size may choose from, in order of preference on a tie.
_FORMAT_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "kB", "MB", "GB", "TB")


def _shown(text: object) -> str:
    """The bad text as an error message shows it: bare unless that would hide it."""
    if isinstance(text, str) and text and text == text.strip():
        return text
    return repr(text)


def _plain(value: Decimal) -> str:
    """A decimal written out in full, without exponent or trailing zeros."""
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def parse_duration(text: str | int | float) -> float:
    """Seconds in a Go duration such as ``250ms``, ``1m30s``, ``1.5h`` or ``0``.

    Numbers (as YAML gives them) are accepted only when zero. Negative durations
    are errors: no duration in a scenario is negative.
    """
    if isinstance(text, bool):
        raise ValueError(f"{_shown(text)} is not a valid duration: {DURATION_EXAMPLE}")
    if isinstance(text, (int, float)):
        if text == 0:
            return 0.0
        raise ValueError(f"{text} is not a valid duration: {DURATION_EXAMPLE} "
                         f"(a number other than 0 needs a unit)")
    if not isinstance(text, str):
        raise ValueError(f"{_shown(text)} is not a valid duration: {DURATION_EXAMPLE}")
    negative = text.startswith("-")
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0.0
    position = 0
    with localcontext() as context:
        context.prec = _PRECISION_DIGITS
        total_s = Decimal(0)
        while position < len(body):
            term = _DURATION_TERM.match(body, position)
            if term is None:
                raise ValueError(f"{_shown(text)} is not a valid duration: {DURATION_EXAMPLE}")
            total_s += Decimal(term.group(1)) * _SECONDS_PER_UNIT[term.group(2)]
            position = term.end()
        if not body:
            raise ValueError(f"{_shown(text)} is not a valid duration: {DURATION_EXAMPLE}")
        if negative and total_s != 0:
            raise ValueError(f"{_shown(text)} is not a valid duration (durations are never negative)")
        seconds = float(total_s)
    if math.isinf(seconds):
        raise ValueError(f"{_shown(text)} is not a valid duration: too large")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Go-style text for ``seconds``: ``250ms``, ``1.5us``, ``15s``, ``1m30s``, ``0s``.

    Whole hours and minutes are split off (``5400`` gives ``1h30m``); zero parts are left out.

    ``parse_duration(format_duration(x)) == x`` for every finite ``x >= 0``.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"{_shown(seconds)} is not a number of seconds")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{seconds} seconds cannot be written as a duration "
                         f"(durations are finite and never negative)")
    if seconds == 0:
        return "0s"
    # repr gives the shortest decimal that reads back as this float.
    with localcontext() as context:
        context.prec = _PRECISION_DIGITS
        total_s = Decimal(repr(float(seconds)))
        if total_s < 1:
            for unit, exponent in (("ms", 3), ("us", 6), ("ns", 9)):
                scaled = total_s.scaleb(exponent)
                if scaled >= 1 or unit == "ns":
                    return f"{_plain(scaled)}{unit}"
        hours, rest_s = divmod(total_s, 3600)
        minutes, rest_s = divmod(rest_s, 60)
        parts = []
        if hours:
            parts.append(f"{_plain(hours)}h")
        if minutes:
            parts.append(f"{_plain(minutes)}m")
        if rest_s:
            parts.append(f"{_plain(rest_s)}s")
        return "".join(parts)


def parse_size(text: str | int) -> int:
    """Bytes in ``4KiB``, ``512MiB``, ``1GiB``, ``14.4kB``, ``10KB``, ``100B`` or a bare integer.

    kB/KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024; a fractional
    result rounds to the nearest byte (halves up).
    """
    if isinstance(text, bool):
        raise ValueError(f"{_shown(text)} is not a valid size: {SIZE_EXAMPLE}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is not a valid size (sizes are never negative)")
        return text
    if not isinstance(text, str):
        raise ValueError(f"{_shown(text)} is not a valid size: {SIZE_EXAMPLE}")
    if text.startswith("-") and _SIZE_TEXT.fullmatch(text[1:]):
        raise ValueError(f"{_shown(text)} is not a valid size (sizes are never negative)")
    match = _SIZE_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"{_shown(text)} is not a valid size: {SIZE_EXAMPLE}")
    number, unit = match.groups()
    if unit is None:
        if not number.isdigit():
            raise ValueError(f"{_shown(text)} is not a valid size: a bare number is a count of "
                             f"bytes and must be whole; {SIZE_EXAMPLE}")
        return int(number)
    with localcontext() as context:
        context.prec = _PRECISION_DIGITS
        size_bytes = Decimal(number) * _BYTES_PER_UNIT[unit]
        return int(size_bytes.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_size(size_bytes: int) -> str:
    """The shortest exact text for a byte count: ``4KiB``, ``14.4kB``, ``512MiB`` or ``10306``.

    ``parse_size(format_size(n)) == n`` for every int ``n >= 0``. A bare integer
    (bytes) is chosen when no unit is shorter.
    """
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int):
        raise ValueError(f"{_shown(size_bytes)} is not a whole number of bytes")
    if size_bytes < 0:
        raise ValueError(f"{size_bytes} bytes cannot be written as a size (sizes are never negative)")
    # Ranked by length; on a tie a whole count of a unit beats a bare integer,
    # which beats a fraction (binary units before decimal ones).
    candidates = [(len(str(size_bytes)), 1, str(size_bytes))]
    with localcontext() as context:
        context.prec = _PRECISION_DIGITS
        for unit in _FORMAT_SIZE_UNITS:
            count = Decimal(size_bytes) / _BYTES_PER_UNIT[unit]
            if count < 1:
                continue
            text = f"{_plain(count)}{unit}"
            candidates.append((len(text), 0 if count == count.to_integral_value() else 2, text))
    return min(candidates, key=lambda candidate: candidate[:2])[2]
