"""Partitions: UTC days and UTC calendar months from the configured start date."""

from datetime import date, datetime, time, timezone

import dagster as dg

from unitledger.config import load_settings

_START = load_settings().start_date

daily_partitions = dg.DailyPartitionsDefinition(start_date=_START.isoformat(), timezone="UTC")

# Keys are billing periods, YYYY-MM. The month of the start date is the first (partial if the start
# date is not the 1st); end_offset=1 makes the current month a partition, so month-to-date rollups
# exist while the month runs.
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=_START.strftime("%Y-%m"), timezone="UTC", fmt="%Y-%m", end_offset=1
)


def last_daily_key(today: date) -> str | None:
    """The last daily partition on `today` (yesterday, UTC), None before the first day has ended:
    from the given today (the Warehouse resource's), never from the clock."""
    with dg.partition_loading_context(effective_dt=datetime.combine(today, time(), tzinfo=timezone.utc)):
        return daily_partitions.get_last_partition_key()
