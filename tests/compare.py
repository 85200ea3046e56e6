"""Helpers for tests that build small warehouses and compare warehouses built by different routes."""

from __future__ import annotations

import shutil
from datetime import date

import polars as pl
from polars.testing import assert_frame_equal

from unitledger.layout import Layout
from tests.conftest import TODAY
from unitledger.warehouse.manifest import read_manifest

TABLES = [
    "request_costs",
    "intent_costs",
    "cost_per_intent",
    "cost_per_success",
    "cost_breakdown",
    "cost_per_intent_monthly",
    "cost_per_success_monthly",
    "cost_breakdown_monthly",
    "quarantine",
]


def read_table(layout: Layout, name: str) -> pl.DataFrame:
    """Every row of a published table (partition key restored), in a canonical order."""
    published = read_manifest(layout)
    assert published.partitions(name) or name == "quarantine", f"{name}: no partitions in {layout.warehouse}"
    frame = published.scan(layout, name).collect()
    exact = [c for c, t in frame.schema.items() if not t.is_float()]
    return frame.sort(exact, nulls_last=True)


def read_held(layout: Layout) -> dict[str, pl.DataFrame]:
    """The rows the daily runs held back (late billing, the calls of intents in two currencies), per
    day: the quarantine's non-empty partitions of the daily runs (steps.daily.held_partition)."""
    from unitledger.steps.daily import held_partition

    published = read_manifest(layout)
    days = {held_partition(p.split("=", 1)[1]): p.split("=", 1)[1] for p in published.partitions("quarantine") if p.startswith("daily=")}
    return {day: published.scan(layout, "quarantine", [p]).collect() for p, day in days.items() if published.files("quarantine", [p])}


def assert_same_tables(left: Layout, right: Layout, tables: list[str] = TABLES) -> None:
    """Same rows in every table: exact for keys, counts and money; floats to 1e-12 relative
    (sums of squares may be added in another order)."""
    for name in tables:
        a, b = read_table(left, name), read_table(right, name)
        assert a.height > 0 or name == "quarantine", name
        try:
            assert_frame_equal(a, b, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)
        except AssertionError as exc:
            raise AssertionError(f"{name} differs: {exc}") from exc


def copy_landing(source: Layout, target: Layout) -> None:
    """The landing folders with their modification times (they rank FOCUS deliveries)."""
    shutil.copytree(source.data_dir / "landing", target.data_dir / "landing", copy_function=shutil.copy2)


def staged_copy(landed: Layout, root, config) -> Layout:
    """A new data root under `root` with `landed`'s landing files, staged (settings from `config`)."""
    from unitledger.config import load_settings
    from unitledger.steps.staging import stage_billing, stage_events

    layout = Layout(root / "data")
    copy_landing(landed, layout)
    assert stage_billing(layout, load_settings(config), TODAY).passed and stage_events(layout).passed
    return layout


def build_warehouse(layout: Layout, settings, start, end) -> None:
    """Stage the landing files, build the daily tables for [start, end] and their months, refresh
    the views: the pipeline steps the assets call, without Dagster (faster)."""
    from unitledger import months
    from unitledger.steps import daily, monthly, staging
    from unitledger.warehouse.views import refresh_views

    staging.stage_billing(layout, settings, TODAY)
    staging.stage_events(layout, settings.telemetry)
    assert daily.build_daily_tables(layout, settings, start, end).passed
    assert monthly.build_monthly_tables(layout, months.month_start(start), months.month_start(end), settings).passed
    refresh_views(layout)


def build_with_reconciliation(layout: Layout, settings, first=date(2026, 3, 2), last=date(2026, 3, 3)) -> None:
    """Stage, build the daily tables and both reconciliations for [first, last] (and its month),
    refresh the views; every step must pass its checks."""
    from unitledger import months
    from unitledger.steps import daily, reconciliation, staging
    from unitledger.warehouse.views import refresh_views

    assert staging.stage_billing(layout, settings, TODAY).passed
    assert staging.stage_events(layout, settings.telemetry).passed
    month = months.month_start(first)
    for result in (
        daily.build_daily_tables(layout, settings, first, last),
        reconciliation.build_reconciliation_daily(layout, settings, first, last),
        reconciliation.build_reconciliation(layout, settings, month, month),
    ):
        assert result.passed, result.failures()
    refresh_views(layout)
