"""Partitions: UTC days and UTC calendar months from the configured start date."""

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
