"""The monthly step: the published daily per-feature tables (cost_per_intent, cost_per_success,
cost_breakdown) rolled up into the monthly ones; and the AI token rows billed for a charge period
longer than a day (a month, as some providers bill) allocated over every call of their period
(allocate_long_periods: allocation_pools_monthly, allocated_costs_monthly)."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from schemas.allocation import AllocatedCostsMonthly, AllocationPoolsMonthly, FullyLoadedCosts
from schemas.monthly import BILLING_PERIOD, CostBreakdownMonthly, CostPerIntentMonthly, CostPerSuccessMonthly
from schemas.outputs import IntentCosts
from schemas.types import MONEY
from unitledger import months
from unitledger.checks.conservation import allocated_costs_check, allocation_conservation_check, month_shares_check, shared_cost_check
from unitledger.checks.validation import CheckOutcome, validate
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.model import intents, requests
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
from unitledger.model.features import GRAIN, Changed, reaggregate_cost_per_intent, reaggregate_cost_per_success
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
# The rollups that include the month-long token rows' shares (month_share_intents) → whether
# their token_cost counts labeled intents only.
MONTH_SHARE_TABLES = {"cost_per_intent_monthly": False, "cost_per_success_monthly": True}

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
        spills[MONTH_SHARES].sink(pl.LazyFrame(schema=SHARES_SCHEMA))
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
                spills[MONTH_SHARES].sink(
                    run.tables.requests.group_by("request_id", "billing_currency").agg(share=pl.col("effective_cost").sum()), lazy=True
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


# Scratch: the month-long token rows' EffectiveCost shares per request and currency, then per
# intent (place_shares), and the intents they change (changed_intents).
MONTH_SHARES = "month_shares"
SHARES_SCHEMA = {"request_id": pl.String, "billing_currency": pl.String, "share": MONEY}
PLACED, BEFORE, AFTER = "month_shares_placed", "month_share_intents_before", "month_share_intents_after"
PLACED_SCHEMA = {
    "session_id": pl.String, "intent_date": pl.Date, "billing_currency": pl.String, "share": MONEY,
    "outcome": pl.String, "reason": pl.String, BILLING_PERIOD: pl.String,
}  # fmt: skip


def place_shares(layout: Layout, settings: Settings, published: Manifest, shares: pl.LazyFrame, lo: date, hi: date) -> pl.LazyFrame:
    """The month-long token rows' shares per request (`shares`) summed per intent and currency and
    placed among the published intents of the months [lo, hi) (model.intents.place_month_shares),
    with billing_period, the month of the intent's date. A request's intent is found as the daily
    step finds it: intent_days over its session's call dates of the 2 x session_days before, from
    the published request_costs."""
    session_days = settings.bounds.session_days
    history = [d.isoformat() for d in months.days(lo - timedelta(days=2 * session_days), hi - timedelta(days=1))]
    request_days = published.scan(layout, "request_costs", history).select("request_id", "session_id", "date")
    shared = shares.join(request_days, on="request_id", how="left")
    sessions = shared.select("session_id").drop_nulls().unique()
    pairs = intents.session_dates(request_days.join(sessions, on="session_id", how="semi").rename({"date": "call_date"}))
    by_intent = (
        shared.join(intents.intent_days(pairs, session_days), left_on=["session_id", "date"], right_on=["session_id", "call_date"], how="left")
        .group_by("session_id", "intent_date", "billing_currency")
        .agg(pl.col("share").sum())
    )
    placed = intents.place_month_shares(by_intent, _month_intents(layout, published, sessions, lo, hi))
    return placed.with_columns(pl.col("intent_date").dt.strftime("%Y-%m").alias(BILLING_PERIOD)).select(list(PLACED_SCHEMA))


def _month_intents(layout: Layout, published: Manifest, sessions: pl.LazyFrame, lo: date, hi: date) -> pl.LazyFrame:
    """The published intent_costs rows of `sessions` dated within [lo, hi)."""
    days = [d.isoformat() for d in months.days(lo, hi - timedelta(days=1))]
    return published.scan(layout, "intent_costs", days).join(sessions, on="session_id", how="semi")


def changed_intents(layout: Layout, settings: Settings, published: Manifest, placed: pl.LazyFrame, lo: date, hi: date) -> Changed:
    """(before, after): the intents of the months [lo, hi) that `placed` (place_shares) adds
    shares to, as published and with them (model.intents.add_month_shares), with billing_period."""
    sessions = placed.filter(pl.col("reason").is_null()).select("session_id").unique()
    month_intents = _month_intents(layout, published, sessions, lo, hi)
    after = intents.add_month_shares(month_intents, placed, settings.labor_table())
    before = month_intents.join(after.select("session_id", "date"), on=["session_id", "date"], how="semi")
    month = pl.col("date").dt.strftime("%Y-%m").alias(BILLING_PERIOD)
    return before.with_columns(month), after.with_columns(month)


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
    spills |= {name: Spill(layout.tmp, name, "billing_currency", pl.String) for name in (MONTH_SHARES, PLACED)}
    spills |= {name: Spill(layout.tmp, name, BILLING_PERIOD, pl.String) for name in (BEFORE, AFTER)}
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
            # The month-long rows' shares join the intents of their calls (spilled: when a
            # provider bills only by month, that is every intent of the month), and those
            # intents, as they are now, replace their daily sums in the rollups.
            changed = None
            shares = spills[MONTH_SHARES].scan(SHARES_SCHEMA)
            if shares.select(pl.len()).collect().item() > 0:
                spills[PLACED].sink(place_shares(layout, settings, published, shares, lo, hi))
                before, after = changed_intents(layout, settings, published, spills[PLACED].scan(PLACED_SCHEMA), lo, hi)
                pl.collect_all([spills[BEFORE].sink(before, lazy=True), spills[AFTER].sink(after, lazy=True)])
                intent_schema = polars_schema(IntentCosts) | {BILLING_PERIOD: pl.String}
                changed = (spills[BEFORE].scan(intent_schema), spills[AFTER].scan(intent_schema))
            placed = spills[PLACED].scan(PLACED_SCHEMA)
            for name, (model, daily_name, reaggregate) in MONTHLY_TABLES.items():
                daily = published.scan(layout, daily_name, day_keys)
                by_month = daily.with_columns(pl.col("date").dt.strftime("%Y-%m").alias(BILLING_PERIOD))
                if name in MONTH_SHARE_TABLES:
                    spills[name].sink(reaggregate(by_month, MONTHLY_GRAIN, changed))
                else:
                    spills[name].sink(reaggregate(by_month, MONTHLY_GRAIN))
        with result.timed("validate"):
            for name, (model, _, _) in MONTHLY_TABLES.items():
                result.checks[name] = [validate(model, spills[name].scan(polars_schema(model)))]
            for name, model in ALLOCATION_TABLES.items():
                result.checks[name] = [validate(model, spills[name].scan(polars_schema(model)))]
            pools = spills["allocation_pools_monthly"].scan(polars_schema(AllocationPoolsMonthly))
            for name, labeled_only in MONTH_SHARE_TABLES.items():
                daily = published.scan(layout, MONTHLY_TABLES[name][1], day_keys).with_columns(
                    pl.col("date").dt.strftime("%Y-%m").alias(BILLING_PERIOD)
                )
                monthly = spills[name].scan(polars_schema(MONTHLY_TABLES[name][0]))
                result.checks[name].append(month_shares_check(monthly, daily, placed, pools, labeled_only))
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
