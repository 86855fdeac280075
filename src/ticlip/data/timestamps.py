"""Timestamps and periods: parse what tables hold, map times to years/months, and plan steps.

Accepted timestamp values (anything else is a *bad timestamp*, which the builder skips and counts):

- ``datetime`` / ``date`` objects (timezone-aware ones are converted to UTC);
- ISO strings: ``"2016"``, ``"2016-03"``, ``"2016-03-14"``, ``"2016-03-14T09:26:53"`` (``Z`` or an
  offset allowed, a space instead of ``T`` too);
- a year as an int or a string of 4 digits (1000-9999);
- unix seconds as an int, float or numeric string (any other number: ``1458000000`` is 2016-03-15).

A 4-digit integer is always read as a year, never as seconds after 1970-01-01 (those are within the
first three hours of 1970 and do not occur in real data).

Plausible range: a date must fall in ``EARLIEST_YEAR``..``LATEST_YEAR``, and unix seconds at or after
``EARLIEST_UNIX`` (1971-01-01: smaller numbers such as ``-5`` or ``99999`` are zero-defaults or other
numbers in the wrong column, not times); a timestamp outside is a ``TimestampOutOfRange``, which the
builder skips and counts as ``timestamp_out_of_range`` rather than filing it under 1969 or 1970.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from dataclasses import dataclass, field

GRANULARITIES = ("year", "month")

_YEAR = re.compile(r"^\d{4}$")
_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class TimestampError(ValueError):
    """A value that is not a timestamp this module understands."""


class TimestampOutOfRange(TimestampError):
    """A timestamp outside the plausible range (see the module doc)."""


EARLIEST_YEAR, LATEST_YEAR = 1800, 2199
EARLIEST_UNIX = 365 * 86400  # 1971-01-01T00:00:00Z


def _plausible(t: dt.datetime, value) -> dt.datetime:
    if not EARLIEST_YEAR <= t.year <= LATEST_YEAR:
        raise TimestampOutOfRange(f"timestamp out of range ({EARLIEST_YEAR}-{LATEST_YEAR}): {value!r}")
    return t


def parse_timestamp(value) -> dt.datetime:
    """A naive UTC ``datetime`` for ``value`` (see the module doc) within the plausible range; raises
    TimestampError (TimestampOutOfRange for a readable time outside the range)."""
    return _plausible(_parse(value), value)


def _parse(value) -> dt.datetime:
    if value is None:
        raise TimestampError("no timestamp")
    try:
        nan = bool(value != value)  # NaN, pandas NaT
    except (TypeError, ValueError):  # values that do not compare (arrays): rejected below
        nan = False
    if nan:
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, dt.datetime):
        return _naive_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, bool):
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)) or type(value).__module__ == "numpy":
        return _from_number(value)
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        return _naive_utc(value.to_pydatetime())
    if not isinstance(value, str):
        raise TimestampError(f"not a timestamp: {value!r}")
    s = value.strip()
    if not s:
        raise TimestampError("empty timestamp")
    if _YEAR.match(s):
        return dt.datetime(int(s), 1, 1)
    m = _YEAR_MONTH.match(s)
    if m:
        try:
            return dt.datetime(int(m.group(1)), int(m.group(2)), 1)
        except ValueError:
            raise TimestampError(f"not a timestamp: {value!r}") from None
    if _NUMBER.match(s):
        return _from_number(float(s) if any(c in s for c in ".eE") else int(s))
    try:
        return _naive_utc(dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        raise TimestampError(f"not a timestamp: {value!r}") from None


def _naive_utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def _from_number(v) -> dt.datetime:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TimestampError(f"not a timestamp: {v!r}") from None
    if math.isnan(f) or math.isinf(f):
        raise TimestampError(f"not a timestamp: {v!r}")
    if f.is_integer() and 1000 <= f <= 9999:
        return dt.datetime(int(f), 1, 1)
    if f < EARLIEST_UNIX:
        raise TimestampOutOfRange(f"unix seconds {v!r} fall before 1971: not a plausible time")
    try:
        return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=f)
    except OverflowError:
        raise TimestampOutOfRange(f"unix seconds out of range: {v!r}") from None


def check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, not {granularity!r}")
    return granularity


def period_of(t: dt.datetime | dt.date, granularity: str) -> str:
    """The period holding ``t``: ``"2016"`` for years, ``"2016-03"`` for months."""
    return f"{t.year:04d}" if granularity == "year" else f"{t.year:04d}-{t.month:02d}"


def normalize_period(text: str, granularity: str) -> str:
    """A user-given period bound in canonical form. For months, a bare year means its December."""
    s = str(text).strip()
    if _YEAR.match(s):
        return s if granularity == "year" else f"{s}-12"
    m = _YEAR_MONTH.match(s)
    if m and granularity == "month" and 1 <= int(m.group(2)) <= 12:
        return f"{m.group(1)}-{int(m.group(2)):02d}"
    want = "a year like 2014" if granularity == "year" else "a month like 2014-06 (or a year)"
    raise ValueError(f"period {text!r} does not fit granularity {granularity!r}: expected {want}")


def period_bounds(period: str, granularity: str) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of a period."""
    if granularity == "year":
        y = int(period)
        return dt.date(y, 1, 1), dt.date(y, 12, 31)
    y, m = (int(x) for x in period.split("-"))
    return dt.date(y, m, 1), dt.date(y, m, calendar.monthrange(y, m)[1])


def next_period(period: str, granularity: str) -> str:
    if granularity == "year":
        return f"{int(period) + 1:04d}"
    y, m = (int(x) for x in period.split("-"))
    return f"{y + (m == 12):04d}-{m % 12 + 1:02d}"


@dataclass
class StepPlan:
    """One step before it is built: its label, inclusive dates and the periods it covers.

    ``periods`` lists the periods the step covers that hold data (all of them for a range step
    whose bounds come from ``step_ends``; gaps between them are part of its range).
    """

    label: str
    start: str
    end: str
    periods: list[str] = field(default_factory=list)


def plan_steps(
    periods: list[str],
    granularity: str,
    *,
    aggregate_until: str | None = None,
    step_ends: list[str] | None = None,
) -> tuple[list[StepPlan], dict[str, int]]:
    """Group the periods present in the data into steps.

    Returns the steps (ordered) and a map period -> step index; periods mapped to no step (after
    the last of ``step_ends``) are absent from the map, and the builder drops and counts them.

    - default: one step per period present (a period without data is no step);
    - ``aggregate_until="2014"``: periods up to 2014 merge into a first step labelled ``"≤2014"``;
    - ``step_ends=["2014", "2015", "2018"]``: step i covers the periods after end i-1 up to end i
      (the first: everything up to end 0, labelled ``"≤2014"``), labelled by its single period
      (``"2015"``) or its range (``"2016–2018"``); steps with no data are left out.
    """
    check_granularity(granularity)
    present = sorted(set(periods))
    if step_ends:
        ends = [normalize_period(e, granularity) for e in step_ends]
        if any(b <= a for a, b in zip(ends, ends[1:])):
            raise ValueError(f"step ends must increase strictly: {', '.join(ends)}")
        bounds: list[tuple[str | None, str, str]] = []  # (first period or None = open, last, label)
        prev = None
        for i, end in enumerate(ends):
            if i == 0:
                bounds.append((None, end, f"≤{end}"))
            else:
                first = next_period(prev, granularity)
                bounds.append((first, end, end if first == end else f"{first}–{end}"))
            prev = end
        return _assign(present, bounds, granularity)
    if aggregate_until is not None:
        agg = normalize_period(aggregate_until, granularity)
        bounds = []
        if any(p <= agg for p in present):
            bounds.append((None, agg, f"≤{agg}"))
        bounds += [(p, p, p) for p in present if p > agg]
        return _assign(present, bounds, granularity)
    return _assign(present, [(p, p, p) for p in present], granularity)


def _assign(present, bounds, granularity):
    plans: list[StepPlan] = []
    mapping: dict[str, int] = {}
    for first, last, label in bounds:
        covered = [p for p in present if (first is None or p >= first) and p <= last]
        if not covered:
            continue
        start = period_bounds(first if first is not None else covered[0], granularity)[0]
        end = period_bounds(last, granularity)[1]
        for p in covered:
            mapping[p] = len(plans)
        plans.append(StepPlan(label=label, start=start.isoformat(), end=end.isoformat(), periods=covered))
    return plans, mapping


__all__ = [
    "GRANULARITIES",
    "StepPlan",
    "TimestampError",
    "check_granularity",
    "normalize_period",
    "next_period",
    "parse_timestamp",
    "period_bounds",
    "period_of",
    "plan_steps",
]
