"""Calendar months (UTC) as the monthly tables, the backfill and the nightly window use them."""

from __future__ import annotations

from datetime import date, timedelta


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    first = month_start(day)
    return first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)


def previous_month(day: date) -> date:
    return month_start(month_start(day) - timedelta(days=1))


def month_end(day: date) -> date:
    """Last day of the month of `day`."""
    return next_month(day) - timedelta(days=1)


def months(first: date, last: date) -> list[date]:
    """First days of the months from the month of `first` to the month of `last`, inclusive."""
    found, current = [], month_start(first)
    while current <= last:
        found.append(current)
        current = next_month(current)
    return found


def days(start: date, end_inclusive: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end_inclusive - start).days + 1)]


def period_key(day: date) -> str:
    """The billing period (monthly partition key) of `day`: YYYY-MM."""
    return f"{day.year:04d}-{day.month:02d}"


def ranges(chosen: set[date] | list[date]) -> list[tuple[date, date]]:
    """Days grouped into maximal runs of consecutive days: [(first, last), ...], in order."""
    found: list[tuple[date, date]] = []
    for day in sorted(set(chosen)):
        if found and day - found[-1][1] == timedelta(days=1):
            found[-1] = (found[-1][0], day)
        else:
            found.append((day, day))
    return found


def describe(chosen: set[date] | list[date]) -> str:
    """'2026-03-04..2026-03-06, 2026-03-09' for messages."""
    return ", ".join(a.isoformat() if a == b else f"{a}..{b}" for a, b in ranges(chosen))
