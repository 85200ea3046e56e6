"""Freshness of the published tables: is yesterday built, are a closed week's labels in, does a
month's rollup have all its days. Read-only; the Dagster checks that use these only warn."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import polars as pl

from unitledger import months
from unitledger.layout import Layout
from unitledger.warehouse.manifest import read_manifest, scan_table


def missing_days(layout: Layout, table: str, wanted: Iterable[date]) -> list[date]:
    """The days of `wanted` without a published partition of the daily `table`."""
    published = set(read_manifest(layout).partitions(table))
    return [d for d in wanted if d.isoformat() not in published]


def expected_days(month: date, first_day: date, today: date) -> list[date]:
    """Days of `month` that should have a daily partition by `today`: from the month's first day
    (or the configured first day, if later) to yesterday at the latest."""
    lo, hi = max(months.month_start(month), first_day), min(months.month_end(month), today - timedelta(days=1))
    return months.days(lo, hi) if lo <= hi else []


def closed_week(today: date, grace_days: int) -> date:
    """Monday of the latest Monday–Sunday week that ended at least `grace_days` full days before
    `today`: labels land hours to days after the call, so a younger week is still filling in."""
    last_day = today - timedelta(days=grace_days + 1)
    sunday = last_day - timedelta(days=(last_day.weekday() + 1) % 7)
    return sunday - timedelta(days=6)


def label_coverage(layout: Layout, monday: date) -> pl.DataFrame:
    """Per feature over the week starting `monday`: intents, labeled intents, label_coverage."""
    week = [(monday + timedelta(days=i)).isoformat() for i in range(7)]
    return (
        scan_table(layout, "cost_per_success", week)
        .group_by("feature_tag")
        .agg(pl.col("intents").sum(), pl.col("labeled_intents").sum())
        .with_columns(label_coverage=pl.col("labeled_intents") / pl.col("intents"))
        .sort("feature_tag")
        .collect()
    )
