"""Partitions: UTC days from the configured start date."""

import dagster as dg

from unitledger.config import load_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=load_settings().start_date.isoformat(), timezone="UTC"
)
