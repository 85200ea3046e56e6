"""Blocking checks that every billed cent is counted exactly once: the daily tables' conservation
against the FOCUS rows and one currency per intent; the reconciliation's conservation against its
input rows, its parts adding up to its totals (delta) and every quarantined FOCUS row placed in a
billing period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import polars as pl

from unitledger.checks.validation import CheckOutcome
from unitledger.config import Bounds
from unitledger.layout import Layout
from unitledger.model import requests
from unitledger.model.intents import mixed_currency_intents
from unitledger.sources.focus import scan_quarantined_focus


# --- daily tables ---------------------------------------------------------------------------------


def totals_that_differ(
    ours: pl.LazyFrame, theirs: pl.LazyFrame, on: list[str], measures: list[str], suffix: str, missing_differs: bool = False
) -> pl.DataFrame:
    """The keys on which two sets of totals disagree: `ours` and `theirs` (one row per `on` key,
    `measures` named alike) full-joined on `on` (nulls equal), the rows where a measure differs,
    sorted, with theirs suffixed `suffix`. A key missing on one side counts as 0, or as a
    difference with missing_differs (every key must be on both sides)."""

    def differs(m: str) -> pl.Expr:
        if missing_differs:
            return pl.col(m).is_null() | pl.col(f"{m}{suffix}").is_null() | (pl.col(m) != pl.col(f"{m}{suffix}"))
        return pl.col(m).fill_null(0) != pl.col(f"{m}{suffix}").fill_null(0)

    return (
        ours.join(theirs, on=on, how="full", coalesce=True, nulls_equal=True, suffix=suffix)
        .filter(pl.any_horizontal([differs(m) for m in measures]))
        .sort(on, nulls_last=True)
        .collect()
    )


def outcome(name: str, found: pl.DataFrame, passed: str, failed: Callable[[dict], str], count: str = "mismatches") -> CheckOutcome:
    """A check's outcome from the rows it found wrong: passes when there are none, else names how
    many and describes the first (`failed(first row)`)."""
    if found.is_empty():
        return CheckOutcome(name, True, passed)
    return CheckOutcome(name, False, failed(found.row(0, named=True)), {count: found.height})


def collected_by_bucket(query: Callable[[int], pl.LazyFrame], buckets: int) -> pl.LazyFrame:
    """The (small) results of query(bucket) for each hash bucket, collected one after the other
    and stacked: memory follows one bucket's rows."""
    return pl.concat([query(b).collect() for b in range(buckets)]).lazy()


def request_costs_conservation_check(
    request_costs: pl.LazyFrame, billing: pl.LazyFrame, calls: pl.LazyFrame, billing_only: pl.LazyFrame,
    start: date, end: date, bounds: Bounds, buckets: int = 1, allocated: pl.LazyFrame | None = None,
) -> CheckOutcome:
    """Per day and currency, request_costs' cost equals the FOCUS rows with a request id dated by
    their request, summed apart from the join (model.requests.billed_cost_by_assigned_day), exactly:
    `billing` the rows within billing_delay_days of the days, `calls` one (request_id, call_date) per
    request called on the days, `billing_only` the billing-only rows of requests dated on the days
    (rows of conflicting requests left out of both); plus `allocated` (the allocated shares per date
    and currency, summed from the allocation itself: model.allocation.allocated_by_day). The FOCUS side is summed one hash bucket of
    requests at a time (memory), then the buckets added; on hashed request ids first (faster), and a
    mismatch found so is re-checked on the ids themselves before it is reported, so a hash collision
    can never fail a good day."""
    money = ["billed_cost", "effective_cost", "list_cost"]
    ours = (
        request_costs.filter(pl.col("billing_rows") > 0)
        .group_by("date", "billing_currency")
        .agg([pl.col(c).sum() for c in money])
        .collect()
        .lazy()
    )

    def mismatches(hashed: bool) -> pl.DataFrame:
        by_bucket = collected_by_bucket(
            lambda b: requests.billed_cost_by_assigned_day(
                billing.filter(requests.in_bucket("x_RequestId", b, buckets)),
                calls.filter(requests.in_bucket("request_id", b, buckets)),
                billing_only.filter(requests.in_bucket("x_RequestId", b, buckets)),
                start,
                end,
                bounds,
                hashed,
            ),
            buckets,
        )
        if allocated is not None:
            shares = allocated.filter(requests.in_dates("date", start, end)).select("date", "billing_currency", *money)
            by_bucket = pl.concat([by_bucket.select("date", "billing_currency", *money), shares])
        theirs = by_bucket.group_by("date", "billing_currency").agg([pl.col(c).sum() for c in money])
        return totals_that_differ(ours, theirs, ["date", "billing_currency"], money, "_focus")

    compared = mismatches(hashed=True)
    if not compared.is_empty():
        compared = mismatches(hashed=False)
    return outcome(
        "conservation", compared, "request_costs holds every billed cent of its days exactly once",
        lambda first: f"{compared.height} (day, currency) totals differ; first {first['date']} {first['billing_currency']}: "
        f"request_costs {first['effective_cost']} vs FOCUS {first['effective_cost_focus']} (EffectiveCost)",
    )


def allocation_conservation_check(pools: pl.LazyFrame, by_day: pl.LazyFrame) -> CheckOutcome:
    """Per currency, the cost the allocation_pools rows say they allocated equals the shares the
    requests received (model.allocation.allocated_by_day, summed over the calls' dates), for
    every cost column: a share lost or doubled by a join shows here. (Each pool row's own
    cost = allocated + unlogged + unmatched is a dataframe check of its schema.)"""
    money = ["billed_cost", "effective_cost", "list_cost"]
    said = pools.group_by("billing_currency").agg([pl.col(f"allocated_{c}").sum().alias(c) for c in money])
    given = by_day.group_by("billing_currency").agg([pl.col(c).sum() for c in money])
    differ = totals_that_differ(said, given, ["billing_currency"], money, "_shares")
    return outcome(
        "allocation_conservation", differ, "every allocated cent of the pools is one request's share, exactly once",
        lambda first: f"{differ.height} currency totals differ; first {first['billing_currency']}: pools allocated "
        f"{first['billed_cost']} vs request shares {first['billed_cost_shares']} (BilledCost)",
    )


def allocated_costs_check(split: pl.LazyFrame, pools: pl.LazyFrame) -> CheckOutcome:
    """The FOCUS allocated_costs export sums back to its origin rows: for every origin row the
    pools allocated (status allocated, over_logged, logged_share), its split rows' BilledCost,
    EffectiveCost and ListCost add up to the row's, exactly; no split row of another row."""
    from schemas.allocation import ALLOCATED_STATUSES

    origin = ["source_file", "source_line"]
    focus = {"BilledCost": "billed_cost", "EffectiveCost": "effective_cost", "ListCost": "list_cost"}
    sums = split.group_by(origin).agg([pl.col(f).sum().alias(ours) for f, ours in focus.items()])
    rows = pools.filter(pl.col("status").is_in(ALLOCATED_STATUSES)).select(*origin, *focus.values())
    differ = totals_that_differ(rows, sums, origin, list(focus.values()), "_split", missing_differs=True)
    return outcome(
        "allocated_costs_sum_back", differ, "every allocated origin row's split rows sum back to it, exactly",
        lambda first: f"{differ.height} origin row(s) whose allocated_costs split rows do not sum back to them; first "
        f"{first['source_file']} line {first['source_line']}: BilledCost {first['billed_cost']} vs split {first['billed_cost_split']}",
    )


def shared_cost_check(frame: pl.LazyFrame, shared: pl.LazyFrame) -> CheckOutcome:
    """Per account, currency and month, the fully loaded view's shares sum to the shared cost."""
    key = ["billing_period", "billing_account_id", "billing_currency"]
    spread = frame.group_by(key).agg(pl.col("shared_cost_share").sum().alias("shared_cost"))
    billed = shared.group_by(key).agg(pl.col("shared_cost").sum())
    differ = totals_that_differ(billed, spread, key, ["shared_cost"], "_share")
    return outcome(
        "shared_cost_spread", differ, "every account's shared cost is spread over its features exactly",
        lambda first: f"{differ.height} account month(s) whose shares do not sum to their shared cost; first {first['billing_account_id']} "
        f"{first['billing_period']} {first['billing_currency']}: {first['shared_cost']} vs {first['shared_cost_share']}",
    )


def single_currency_check(calls: pl.LazyFrame, buckets: int = 1) -> CheckOutcome:
    """An intent's cost is one currency's: the guard behind the daily step's quarantine of intents
    billed in two currencies. `calls`: the calls of the intents published (model.intents.
    intent_calls: session_id, intent_date, billing_currency). Sessions are grouped one hash bucket
    at a time (memory)."""
    mixed = collected_by_bucket(
        lambda b: mixed_currency_intents(calls.filter(requests.in_bucket("session_id", b, buckets))).select("session_id", "intent_date"),
        buckets,
    )
    return single_currency_outcome(mixed.collect())


def single_currency_outcome(mixed: pl.DataFrame) -> CheckOutcome:
    """single_currency_check's outcome from the intents found billed in two currencies (`mixed`:
    session_id, intent_date), e.g. computed in the step's own pass over the intents."""
    if mixed.is_empty():
        return CheckOutcome("single_currency", True, "every intent is billed in one currency")
    first = mixed.sort("session_id", "intent_date").head(5)
    shown = ", ".join(f"{s} ({d})" for s, d in first.iter_rows())
    return CheckOutcome("single_currency", False, f"{mixed.height} intent(s) billed in more than one currency (first: {shown})")


# --- reconciliation -------------------------------------------------------------------------------


def reconciliation_conservation_check(
    figures: pl.LazyFrame, rows: pl.LazyFrame, held: pl.LazyFrame, key: str, row_key: pl.Expr, held_key: pl.Expr
) -> CheckOutcome:
    """Per `key` (billing period or date) and currency, the output's totals and row counts equal
    those of the input rows (current staged FOCUS rows and current quarantined rows, `key` given
    by `row_key` / `held_key`), summed straight from the inputs: a row lost or doubled shows here."""
    by = [key]
    inputs = pl.concat(
        [
            rows.select(
                row_key.alias(key), billing_currency=pl.col("BillingCurrency"),
                billed=pl.col("BilledCost"), effective=pl.col("EffectiveCost"), staged=pl.lit(1), held=pl.lit(0),
            ),
            held.select(
                held_key.alias(key), billing_currency=pl.col("billing_currency"),
                billed=pl.col("billed_cost"), effective=pl.col("effective_cost"), staged=pl.lit(0), held=pl.lit(1),
            ),
        ]
    ).group_by(*by, "billing_currency").agg(
        billed_input=pl.col("billed").sum(),
        effective_input=pl.col("effective").sum(),
        rows_input=pl.col("staged").sum().cast(pl.Int64),
        held_input=pl.col("held").sum().cast(pl.Int64),
    )
    outputs = figures.group_by(*by, "billing_currency").agg(
        billed_input=pl.col("billed_total").sum(),
        effective_input=pl.col("effective_total").sum(),
        rows_input=pl.col("billing_rows").sum(),
        held_input=pl.col("quarantined_rows").sum(),
    )
    measures = ["billed_input", "effective_input", "rows_input", "held_input"]
    differ = totals_that_differ(outputs, inputs, [*by, "billing_currency"], measures, "_expected")
    return outcome(
        "conservation", differ, "every current FOCUS row (staged or quarantined) is counted once, to the last digit",
        lambda first: f"{differ.height} ({key}, currency) totals differ from the input rows; first {first[key]} {first['billing_currency']}: "
        f"billed_total {first['billed_input']} vs FOCUS {first['billed_input_expected']}, "
        f"rows {first['rows_input']}+{first['held_input']} vs {first['rows_input_expected']}+{first['held_input_expected']}",
    )


def delta_check(figures: pl.LazyFrame) -> CheckOutcome:
    """Every row's parts add up to its totals exactly: delta and effective_delta are 0."""
    uneven = figures.filter((pl.col("delta") != 0) | (pl.col("effective_delta") != 0)).collect()
    return outcome(
        "delta_zero", uneven, "every row's parts add up to its billed and effective totals exactly",
        lambda first: f"{uneven.height} row(s) whose parts do not add up; first {first['billing_period']} {first['billing_account_id']} "
        f"{first['invoice_id']} {first['service_provider_name']} {first['billing_currency']}: "
        f"delta {first['delta']}, effective_delta {first['effective_delta']}",
        count="uneven_rows",
    )


def placed_check(layout: Layout) -> CheckOutcome:
    """Every current quarantined FOCUS row has a billing period (its own or its delivery's only
    one): a row without one would be in no month's reconciliation."""
    unplaced = (
        scan_quarantined_focus(layout)
        .filter(pl.col("billing_period_start").is_null())
        .select("source_file", "source_line")
        .sort("source_file", "source_line")
        .collect()
    )
    return outcome(
        "quarantine_placed", unplaced, "every quarantined FOCUS row is reconciled in its billing period",
        lambda first: f"{unplaced.height} quarantined FOCUS row(s) have no readable BillingPeriodStart and their delivery no single "
        f"billing period, so no month can reconcile them; first {first['source_file']} line {first['source_line']}",
        count="unplaced_rows",
    )
