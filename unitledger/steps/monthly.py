"""The monthly step: the published daily per-feature tables (cost_per_intent, cost_per_success,
cost_breakdown) rolled up into the monthly ones."""

from __future__ import annotations

from datetime import date

import polars as pl

from schemas.monthly import BILLING_PERIOD, CostBreakdownMonthly, CostPerIntentMonthly, CostPerSuccessMonthly
from unitledger import months
from unitledger.checks.validation import validate
from unitledger.layout import Layout
from unitledger.model.decisions import reaggregate_cost_breakdown
from unitledger.model.features import GRAIN, reaggregate_cost_per_intent, reaggregate_cost_per_success
from unitledger.steps.result import StepResult, money_total
from unitledger.warehouse.manifest import read_manifest
from unitledger.warehouse.publish import Publication, Spill, clear_scratch, polars_schema


# monthly table → (daily table it rolls up, re-aggregation)
MONTHLY_TABLES = {
    "cost_per_intent_monthly": (CostPerIntentMonthly, "cost_per_intent", reaggregate_cost_per_intent),
    "cost_per_success_monthly": (CostPerSuccessMonthly, "cost_per_success", reaggregate_cost_per_success),
    "cost_breakdown_monthly": (CostBreakdownMonthly, "cost_breakdown", reaggregate_cost_breakdown),  # turns bucket kept
}

MONTHLY_GRAIN = [BILLING_PERIOD, *(c for c in GRAIN if c != "date")]


def build_monthly_tables(layout: Layout, first_month: date, last_month: date) -> StepResult:
    """Roll the published daily cost_per_intent, cost_per_success and cost_breakdown partitions of
    the months from `first_month` to `last_month` up into the monthly tables (sums added, ratios and
    interval recomputed); validate; publish every month's partition only if every check passed.

    Reads the daily tables only, never staging or landing: one code path from raw data."""
    result = StepResult()
    periods = months.months(first_month, last_month)
    keys = [months.period_key(m) for m in periods]
    day_keys = [d.isoformat() for d in months.days(periods[0], months.month_end(periods[-1]))]
    clear_scratch(layout.tmp, layout.warehouse)
    spills = {name: Spill(layout.tmp, name, BILLING_PERIOD, pl.String) for name in MONTHLY_TABLES}
    try:
        with result.timed("rollup"):
            published = read_manifest(layout)  # one version of the daily tables for every rollup
            for name, (model, daily_name, reaggregate) in MONTHLY_TABLES.items():
                daily = published.scan(layout, daily_name, day_keys)
                by_month = daily.with_columns(pl.col("date").dt.strftime("%Y-%m").alias(BILLING_PERIOD))
                spills[name].sink(reaggregate(by_month, MONTHLY_GRAIN))
        with result.timed("validate"):
            for name, (model, _, _) in MONTHLY_TABLES.items():
                result.checks[name] = [validate(model, spills[name].scan(polars_schema(model)))]
        if result.passed:
            with result.timed("write"):
                publication = Publication(layout)
                for name, (model, _, _) in MONTHLY_TABLES.items():
                    frame = spills[name].scan(polars_schema(model))
                    meta: dict = {"billing_periods": f"{keys[0]}..{keys[-1]}", "total_cost": money_total(frame, "total_cost")}
                    meta["dagster/row_count"] = sum(publication.add(name, spills[name], keys).values())
                    result.tables[name] = meta
                publication.commit()
        return result
    finally:
        for spill in spills.values():
            spill.cleanup()
