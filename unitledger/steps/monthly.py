"""The monthly step: the published daily per-feature tables (cost_per_intent, cost_per_success,
cost_breakdown) rolled up into the monthly ones; and the AI token rows billed for a charge period
longer than a day (a month, as some providers bill) allocated over every call of their period
(allocate_long_periods: allocation_pools_monthly, allocated_costs_monthly)."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from schemas.allocation import AllocatedCostsMonthly, AllocationPoolsMonthly, FullyLoadedCosts
from schemas.monthly import BILLING_PERIOD, CostBreakdownMonthly, CostPerIntentMonthly, CostPerSuccessMonthly
from unitledger import months
from unitledger.checks.conservation import allocated_costs_check, allocation_conservation_check, shared_cost_check
from unitledger.checks.validation import CheckOutcome, validate
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.model import requests
from unitledger.model.allocation import (
    MONTHLY,
    BillingAllocation,
    allocate_billing,
    allocated_costs,
    classify_for_allocation,
    fully_loaded_costs,
    optimizations,
)
from unitledger.model.decisions import reaggregate_cost_breakdown
from unitledger.model.features import GRAIN, reaggregate_cost_per_intent, reaggregate_cost_per_success
from unitledger.model.requests import in_dates
from unitledger.sources.ai_usage import classify_usage
from unitledger.sources.events import scan_staged_calls
from unitledger.sources.focus import scan_staged_focus
from unitledger.steps.result import StepResult, money_total
from unitledger.warehouse.manifest import Manifest, read_manifest
from unitledger.warehouse.publish import Publication, Spill, clear_scratch, polars_schema


# monthly table → (daily table it rolls up, re-aggregation)
MONTHLY_TABLES = {
    "cost_per_intent_monthly": (CostPerIntentMonthly, "cost_per_intent", reaggregate_cost_per_intent),
    "cost_per_success_monthly": (CostPerSuccessMonthly, "cost_per_success", reaggregate_cost_per_success),
    "cost_breakdown_monthly": (CostBreakdownMonthly, "cost_breakdown", reaggregate_cost_breakdown),  # turns bucket kept
}

MONTHLY_GRAIN = [BILLING_PERIOD, *(c for c in GRAIN if c != "date")]

# The allocation of token rows longer than a day, by the month of their ChargePeriodStart.
ALLOCATION_TABLES = {
    "allocation_pools_monthly": AllocationPoolsMonthly,
    "allocated_costs_monthly": AllocatedCostsMonthly,
    "fully_loaded_costs_monthly": FullyLoadedCosts,  # opt-in: [allocation] fully_loaded
}


def fully_loaded_inputs(layout: Layout, settings: Settings, published: Manifest, lo: date, hi: date) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(shared, driver) of model.allocation.fully_loaded_costs for the months [lo, hi): the
    EffectiveCost of the FOCUS rows without a request id classified shared (not AI token usage)
    by billing period, and the published request_costs of the months' days with one billing
    account, by date."""
    month = pl.col("BillingPeriodStart").dt.strftime("%Y-%m")
    rows = scan_staged_focus(layout).filter(
        pl.col("x_RequestId").is_null() & pl.col("BillingPeriodStart").dt.date().is_between(pl.lit(lo), pl.lit(hi), closed="left")
    )
    shared = (
        classify_usage(rows, settings.allocation)
        .filter(pl.col("usage_class") == "shared")
        .join(rows.select("source_file", "source_line", "BillingPeriodStart"), on=["source_file", "source_line"], how="inner")
        .select(billing_period=month, billing_account_id=pl.col("BillingAccountId"), billing_currency=pl.col("BillingCurrency"), shared_cost=pl.col("EffectiveCost"))
    )
    days = [d.isoformat() for d in months.days(lo, hi - timedelta(days=1))]
    driver = (
        published.scan(layout, "request_costs", days)
        .filter(pl.col("billing_account_id").is_not_null() & pl.col("billing_currency").is_not_null() & pl.col("effective_cost").is_not_null())
        .select(
            billing_period=pl.col("date").dt.strftime("%Y-%m"), billing_account_id=pl.col("billing_account_id"),
            billing_currency=pl.col("billing_currency"), feature_tag=pl.col("feature_tag"),
            model_version=pl.col("model_version"), prompt_version=pl.col("prompt_version"), token_cost=pl.col("effective_cost"),
        )
    )  # fmt: skip
    return shared, driver


def allocate_long_periods(layout: Layout, settings: Settings, lo: date, hi: date) -> BillingAllocation | None:
    """The token rows without a request id charged within [lo, hi) whose charge period is longer
    than a day (model.allocation.classify_for_allocation, MONTHLY), allocated over every call of
    their charge periods (read whole, COPY_DAYS either side, as the daily step reads its days),
    the requests' own rows of those days leaving out the token types they bill. None when there
    is no such row (the usual case: nothing more is read)."""
    focus = scan_staged_focus(layout)
    long_rows = classify_for_allocation(
        focus.filter(in_dates("charge_date", lo, hi) & pl.col("x_RequestId").is_null()), settings.allocation, MONTHLY
    )
    first, last = long_rows.select(pl.col("ChargePeriodStart").min(), pl.col("ChargePeriodEnd").max()).collect().row(0)
    if first is None:
        return None
    days = requests.with_lookaround(first.date(), last.date() + timedelta(days=1))
    billing = pl.concat(
        [
            requests.without_request_conflicts(focus.filter(in_dates("charge_date", *days) & pl.col("x_RequestId").is_not_null())),
            focus.filter(in_dates("charge_date", lo, hi) & pl.col("x_RequestId").is_null()),
        ]
    )
    calls = requests.dedupe_calls(scan_staged_calls(layout).filter(in_dates("call_date", *days)))
    return allocate_billing(billing, calls, settings.allocation, MONTHLY)


def _spill_long_period_allocation(layout: Layout, settings: Settings, lo: date, hi: date, spills: dict[str, Spill]) -> list:
    """allocate_long_periods' pools and FOCUS split rows written to `spills` (by billing period,
    empty when there is no such row), with their checks: the pools' allocated cost is the calls'
    shares, and every origin row's split rows sum back to it."""
    run = allocate_long_periods(layout, settings, lo, hi)
    if run is None:
        for name in ("allocation_pools_monthly", "allocated_costs_monthly"):
            spills[name].sink(pl.LazyFrame(schema=polars_schema(ALLOCATION_TABLES[name])))
    else:
        period = pl.col("charge_period_start").dt.strftime("%Y-%m")
        origin = scan_staged_focus(layout).filter(in_dates("charge_date", lo, hi) & pl.col("x_RequestId").is_null())
        exported = allocated_costs(origin, run.tables.requests, run.tables.pools)
        pl.collect_all(
            [
                spills["allocation_pools_monthly"].sink(
                    run.tables.pools.with_columns(period.alias(BILLING_PERIOD)).select(list(polars_schema(AllocationPoolsMonthly))), lazy=True
                ),
                spills["allocated_costs_monthly"].sink(
                    exported.with_columns(pl.col("ChargePeriodStart").dt.strftime("%Y-%m").alias(BILLING_PERIOD))
                    .select(list(polars_schema(AllocatedCostsMonthly))),
                    lazy=True,
                ),
            ],
            optimizations=optimizations(),
        )
    pools = spills["allocation_pools_monthly"].scan(polars_schema(AllocationPoolsMonthly))
    split = spills["allocated_costs_monthly"].scan(polars_schema(AllocatedCostsMonthly))
    return [
        allocation_conservation_check(pools, split.filter(pl.col("AllocatedResourceId").is_not_null()).select(
            billing_currency=pl.col("BillingCurrency"), billed_cost=pl.col("BilledCost"),
            effective_cost=pl.col("EffectiveCost"), list_cost=pl.col("ListCost"),
        )),
        allocated_costs_check(split, pools),
    ]


def build_monthly_tables(layout: Layout, first_month: date, last_month: date, settings: Settings) -> StepResult:
    """Roll the published daily cost_per_intent, cost_per_success and cost_breakdown partitions of
    the months from `first_month` to `last_month` up into the monthly tables (sums added, ratios and
    interval recomputed); validate; publish every month's partition only if every check passed.

    Reads the daily tables only, never staging or landing: one code path from raw data."""
    result = StepResult()
    periods = months.months(first_month, last_month)
    keys = [months.period_key(m) for m in periods]
    day_keys = [d.isoformat() for d in months.days(periods[0], months.month_end(periods[-1]))]
    clear_scratch(layout.tmp, layout.warehouse)
    spills = {name: Spill(layout.tmp, name, BILLING_PERIOD, pl.String) for name in [*MONTHLY_TABLES, *ALLOCATION_TABLES]}
    try:
        with result.timed("allocate"):
            lo, hi = periods[0], months.next_month(periods[-1])
            allocation_checks = _spill_long_period_allocation(layout, settings, lo, hi, spills)
            published = read_manifest(layout)  # one version of the daily tables for every rollup
            if settings.allocation.fully_loaded:
                shared, driver = fully_loaded_inputs(layout, settings, published, lo, hi)
                spills["fully_loaded_costs_monthly"].sink(fully_loaded_costs(shared, driver))
                allocation_checks.append(shared_cost_check(spills["fully_loaded_costs_monthly"].scan(polars_schema(FullyLoadedCosts)), shared))
            else:
                spills["fully_loaded_costs_monthly"].sink(pl.LazyFrame(schema=polars_schema(FullyLoadedCosts)))
                allocation_checks.append(CheckOutcome("shared_cost_spread", True, "[allocation] fully_loaded is off: the table is empty"))
        with result.timed("rollup"):
            for name, (model, daily_name, reaggregate) in MONTHLY_TABLES.items():
                daily = published.scan(layout, daily_name, day_keys)
                by_month = daily.with_columns(pl.col("date").dt.strftime("%Y-%m").alias(BILLING_PERIOD))
                spills[name].sink(reaggregate(by_month, MONTHLY_GRAIN))
        with result.timed("validate"):
            for name, (model, _, _) in MONTHLY_TABLES.items():
                result.checks[name] = [validate(model, spills[name].scan(polars_schema(model)))]
            for name, model in ALLOCATION_TABLES.items():
                result.checks[name] = [validate(model, spills[name].scan(polars_schema(model)))]
            result.checks["allocation_pools_monthly"] += [c for c in allocation_checks if c.name != "shared_cost_spread"]
            result.checks["fully_loaded_costs_monthly"] += [c for c in allocation_checks if c.name == "shared_cost_spread"]
        if result.passed:
            with result.timed("write"):
                publication = Publication(layout)
                for name, (model, _, _) in MONTHLY_TABLES.items():
                    frame = spills[name].scan(polars_schema(model))
                    meta: dict = {"billing_periods": f"{keys[0]}..{keys[-1]}", "total_cost": money_total(frame, "total_cost")}
                    meta["dagster/row_count"] = sum(publication.add(name, spills[name], keys).values())
                    result.tables[name] = meta
                for name in ALLOCATION_TABLES:
                    rows = publication.add(name, spills[name], keys)
                    result.tables[name] = {"billing_periods": f"{keys[0]}..{keys[-1]}", "dagster/row_count": sum(rows.values())}
                publication.commit()
        return result
    finally:
        for spill in spills.values():
            spill.cleanup()
