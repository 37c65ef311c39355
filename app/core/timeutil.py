"""Event time as int milliseconds since the Unix epoch (UTC), and its ISO-8601 form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
MIN_MS: Final = -62135596800000  # 0001-01-01T00:00:00.000Z
MAX_MS: Final = 253402300799999  # 9999-12-31T23:59:59.999Z

# "YYYY-MM-DDTHH:MM:" -> ms of that minute; the canonical form parses without datetime.
_MINUTES: Final[dict[str, int]] = {}
_MINUTES_MAX: Final = 200_000
# minute since the epoch -> "YYYY-MM-DDTHH:MM:", and ms within the minute -> "SS.mmmZ",
# for format_ts (the suffixes are filled on first use).
_PREFIXES: Final[dict[int, str]] = {}
_SUFFIXES: Final[list[str]] = []
# "SS.mmmZ" -> ms within the minute (60,000 entries, filled on first use).
_REST: Final[dict[str, int]] = {}


class _Minute:
    """The minute of the canonical string parsed last: ``("YYYY-MM-DDTHH:MM:", its ms)``, one
    attribute so that a thread never reads the text of one minute with the ms of another."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[str, int] = ("\x00" * 25, 0)  # longer than a timestamp: matches none


_LAST: Final = _Minute()
_ZERO: Final = 48  # ord("0")


def parse_ts(value: object) -> int:
    """ISO-8601 string with ``Z`` or an offset, int ms, or aware datetime -> int ms UTC.

    Sub-millisecond digits are truncated (floor). Raises ``ValueError`` for anything else
    (naive times, floats, bools, out-of-range values).

    A canonical string (``YYYY-MM-DDTHH:MM:SS.mmmZ``) of the minute parsed last costs a
    prefix compare and five digits, no slice, hash or lookup (a stream's timestamps come
    minute by minute); of another minute seen before, two table lookups; else ``datetime``.
    """
    cls = type(value)
    if cls is str:
        v: str = value  # type: ignore[assignment]
        minute, base = _LAST.last
        if len(v) == 24 and v.startswith(minute) and v[19] == "." and v[23] == "Z":
            s1 = ord(v[17]) - _ZERO
            s2 = ord(v[18]) - _ZERO
            m1 = ord(v[20]) - _ZERO
            m2 = ord(v[21]) - _ZERO
            m3 = ord(v[22]) - _ZERO
            if 0 <= s1 <= 5 and 0 <= s2 <= 9 and 0 <= m1 <= 9 and 0 <= m2 <= 9 and 0 <= m3 <= 9:
                return base + (s1 * 10 + s2) * 1000 + m1 * 100 + m2 * 10 + m3
        head = v[:17]
        found = _MINUTES.get(head)
        if found is not None:
            rest = _REST.get(v[17:])
            if rest is not None:
                _LAST.last = (head, found)
                return found + rest
        return _parse_iso(v)
    if cls is int:
        ms: int = value  # type: ignore[assignment]
        if MIN_MS <= ms <= MAX_MS:
            return ms
        raise ValueError(f"timestamp {ms} ms is out of range")
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime has no UTC offset")
        return (value - EPOCH) // _MS
    raise ValueError(f"not a timestamp: {type(value).__name__}")


def _parse_iso(v: str) -> int:
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {v[:40]!r}") from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"ISO-8601 timestamp without UTC offset: {v[:40]!r}")
    ms = (dt - EPOCH) // _MS
    if len(v) == 24 and v[23] == "Z" and v[19] == "." and v[10] == "T":
        if not _REST:
            _fill_suffixes()
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[v[:17]] = ms - ms % 60_000
    return ms


def _fill_suffixes() -> None:
    """Both tables of "SS.mmmZ" (ms within a minute), built once, sharing their strings:
    joined from 60 second and 1,000 millisecond parts (formatting 60,000 pairs of ints cost a
    process ~160 ms at its first timestamp; this ~25 ms)."""
    if _SUFFIXES:
        return
    seconds = [f"{sec:02d}." for sec in range(60)]
    millis = [f"{milli:03d}Z" for milli in range(1000)]
    suffixes = [sec + milli for sec in seconds for milli in millis]
    # Each table appears whole (one C-level update each), the parse table first; two
    # threads filling at once write the same contents.
    _REST.update(zip(suffixes, range(60_000), strict=True))
    _SUFFIXES[:] = suffixes


def format_ts(ms: int) -> str:
    """int ms -> ``2026-11-27T10:00:00.000Z`` (four-digit year, millisecond precision)."""
    minute, rest = divmod(ms, 60_000)
    prefix = _PREFIXES.get(minute)
    if prefix is None:
        dt = EPOCH + timedelta(minutes=minute)
        prefix = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        if not _SUFFIXES:
            _fill_suffixes()  # before the prefix is stored: a cached prefix implies the suffixes
        if len(_PREFIXES) >= _MINUTES_MAX:
            _PREFIXES.clear()
        _PREFIXES[minute] = prefix
    return prefix + _SUFFIXES[rest]
